"""DPO through the shared engine: the loss is normalised by preference pairs (not tokens), its
metrics are averaged over the step's pairs, and gradient accumulation changes nothing."""

from __future__ import annotations

import json
import math

import torch

from honing.config import SFTConfig, TrainConfig
from honing.data.types import IGNORE_INDEX
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
    assert steps[0]["pairs"] == 4  # the step's units are its 4 pairs
    assert {"val_loss", "val_accuracy", "val_margin"} <= set(rows[-1])
    assert rows[-1]["val_pairs"] == 4
    assert not any("perplexity" in name for row in rows for name in row)  # exp(DPO loss) means nothing
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


def _answer_tokens(examples) -> int:
    """Target tokens of the pairs' answers, counted by hand from the labels (the first label is never predicted)."""
    return sum(sum(1 for label in side.labels[1:] if label != IGNORE_INDEX)
               for e in examples for side in (e.chosen, e.rejected))


def test_dpo_logs_real_target_tokens_and_pairs_and_no_perplexity(tmp_path):
    """One full-batch step over 6 pairs: target_tokens is the answers' token count, pairs is 6."""
    model = lora(tiny_llama(VOCAB))
    cfg = TrainConfig(micro_batch_size=3, grad_accum=2, max_steps=2, lr=1e-2, precision="fp32", eval_every=1,
                      save_every=None)
    run = Run.create("dpo", SFTConfig(data={"train": "x"}), tmp_path / "run")
    train, val = pairs(6, seed=3), pairs(3, seed=4)
    result = fit(model, train, val, collate, cfg, run=run, show_progress=False,
                 objective=PreferenceObjective(model, "sigmoid", beta=0.5))
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps, validations = [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]
    assert _answer_tokens(train) > 2 * len(train)  # the two counts differ, so the test tells them apart
    assert [(r["target_tokens"], r["pairs"]) for r in steps] == [(_answer_tokens(train), 6)] * 2
    assert all(r["tokens"] == sum(len(s.input_ids) for e in train for s in (e.chosen, e.rejected)) for r in steps)
    assert [(r["val_target_tokens"], r["val_pairs"]) for r in validations] == [(_answer_tokens(val), 3)] * 3
    assert not any("perplexity" in name for row in rows for name in row)
    assert result.metrics["target_tokens_seen"] == 2 * _answer_tokens(train) and result.metrics["pairs_seen"] == 12
    assert "val_perplexity" not in result.metrics and result.metrics["val_pairs"] == 3


def test_causal_lm_still_logs_perplexity_and_target_tokens(tmp_path):
    from honing.data.packing import collate_padded

    examples = [e.chosen for e in pairs(4, seed=5)]
    model = tiny_llama(VOCAB)
    cfg = TrainConfig(micro_batch_size=4, max_steps=1, precision="fp32", eval_every=1, save_every=None)
    run = Run.create("sft", SFTConfig(data={"train": "x"}), tmp_path / "run")
    fit(model, examples, examples, lambda b: collate_padded(b, 0), cfg, run=run, show_progress=False)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    targets = sum(sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in examples)
    step = next(r for r in rows if "loss" in r)
    validation = rows[-1]
    assert step["target_tokens"] == targets and "pairs" not in step and "units" not in step
    assert validation["val_target_tokens"] == targets
    assert math.isclose(validation["val_perplexity"], math.exp(validation["val_loss"]), rel_tol=1e-9)
