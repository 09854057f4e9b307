"""honing.evals.scoring: raw outputs to metric rows, pooled statistics, gate checks and disagreements,
checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from honing.config import EvalConfig, EvalTaskConfig
from honing.evals.scoring import (difference, disagreements, gate_checks, higher_is_better, interval, map_to_label,
                                  metric_rows, predicted_labels, prompt_text)
from honing.evals.tasks import Example


def _cfg(**update) -> EvalConfig:
    return EvalConfig(resamples=200, **update)


def test_map_to_label_whole_answer_then_first_named_then_other():
    labels = ["billing", "shipping", "returns"]
    assert map_to_label("  Billing. ", labels) == "billing"
    assert map_to_label("It is about shipping, not billing", labels) == "shipping"
    assert map_to_label("rebilling is not a word here", labels) == "<other>"
    assert map_to_label("no idea", labels) == "<other>"


def test_generation_rows_are_per_example_metric_means():
    task = EvalTaskConfig(name="g", data="x.jsonl", metrics=["exact_match"])
    examples = [Example(str(i), f"f:{i}", {"reference": ref}, prompt="q") for i, ref in enumerate(["a", "b", "c"])]
    raw = [{"answer": "a"}, {"answer": "x"}, {"answer": "c"}]
    rows = metric_rows(task, examples, raw)["exact_match"]
    assert rows.per_example == [1.0, 0.0, 1.0]
    assert rows.is_mean and rows.statistic(rows.rows) == pytest.approx(2 / 3)


def test_multiple_choice_rows_acc_and_acc_norm():
    task = EvalTaskConfig(name="mc", data="x.jsonl", kind="multiple_choice")
    # choice 0 has the higher total log-likelihood; per character, the long choice 1 wins
    examples = [Example("0", "f:1", {}, prompt="q", choices=["a", "bbbbbbbbbb"], gold=1)]
    raw = [{"logprobs": [-2.0, -5.0]}]
    out = metric_rows(task, examples, raw)
    assert out["acc"].per_example == [0.0]
    assert out["acc_norm"].per_example == [1.0]


def test_classification_macro_f1_pools_over_rows():
    task = EvalTaskConfig(name="c", data="x.jsonl", kind="classification")
    examples = []
    for i, label in enumerate(["a", "a", "b", "b"]):
        example = Example(str(i), f"f:{i}", {}, prompt=f"q{i}")
        example.label = label
        examples.append(example)
    raw = [{"answer": "a"}, {"answer": "b"}, {"answer": "b"}, {"answer": "b"}]
    out = metric_rows(task, examples, raw)
    assert out["accuracy"].statistic(out["accuracy"].rows) == pytest.approx(0.75)
    # a: P=1, R=1/2, F1=2/3; b: P=2/3, R=1, F1=4/5; macro = (2/3 + 4/5) / 2
    macro = out["macro_f1"]
    assert not macro.is_mean
    assert macro.statistic(macro.rows) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert predicted_labels(task, examples, raw) == ["a", "b", "b", "b"]


def test_classification_by_loglikelihood_picks_the_best_label():
    task = EvalTaskConfig(name="c", data="x.jsonl", kind="classification", classify_by="loglikelihood",
                          labels=["neg", "pos"])
    examples = [Example("0", "f:1", {}, prompt="q", label="pos"), Example("1", "f:2", {}, prompt="q", label="neg")]
    raw = [{"logprobs": [-3.0, -1.0]}, {"logprobs": [-3.0, -4.0]}]
    assert predicted_labels(task, examples, raw) == ["pos", "neg"]


def test_perplexity_pools_tokens_not_example_means():
    task = EvalTaskConfig(name="p", data="x.jsonl", kind="perplexity")
    examples = [Example("0", "f:1", {"text": "a"}), Example("1", "f:2", {"text": "b"})]
    raw = [{"loss_sum": 2.0, "tokens": 1}, {"loss_sum": 3.0, "tokens": 3}]
    out = metric_rows(task, examples, raw)
    loss = out["loss"]
    assert loss.statistic(loss.rows) == pytest.approx(5.0 / 4)  # not (2 + 1) / 2
    assert loss.per_example == [2.0, 1.0]
    assert out["perplexity"].statistic(out["perplexity"].rows) == pytest.approx(math.exp(1.25))
    assert not higher_is_better("loss") and not higher_is_better("perplexity") and higher_is_better("acc")


def test_interval_and_paired_difference():
    cfg = _cfg()
    task = EvalTaskConfig(name="g", data="x.jsonl", metrics=["exact_match"])
    examples = [Example(str(i), f"f:{i}", {"reference": "a"}, prompt=f"q{i}") for i in range(4)]
    good = metric_rows(task, examples, [{"answer": "a"}] * 4)["exact_match"]
    half = metric_rows(task, examples, [{"answer": "a"}, {"answer": "b"}] * 2)["exact_match"]
    assert interval(half, cfg).mean == pytest.approx(0.5)
    diff = difference(good, half, cfg)
    assert diff is not None and diff.mean == pytest.approx(0.5)
    assert diff.low <= 0.5 <= diff.high
    shorter = metric_rows(task, examples[:3], [{"answer": "a"}] * 3)["exact_match"]
    assert difference(good, shorter, cfg) is None


def test_gate_checks_threshold_and_regression():
    cfg = _cfg(models=[{"name": "base", "role": "base", "path": "b"}, {"name": "cand", "path": "c"}],
               tasks=[{"name": "t", "data": "x.jsonl", "metrics": ["exact_match"], "min": {"exact_match": 0.6},
                       "regression": True}])
    scores = {"base": {"t": {"exact_match": {"mean": 0.8}}}, "cand": {"t": {"exact_match": {"mean": 0.7}}}}
    differences = [{"model": "cand", "task": "t", "metric": "exact_match", "diff": -0.1, "low": -0.2, "high": 0.0}]
    checks = gate_checks(cfg, scores, differences, "base")
    by_kind = {c["kind"]: c for c in checks}
    assert set(by_kind) == {"threshold", "regression"}
    assert by_kind["threshold"]["passed"] and by_kind["threshold"]["model"] == "cand"
    assert not by_kind["regression"]["passed"]  # -0.1 is beyond the 0.02 tolerance
    within = [dict(differences[0], diff=-0.01)]
    assert all(c["passed"] for c in gate_checks(cfg, scores, within, "base"))


def test_gate_threshold_is_an_upper_bound_for_loss():
    cfg = _cfg(tasks=[{"name": "p", "data": "x.jsonl", "kind": "perplexity", "min": {"loss": 2.0}}])
    low = gate_checks(cfg, {"base": {"p": {"loss": {"mean": 1.5}}}}, [], "base")
    high = gate_checks(cfg, {"base": {"p": {"loss": {"mean": 2.5}}}}, [], "base")
    missing = gate_checks(cfg, {}, [], "base")
    assert [c["passed"] for c in low + high + missing] == [True, False, False]


def test_prompt_text_of_each_prompt_shape():
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"}, {"role": "user", "content": "last"}]
    assert prompt_text(Example("0", "f", {}, prompt=chat)) == "last"
    assert prompt_text(Example("0", "f", {}, prompt="plain")) == "plain"
    assert prompt_text(Example("0", "f", {"text": "the record"})) == "the record"


def test_disagreements_ordered_by_spread_and_skip_agreement():
    task = EvalTaskConfig(name="g", data="x.jsonl", metrics=["token_f1"])
    examples = [Example(str(i), f"f:{i}", {"reference": "red blue"}, prompt=f"q{i}") for i in range(3)]
    raws = {"m1": [{"answer": "red blue"}] * 3,
            "m2": [{"answer": "red blue"}, {"answer": "red"}, {"answer": "green"}]}
    per_model = {name: {"rows": metric_rows(task, examples, raw), "raw": raw} for name, raw in raws.items()}
    rows = disagreements(task, examples, per_model, limit=5)
    assert [r["id"] for r in rows] == ["2", "1"]  # spread 1.0, then 1/3; example 0 agrees
    assert rows[0]["outputs"] == {"m1": "red blue", "m2": "green"} and rows[0]["reference"] == "red blue"
    assert len(disagreements(task, examples, per_model, limit=1)) == 1
