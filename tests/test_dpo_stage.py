"""`honing dpo` end to end on a tiny model: pairs from a file, LoRA, the engine, a saved adapter, a run record."""

from __future__ import annotations

import json
import math

import pytest

from honing.config import DPOConfig, load_config
from honing.errors import ConfigError, DataError
from honing.stages.dpo import dpo


def _pairs(path, n=8):
    rows = []
    for i in range(n):
        rows.append({"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f"It is {2 * i}.",
                     "rejected": f"I do not know, maybe {i}?"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dpo_stage_trains_and_records(tmp_path, tiny_model_dir):
    data = _pairs(tmp_path / "prefs.jsonl")
    cfg = load_config(DPOConfig, None, [
        f"model.path={tiny_model_dir}", f"data.train={data}", "data.validation_split=0.25", "adapter.rank=4",
        "train.max_steps=4", "train.micro_batch_size=2", "train.lr=5e-3", "train.eval_every=2", "train.save_every=null",
        "train.precision=fp32", "preference.beta=0.5", f"output.dir={tmp_path / 'run'}", "output.tensorboard=false",
    ])
    result = dpo(cfg)
    assert result["status"] == "completed"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first_val = next(r for r in rows if "val_loss" in r)
    assert math.isclose(first_val["val_loss"], math.log(2), abs_tol=1e-6)  # step 0: policy == reference
    steps = [r for r in rows if "loss" in r]
    assert math.isclose(steps[0]["loss"], math.log(2), abs_tol=1e-6) and "margin" in steps[0]
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stage"] == "dpo" and any(i["role"] == "data_train" and i["sha256"] for i in record["inputs"])
    assert record["data"]["train_examples"] == 6 and record["data"]["validation_examples"] == 2


def test_dpo_bad_pair_names_file_and_line(tmp_path, tiny_model_dir):
    data = _pairs(tmp_path / "prefs.jsonl", 3)
    data.write_text(data.read_text() + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    cfg = load_config(DPOConfig, None, [f"model.path={tiny_model_dir}", f"data.train={data}",
                                        f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"prefs\.jsonl:4"):
        dpo(cfg)
    assert not (tmp_path / "run").exists()


def test_full_dpo_without_a_reference_is_refused():
    with pytest.raises(ConfigError, match="reference"):
        load_config(DPOConfig, None, ["data.train=x.jsonl", "adapter.method=full"])
