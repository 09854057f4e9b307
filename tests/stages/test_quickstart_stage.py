"""`honing quickstart` end to end on the embedded model, shortened to two steps (the full run is
`make quickstart`, measured in the README)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from honing.config import EvalConfig, EvalModelConfig, QuickstartConfig, load_config
from honing.config.evaluation import GENERAL_SUITE
from honing.stages.quickstart import _general, _general_suite, _general_summary, quickstart


@pytest.mark.slow
def test_quickstart_runs_and_records_before_after(tmp_path):
    out = tmp_path / "qs"
    cfg = load_config(QuickstartConfig, None, [
        "eval_examples=4", "max_new_tokens=40", "general_examples=3", "sft.train.max_steps=2", "sft.train.eval_every=null",
        "sft.train.save_every=null", f"sft.output.dir={out}", "sft.output.tensorboard=false",
    ])
    result = quickstart(cfg)
    assert result["steps"] == 2
    report = json.loads((out / "quickstart_eval.json").read_text())
    assert report["examples"] == 4 and len(report["samples"]) == 4
    assert set(report["before"]) >= {"format_valid", "field_accuracy", "exact_match"}
    general = report["general_capability"]
    assert list(general) == [t.name for t in GENERAL_SUITE]
    for summary in general.values():
        assert summary["examples"] == 3
        assert summary["change"]["mean"] == pytest.approx(summary["after"]["mean"] - summary["before"]["mean"])
        assert sum(c["examples"] for c in summary["categories"].values()) == 3
    record = json.loads((out / "run.json").read_text())
    assert record["metrics"]["held_out_after"] == report["after"]
    assert record["metrics"]["general_capability"] == general
    assert {"data_train", "data_held_out", "base_model", "data_general_general_mc"} <= {i["role"] for i in record["inputs"]}
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_the_general_check_gives_the_numbers_eval_gives(tiny_model_dir, tiny_model, tokenizer, tmp_path, monkeypatch):
    """The quickstart scores the suite in memory with the eval's own code: the same weights get the same numbers."""
    from honing.stages.eval import evaluate

    cfg = load_config(QuickstartConfig, None, ["general_examples=6", "batch_size=4"])
    suite = _general_suite(cfg)
    assert [(t.name, len(examples)) for t, examples in suite] == [(t.name, 6) for t in GENERAL_SUITE]
    scores = _general(tiny_model, tokenizer, cfg, suite, "tiny")

    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    result = evaluate(EvalConfig(models=[EvalModelConfig(name="tiny", role="base", path=str(tiny_model_dir))],
                                 tasks=[t for t, _ in suite], batch_size=4, resamples=100,
                                 output={"dir": str(tmp_path / "eval")}))
    for task, _ in suite:
        metric = "acc" if task.kind == "multiple_choice" else "regex_match"
        assert sum(scores[task.name]) / 6 == pytest.approx(result["scores"]["tiny"][task.name][metric]["mean"])

    summary = _general_summary(suite, scores, {name: [1.0] * len(v) for name, v in scores.items()})
    for task, examples in suite:
        entry = summary[task.name]
        assert entry["after"]["mean"] == 1.0 and entry["change"]["mean"] == pytest.approx(1.0 - entry["before"]["mean"])
        assert {name: c["examples"] for name, c in entry["categories"].items()} == Counter(
            e.record["category"] for e in examples)
    assert all(not general["regressed"] for general in summary.values())
