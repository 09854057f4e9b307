"""DPO through the shared engine: the loss is normalised by preference pairs (not tokens), its
metrics are averaged over the step's pairs, and gradient accumulation changes nothing."""

from __future__ import annotations

import json
import math

import torch

from honing.config import SFTConfig, TrainConfig
from honing.runs import Run
from honing.train.distributed import Dist
from honing.train.engine import fit, train_step
from honing.train.objectives.preference import PreferenceObjective, collate_preference
from tests.train.helpers import tiny_llama
from tests.train.test_preference import VOCAB, lora, pairs


def collate(examples):
    return collate_preference(examples, pad_id=0)


def test_dpo_trains_through_fit_from_ln2(tmp_path):
    model = lora(tiny_llama(VOCAB))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    cfg = TrainConfig(micro_batch_size=2, grad_accum=2, max_steps=6, lr=5e-2, precision="fp32", schedule="constant",
                      eval_every=None, save_every=None)
    run = Run.create("dpo", SFTConfig(data={"train": "x"}), tmp_path / "run")
    objective = PreferenceObjective(model, "sigmoid", beta=0.5)
    data = pairs(8, seed=1)
    result = fit(model, data, data[:4], collate, cfg, run=run, show_progress=False, objective=objective)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert math.isclose(steps[0]["loss"], math.log(2), abs_tol=1e-6)  # policy == reference before the first update
    assert steps[0]["margin"] == 0.0 and steps[0]["accuracy"] == 0.0
    assert steps[-1]["loss"] < steps[0]["loss"] and steps[-1]["margin"] > 0
    assert steps[0]["target_tokens"] == 4  # the step's units are its 4 pairs
    assert {"val_loss", "val_accuracy", "val_margin"} <= set(rows[-1])
    assert result.state.step == 6
    for name, value in frozen.items():
        torch.testing.assert_close(dict(model.named_parameters())[name], value, rtol=0, atol=0)


def test_dpo_accumulation_is_exact():
    """Four pairs in one micro-batch, or two micro-batches of two: the same update."""
    data = pairs(4, seed=2)
    updated = []
    for micro, accum in [(4, 1), (2, 2)]:
        model = lora(tiny_llama(VOCAB))
        objective = PreferenceObjective(model, "sigmoid", beta=1.0)
        for p in model.parameters():  # move off the step-0 point, where every gradient is symmetric
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(0))
        cfg = TrainConfig(micro_batch_size=micro, grad_accum=accum, max_grad_norm=None, precision="fp32")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1.0)
        batches = [collate(data[i:i + micro]) for i in range(0, 4, micro)]
        result = train_step(objective, batches, optimizer, cfg, Dist())
        updated.append(([p.detach().clone() for p in params], result))
    (first, r1), (second, r2) = updated
    assert math.isclose(r1["loss"], r2["loss"], rel_tol=1e-6)
    assert math.isclose(r1["metrics"]["margin"], r2["metrics"]["margin"], rel_tol=1e-5, abs_tol=1e-7)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
