"""`honing quickstart` end to end on the embedded model, shortened to two steps (the full run is
`make quickstart`, measured in the README)."""

from __future__ import annotations

import json

import pytest

from honing.config import QuickstartConfig, load_config
from honing.stages.quickstart import quickstart


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
    assert general["examples"] == 3
    assert general["change"]["mean"] == pytest.approx(general["after"]["mean"] - general["before"]["mean"])
    record = json.loads((out / "run.json").read_text())
    assert record["metrics"]["held_out_after"] == report["after"]
    assert {"data_train", "data_held_out", "base_model"} <= {i["role"] for i in record["inputs"]}
    assert (out / "adapter" / "adapter_config.json").is_file()
