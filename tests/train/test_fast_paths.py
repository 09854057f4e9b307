"""Fast paths against their fallbacks: a compiled model and a prefetching loader train exactly
like the eager model with batches built in line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from honing.config import SFTConfig, TrainConfig
from honing.data.packing import collate_padded
from honing.errors import HoningError
from honing.runs import Run
from honing.train import compilation
from honing.train.engine import fit
from honing.train.loader import StepBatches, prefetch_enabled
from tests.train.helpers import random_examples, tiny_llama

VOCAB = 97


def collate(items):
    return collate_padded(items, pad_id=0)


def train(tmp_path: Path, name: str, **overrides) -> tuple[list[float], dict[str, torch.Tensor]]:
    model = tiny_llama(VOCAB)
    cfg = TrainConfig(micro_batch_size=2, grad_accum=2, max_steps=4, lr=1e-2, precision="fp32",
                      eval_every=None, save_every=None, **overrides)
    run = Run.create("sft", SFTConfig(data={"train": "x"}), tmp_path / name)
    result = fit(model, random_examples(16, VOCAB, seed=5), [], collate, cfg, run=run, show_progress=False)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert result.state.step == 4
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_prefetch_trains_identically(tmp_path):
    inline_losses, inline_weights = train(tmp_path, "inline", prefetch="off")
    ahead_losses, ahead_weights = train(tmp_path, "ahead", prefetch="on")
    assert ahead_losses == inline_losses  # the same batches in the same order: bit for bit
    for name, value in inline_weights.items():
        torch.testing.assert_close(ahead_weights[name], value, rtol=0, atol=0)


def test_step_batches_builds_the_next_step_in_the_background():
    built: list[tuple[int, str]] = []

    def indices_of(step):
        built.append((step, threading.current_thread().name))
        return [[step]]

    with StepBatches(list(range(5)), lambda items: {"x": torch.tensor(items)}, indices_of, 3, prefetch=True) as batches:
        assert [int(batches.get(s)[0]["x"][0]) for s in range(3)] == [0, 1, 2]
    steps = [s for s, _ in built]
    assert steps == [0, 1, 2]  # each step built once; none past the last
    assert all(name.startswith("honing-prefetch") for s, name in built if s > 0)


def test_prefetch_auto_only_with_cuda():
    assert prefetch_enabled("auto", torch.device("cuda", 0))
    assert not prefetch_enabled("auto", torch.device("cpu"))
    assert prefetch_enabled("on", torch.device("cpu")) and not prefetch_enabled("off", torch.device("cuda", 0))


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path):
    ok, why = compilation.compile_available(torch.device("cpu"))
    if not ok:
        pytest.skip(why)
    torch._dynamo.reset()
    eager_losses, eager_weights = train(tmp_path, "eager")
    compiled_losses, compiled_weights = train(tmp_path, "compiled", compile=True)
    torch._dynamo.reset()
    # Inductor fuses and reorders float operations, so agreement is to rounding, not bit for bit.
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-5)
    for name, value in eager_weights.items():
        assert name in compiled_weights  # compiling in place keeps the parameter names
        torch.testing.assert_close(compiled_weights[name], value, rtol=1e-3, atol=1e-4)


def test_compile_without_a_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    with pytest.raises(HoningError, match="C\\+\\+ compiler"):
        compilation.compile_blocks([torch.nn.Linear(2, 2)], torch.device("cpu"))
