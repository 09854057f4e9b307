"""`honing dpo` end to end on a tiny model: pairs from a file, LoRA, the engine, a saved adapter, a run record."""

from __future__ import annotations

import json
import math

import pytest
import torch

from honing.config import DPOConfig, load_config
from honing.errors import ConfigError, DataError, HoningError
from honing.stages.dpo import REFERENCE_FILE, ReferenceCache, dpo, reference_mode, setup_parts
from honing.train.distributed import Dist


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
    assert not any("perplexity" in name for row in rows for name in row)
    assert "val_perplexity" not in record["metrics"] and "val_perplexity" not in result
    assert record["metrics"]["val_pairs"] == 2 and record["metrics"]["pairs_seen"] == 4 * 2


def _answer_tokens(examples) -> int:
    return sum(sum(1 for label in side.labels[1:] if label != -100) for e in examples for side in (e.chosen, e.rejected))


def test_dpo_stage_counts_target_tokens_and_pairs(tmp_path, tiny_model_dir):
    """Full-batch steps over the 6 train pairs: *_tokens are the answers' real token counts, *_pairs the pairs."""
    overrides = _overrides(tmp_path, tiny_model_dir, "run", "adapter.rank=4", "train.max_steps=2",
                           "train.micro_batch_size=3", "train.grad_accum=2", "train.eval_every=1")
    cfg = load_config(DPOConfig, None, overrides)
    data = setup_parts(cfg, Dist()).data  # the same split the run makes (data.split_seed)
    train_tokens, val_tokens = _answer_tokens(data.train), _answer_tokens(data.validation)
    assert train_tokens > 2 * len(data.train)  # tokens and pairs differ, so the test can tell them apart
    result = dpo(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["target_tokens"], r["pairs"]) for r in rows if "loss" in r] == [(train_tokens, 6)] * 2
    assert [(r["val_target_tokens"], r["val_pairs"]) for r in rows if "val_loss" in r] == [(val_tokens, 2)] * 3
    metrics = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    assert metrics["target_tokens_seen"] == 2 * train_tokens and metrics["pairs_seen"] == 12
    assert metrics["val_target_tokens"] == val_tokens and metrics["val_pairs"] == 2
    assert not any("perplexity" in name for name in metrics) and not any("perplexity" in name for name in result)
    assert data.stats["target_tokens"] == train_tokens  # the data report counts the same tokens


def test_ipo_normalize_defaults_to_mean_and_reaches_the_objective(tmp_path, tiny_model_dir):
    assert DPOConfig(data={"train": "x.jsonl"}).preference.ipo_normalize == "mean"
    with pytest.raises(ConfigError, match="ipo_normalize"):
        load_config(DPOConfig, None, ["data.train=x.jsonl", "preference.ipo_normalize=token"])
    cfg = load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "run", "preference.loss=ipo",
                                                  "preference.ipo_normalize=sum"))
    objective = setup_parts(cfg, Dist()).objective
    assert (objective.loss, objective.ipo_normalize) == ("ipo", "sum")


def test_dpo_bad_pair_names_file_and_line(tmp_path, tiny_model_dir):
    data = _pairs(tmp_path / "prefs.jsonl", 3)
    data.write_text(data.read_text() + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    cfg = load_config(DPOConfig, None, [f"model.path={tiny_model_dir}", f"data.train={data}",
                                        f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"prefs\.jsonl:4"):
        dpo(cfg)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the reference with full fine-tuning


def _overrides(tmp_path, tiny_model_dir, name, *extra):
    data = tmp_path / "prefs.jsonl"
    if not data.exists():
        _pairs(data)
    return [f"model.path={tiny_model_dir}", f"data.train={data}", "data.validation_split=0.25", "train.micro_batch_size=2",
            "train.lr=5e-4", "train.eval_every=2", "train.save_every=2", "train.schedule=constant", "train.precision=fp32",
            "preference.beta=0.5", f"output.dir={tmp_path / name}", "output.tensorboard=false", *extra]


def _losses(run_dir, key="loss"):
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if key in r]


def test_reference_mode_defaults():
    def mode(*overrides):
        return reference_mode(load_config(DPOConfig, None, ["data.train=x.jsonl", *overrides]))

    assert mode("adapter.method=full") == "precomputed"
    assert mode("adapter.method=full", "preference.precompute_reference=false") == "frozen_copy"
    assert mode() == "disabled_adapter"
    assert mode("preference.precompute_reference=true") == "precomputed"
    assert mode("adapter.method=full", "preference.loss=simpo") == "none"
    with pytest.raises(ConfigError, match="precompute_reference"):
        load_config(DPOConfig, None, ["data.train=x.jsonl", "preference.loss=orpo", "preference.precompute_reference=true"])


def test_full_dpo_precomputes_the_reference_and_trains_every_weight(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from honing.runs import file_sha256

    result = dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "run", "adapter.method=full",
                                                         "train.max_steps=3")))
    run_dir = tmp_path / "run"
    assert result["status"] == "completed"
    assert math.isclose(_losses(run_dir)[0], math.log(2), abs_tol=1e-5)  # step 0: policy == reference
    assert math.isclose(_losses(run_dir, "val_loss")[0], math.log(2), abs_tol=1e-5)
    assert _losses(run_dir)[-1] < math.log(2)
    record = json.loads((run_dir / "run.json").read_text())
    reference = record["reference"]
    assert reference["mode"] == "precomputed" and (reference["train_pairs"], reference["validation_pairs"]) == (6, 2)
    assert reference["sha256"] == file_sha256(run_dir / REFERENCE_FILE)
    # The cached reference is the starting model's, not the trained one's: recomputing it from the start agrees.
    cached = load_file(str(run_dir / REFERENCE_FILE))
    cfg = load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "unused", "adapter.method=full"))
    fresh = setup_parts(cfg, Dist())
    assert isinstance(fresh.on_run.args[1], ReferenceCache)
    torch.testing.assert_close(fresh.on_run.args[1].train, cached["train"], rtol=0, atol=0)
    # Smoke: every weight of the saved model moved.
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert all(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


def test_full_dpo_with_a_frozen_copy_keeps_it_frozen_and_matches_precomputed(tmp_path, tiny_model_dir):
    from honing.stages.common import train_and_save

    cfg = load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "copy", "adapter.method=full",
                                                  "preference.precompute_reference=false", "train.max_steps=3"))
    parts = setup_parts(cfg, Dist())
    reference = parts.objective.reference_model
    assert reference is not parts.model and not reference.training
    assert all(not p.requires_grad for p in reference.parameters())
    assert {p.dtype for p in reference.parameters()} == {p.dtype for p in parts.model.parameters()}
    assert len(list(parts.objective.parameters())) == len(list(parts.model.parameters()))  # not a submodule
    snapshot = {n: p.detach().clone() for n, p in reference.named_parameters()}
    train_and_save("dpo", cfg, parts, cfg.train, cfg.output, Dist(), resume=None, model_path=cfg.model.path, split_seed=0)
    for name, param in reference.named_parameters():
        assert torch.equal(param, snapshot[name]), name
    assert any(not torch.equal(p, snapshot[n]) for n, p in parts.model.named_parameters())
    # The checkpoint holds the policy's weights, nothing of the reference.
    assert load_file_keys(tmp_path / "copy" / "checkpoints") == {n for n, _ in parts.model.named_parameters()}
    assert json.loads((tmp_path / "copy" / "run.json").read_text())["reference"] == {"mode": "frozen_copy"}

    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "pre", "adapter.method=full", "train.max_steps=3")))
    assert _losses(tmp_path / "copy") == pytest.approx(_losses(tmp_path / "pre"), rel=1e-5, abs=1e-6)
    assert _losses(tmp_path / "copy", "val_loss") == pytest.approx(_losses(tmp_path / "pre", "val_loss"), rel=1e-5, abs=1e-6)


def load_file_keys(checkpoints):
    from safetensors import safe_open

    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    with safe_open(str(latest / "weights.safetensors"), framework="pt") as handle:
        return set(handle.keys())


def test_precomputed_reference_equals_the_disabled_adapter_with_lora(tmp_path, tiny_model_dir):
    common = ["adapter.rank=4", "adapter.dropout=0.0", "train.lr=5e-3", "train.max_steps=4"]
    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "live", *common)))
    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "cached", *common,
                                                "preference.precompute_reference=true")))
    live, cached = _losses(tmp_path / "live"), _losses(tmp_path / "cached")
    assert len(live) == 4 and live[-1] < live[0]
    assert cached == pytest.approx(live, rel=1e-5, abs=1e-6)
    assert _losses(tmp_path / "cached", "val_margin") == pytest.approx(_losses(tmp_path / "live", "val_margin"), rel=1e-4, abs=1e-6)
    assert (tmp_path / "cached" / REFERENCE_FILE).is_file() and not (tmp_path / "live" / REFERENCE_FILE).exists()


def test_resumed_full_dpo_reloads_the_reference_and_continues_exactly(tmp_path, tiny_model_dir, monkeypatch):
    import honing.stages.dpo as stage

    common = ["adapter.method=full", "train.max_steps=4"]
    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "whole", *common)))
    cut = tmp_path / "cut"
    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "cut", "adapter.method=full", "train.max_steps=2")))
    # Pretend the run was killed after its step-2 checkpoint: the saved config asks for 4 steps.
    (cut / "config.yaml").write_text((cut / "config.yaml").read_text().replace("max_steps: 2", "max_steps: 4"))
    cached = (cut / REFERENCE_FILE).read_bytes()

    def must_not_recompute(*args, **kwargs):
        raise AssertionError("a resumed run must reload its reference, not recompute it")

    monkeypatch.setattr(stage, "compute_reference", must_not_recompute)
    dpo(load_config(DPOConfig, cut / "config.yaml"), resume=cut)
    assert _losses(cut) == pytest.approx(_losses(tmp_path / "whole"), rel=1e-6)
    assert len(_losses(cut)) == 4
    assert (cut / REFERENCE_FILE).read_bytes() == cached
    from transformers import AutoModelForCausalLM

    whole = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "model")
    resumed = AutoModelForCausalLM.from_pretrained(cut / "model")
    for a, b in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_refuses_a_reference_cache_that_changed(tmp_path, tiny_model_dir):
    cut = tmp_path / "cut"
    dpo(load_config(DPOConfig, None, _overrides(tmp_path, tiny_model_dir, "cut", "adapter.method=full", "train.max_steps=2")))
    record = json.loads((cut / "run.json").read_text())
    record["reference"]["sha256"] = "0" * 64
    (cut / "run.json").write_text(json.dumps(record))
    with pytest.raises(HoningError, match="changed since the run wrote it"):
        dpo(load_config(DPOConfig, cut / "config.yaml", ["train.max_steps=4"]), resume=cut)
