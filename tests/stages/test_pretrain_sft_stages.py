"""The training stages end to end on tiny models: smoke tests per data format, what the run
directory holds, resume through the CLI, and bad input that must leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from honing.config import PretrainConfig, SFTConfig, load_config
from honing.errors import HoningError
from honing.stages.pretrain import pretrain
from honing.stages.sft import sft

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))


def sft_config(model_dir: Path, out: Path, *extra: str) -> SFTConfig:
    return load_config(SFTConfig, None, [
        f"model.path={model_dir}", f"data.train={DATA / 'chat.jsonl'}", f"output.dir={out}",
        "data.max_length=128", "train.max_steps=3", "train.micro_batch_size=4", "train.eval_every=2",
        "train.save_every=2", "train.lr=1e-2", "output.tensorboard=false", *extra,
    ])


@pytest.mark.parametrize("data_file", ["chat.jsonl", "alpaca.jsonl", "sharegpt.json", "alpaca.csv"])
def test_lora_sft_trains_adapter_only(tiny_model_dir, tmp_path, data_file):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    summary = sft(sft_config(tiny_model_dir, out, f"data.train={DATA / data_file}", "adapter.rank=4"))
    assert summary["status"] == "completed" and summary["steps"] == 3
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)
    assert any(float(t.abs().sum()) > 0 for name, t in adapter.items() if "lora_B" in name)  # B starts at zero
    record = json.loads((out / "run.json").read_text())
    roles = {i["role"] for i in record["inputs"]}
    assert {"base_model", "data_train"} <= roles and all(i["sha256"] for i in record["inputs"] if i["role"] != "base_model")
    assert record["status"] == "completed" and record["metrics"]["steps"] == 3
    assert record["data"]["target_tokens"] > 0 and "libraries" in record and "git_commit" in record["code"]
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()


def test_full_sft_changes_all_weights_and_saves_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    sft(sft_config(tiny_model_dir, out, "adapter.method=full", "data.packing=true"))
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out / "model")
    changed = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters())]
    assert all(changed)


def test_resume_through_the_cli(tiny_model_dir, tmp_path):
    """A run interrupted after its step-2 checkpoint and resumed with --resume ends like an uninterrupted one."""
    common = [f"model.path={tiny_model_dir}", f"data.train={DATA / 'alpaca.jsonl'}", "data.max_length=64",
              "train.max_steps=4", "train.micro_batch_size=4", "train.save_every=2", "train.eval_every=2",
              "output.tensorboard=false", "adapter.dropout=0.1", "train.schedule=constant"]
    full = sft(load_config(SFTConfig, None, [*common, f"output.dir={tmp_path / 'full'}"]))
    cut_dir = tmp_path / "cut"
    sft(load_config(SFTConfig, None, [*common, f"output.dir={cut_dir}", "train.max_steps=2"]))
    # Pretend the run was killed after its step-2 checkpoint: the saved config asks for 4 steps.
    saved = (cut_dir / "config.yaml").read_text().replace("max_steps: 2", "max_steps: 4")
    (cut_dir / "config.yaml").write_text(saved)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "sft", "--resume", str(cut_dir)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = lambda d: [json.loads(l).get("loss") for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [x for x in losses(cut_dir) if x] == pytest.approx([x for x in losses(tmp_path / "full") if x], rel=1e-6)
    assert full["steps"] == 4


def test_pretrain_from_config_with_bpe(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, [
        f"data.train={DATA / 'corpus.txt'}", "model.from_config.num_layers=2", "model.from_config.hidden_size=32",
        "model.from_config.vocab_size=512", "data.max_length=64", "train.max_steps=6", "train.micro_batch_size=4",
        "train.eval_every=3", f"output.dir={out}", "output.tensorboard=false",
    ])
    summary = pretrain(cfg)
    assert summary["status"] == "completed"
    assert summary["val_loss"] < summary["first_val_loss"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.vocab_size == len(tokenizer) <= 512


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HONING_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "honing.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_data", "does not exist"),
        ("unknown_format", "format"),
        ("empty_data", "empty"),
        ("prompt_too_long", "max_length"),
        ("no_weights", "no weights"),
    ],
)
def test_bad_input_one_line_nonzero_no_run_dir(tiny_model_dir, tmp_path, case, expected):
    model = str(tiny_model_dir)
    data = tmp_path / "data.jsonl"
    if case == "missing_data":
        data = tmp_path / "nope.jsonl"
    elif case == "unknown_format":
        data.write_text(json.dumps({"question": "hi", "answer": "there"}) + "\n")
    elif case == "empty_data":
        data.write_text("\n")
    elif case == "prompt_too_long":
        long = " ".join(["word"] * 400)
        data.write_text(json.dumps({"messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "ok"}]}) + "\n")
    else:
        data.write_text((DATA / "chat.jsonl").read_text())
        empty = tmp_path / "empty-model"
        empty.mkdir()
        (empty / "config.json").write_text((tiny_model_dir / "config.json").read_text())
        model = str(empty)
    out = tmp_path / "run"
    proc = _cli(tmp_path, "sft", f"model.path={model}", f"data.train={data}", "data.max_length=64", f"output.dir={out}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_skip_bad_records_writes_rejects(tiny_model_dir, tmp_path):
    data = tmp_path / "mixed.jsonl"
    good = (DATA / "chat.jsonl").read_text().splitlines()[:12]
    data.write_text("\n".join([good[0], "{broken", *good[1:6], '{"messages": []}', *good[6:]]) + "\n")
    out = tmp_path / "run"
    sft(sft_config(tiny_model_dir, out, f"data.train={data}", "data.on_bad_record=skip"))
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 8]
    assert json.loads((out / "run.json").read_text())["data"]["rejected"] == 2
    with pytest.raises(HoningError, match="mixed.jsonl:2"):
        sft(sft_config(tiny_model_dir, tmp_path / "run2", f"data.train={data}"))
    assert not (tmp_path / "run2").exists()


def test_tensorboard_gets_the_metrics_live(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    sft(sft_config(tiny_model_dir, out, "output.tensorboard=true"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("val_loss")] == [0, 2, 3]
