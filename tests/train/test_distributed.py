"""`honing pretrain` under torchrun with two processes (DDP, gloo on CPU) gives the losses of one
process with the same global batch: the loss is normalised by target tokens across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


STAGE_ARGS = {
    "pretrain": lambda model_dir, tokenizer_dir: [
        f"model.tokenizer={tokenizer_dir}", "model.from_config.num_layers=2", "model.from_config.hidden_size=32",
        "model.from_config.num_heads=4", "model.from_config.num_kv_heads=2",
        f"data.train={ROOT / 'examples/data/corpus.txt'}",
    ],
    "sft": lambda model_dir, tokenizer_dir: [
        f"model.path={model_dir}", "adapter.rank=4", "adapter.dropout=0.0", "data.packing=true",
        f"data.train={ROOT / 'examples/data/chat.jsonl'}",
    ],
}


def _run(tmp_path: Path, stage: str, name: str, model_dir: Path, tokenizer_dir: Path, nproc: int, grad_accum: int,
         *extra: str, resume: bool = False) -> dict[int, dict]:
    out = tmp_path / name
    args = [
        stage, *STAGE_ARGS[stage](model_dir, tokenizer_dir), "data.max_length=64", "data.validation_split=0.1",
        "train.max_steps=4", "train.micro_batch_size=2", f"train.grad_accum={grad_accum}", "train.eval_every=2",
        "train.save_every=null", "train.warmup_steps=0", "train.precision=fp32", f"output.dir={out}", "output.tensorboard=false",
        *extra,
    ]
    if resume:
        args = [stage, "--resume", str(out), f"train.grad_accum={grad_accum}", *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HONING_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([*launcher, "-m", "honing.cli", *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    merged: dict[int, dict] = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row)
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_two_processes_match_one(tmp_path, tiny_model_dir, tokenizer_dir, stage):
    one = _run(tmp_path, stage, "one", tiny_model_dir, tokenizer_dir, nproc=1, grad_accum=2)
    two = _run(tmp_path, stage, "two", tiny_model_dir, tokenizer_dir, nproc=2, grad_accum=1)
    assert sorted(one) == sorted(two) == [0, 1, 2, 3, 4]
    for step in range(1, 5):
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-5), step
        assert two[step]["target_tokens"] == one[step]["target_tokens"]
    for step in (0, 2, 4):
        assert two[step]["val_loss"] == pytest.approx(one[step]["val_loss"], rel=1e-5)
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["plan"]["world_size"] == 2 and record["status"] == "completed"


def _assert_same_losses(a: dict[int, dict], b: dict[int, dict], rel: float) -> None:
    assert sorted(a) == sorted(b)
    for step, row in a.items():
        for key in ("loss", "val_loss"):
            if key in row:
                assert b[step][key] == pytest.approx(row[key], rel=rel), (step, key)


@pytest.mark.slow
def test_fsdp_matches_ddp_and_resumes_on_another_world_size(tmp_path, tiny_model_dir, tokenizer_dir):
    """FSDP2 over 2 processes gives the losses of one process; its sharded checkpoint, written by 2
    processes, resumes on 1 process and continues as the uninterrupted run would."""
    constant = ("train.schedule=constant",)
    one = _run(tmp_path, "pretrain", "one", tiny_model_dir, tokenizer_dir, 1, 2, *constant)
    fsdp = _run(tmp_path, "pretrain", "fsdp", tiny_model_dir, tokenizer_dir, 2, 1, *constant, "train.distributed=fsdp")
    _assert_same_losses(one, fsdp, rel=1e-4)
    from transformers import AutoModelForCausalLM

    gathered = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model").state_dict()
    for name, value in AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "model").state_dict().items():
        assert torch.allclose(value, gathered[name], atol=1e-5), name  # the saved model is the whole, gathered one

    cut = ("train.distributed=fsdp", "train.schedule=constant", "train.save_every=2")
    _run(tmp_path, "pretrain", "cut", tiny_model_dir, tokenizer_dir, 2, 1, *cut, "train.max_steps=2")
    assert (tmp_path / "cut" / "checkpoints" / "step-00000002" / ".metadata").is_file()
    resumed = _run(tmp_path, "pretrain", "cut", tiny_model_dir, tokenizer_dir, 1, 2, "train.max_steps=4", resume=True)
    _assert_same_losses(one, resumed, rel=1e-4)
