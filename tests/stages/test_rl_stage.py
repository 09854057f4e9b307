"""`honing rl` end to end on a tiny random model: GRPO and PPO run, train what they should,
leave the rest alone, record their lineage, and resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from honing.config import RLConfig, load_config
from honing.errors import ConfigError, DataError
from honing.rl.rewards import RewardSuite, last_number
from honing.rl.tasks import arithmetic
from honing.rl.advantages import add_advantages
from honing.rl.prompts import prompts_for_step
from honing.stages.rl import rl


def _config(tiny_model_dir: Path, out: Path, **overrides) -> RLConfig:
    data = {
        "model": {"path": str(tiny_model_dir)},
        "adapter": {"method": "lora", "rank": 4, "alpha": 8, "dropout": 0.0},
        "data": {"prompts": "builtin:arithmetic", "builtin_examples": 40, "validation_split": 0.1},
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 6, "batch_size": 8},
        # A random model never answers right; the character count gives its completions different rewards.
        "rewards": [{"kind": "numeric"}, {"kind": "function", "function": "tests.stages.test_rl_stage:_characters",
                                          "name": "characters", "weight": 0.5}],
        "rl": {"algo": "grpo", "steps": 3, "eval_every": 2, "eval_prompts": 4, "sample_every": 1},
        "train": {"lr": 5e-3, "micro_batch_size": 4, "save_every": 1},
        "output": {"dir": str(out), "tensorboard": False},
    }
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    return RLConfig.model_validate(data)


def _adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_rl_runs_and_records(tiny_model_dir, tmp_path, algo):
    overrides = {"rl.algo": algo}
    if algo == "ppo":
        overrides.update({"rollout.group_size": 1, "rollout.prompts_per_step": 4, "rl.minibatches": 2, "rl.epochs": 2,
                          "rl.normalize_rewards": True})
    cfg = _config(tiny_model_dir, tmp_path / "run", **overrides)
    result = rl(cfg)
    run_dir = Path(result["run_dir"])
    assert result["status"] == "completed" and result["steps"] == 3
    assert result["optimizer_steps"] == 3 * cfg.rl.epochs * cfg.rl.minibatches
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stage"] == "rl" and record["status"] == "completed"
    assert {i["role"] for i in record["inputs"]} >= {"base_model", "data_prompts"}
    assert [r["kind"] for r in record["rewards"]] == ["numeric", "function"]
    # The defaults the config leaves open (null) are recorded resolved, as the algorithm's papers set them.
    defaults = {"grpo": {"kl_placement": "loss", "kl_estimator": "k3", "length_norm": "sequence", "whiten_advantages": False},
                "ppo": {"kl_placement": "reward", "kl_estimator": "k1", "length_norm": "token", "whiten_advantages": True}}
    assert record["objective"] == {"algo": algo, "kl_beta": 0.04, **defaults[algo],
                                   "reference": "the adapter switched off", "dropout": "off"}
    lora = sum(v.numel() for v in _adapter_weights(run_dir).values())
    plan = record["plan"]
    assert plan["trainable_parameters"] == lora + (65 if algo == "ppo" else 0)  # PPO's value head: 64 + 1
    assert plan["completions_per_step"] == (8 if algo == "grpo" else 4)
    assert plan["optimizer_steps"] == result["optimizer_steps"] and plan["precision"] in ("fp32", "bf16 autocast")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "reward_mean" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for key in ("reward_std", "reward_numeric", "reward_characters", "kl", "clip_fraction", "entropy",
                "length_mean", "loss"):
        assert key in steps[0], key
    if algo == "ppo":
        assert "value_loss" in steps[0] and (run_dir / "value_head.safetensors").exists()
    evals = [m for m in lines if "val_reward" in m]
    assert [m["step"] for m in evals] == [0, 2, 3]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and {"prompt", "completion", "reward", "reward_numeric"} <= set(samples[0])
    adapter = _adapter_weights(run_dir)
    assert any("lora_B" in name and value.abs().sum() > 0 for name, value in adapter.items())  # B starts at 0
    if algo == "grpo":  # a second round starts from this run: its record names this run as the parent
        child = rl(_config(run_dir, tmp_path / "child", **{"rl.steps": 1, "rl.eval_every": None}))
        parent = json.loads((Path(child["run_dir"]) / "run.json").read_text())["parent"]
        assert parent["run_id"] == record["run_id"]


def test_full_fine_tuning_keeps_the_reference_frozen(tiny_model_dir, tmp_path):
    from honing.stages import rl as stage
    from honing.train.distributed import Dist

    cfg = _config(tiny_model_dir, tmp_path / "run", **{"adapter.method": "full", "rl.steps": 2, "rl.kl_beta": 0.1})
    parts = stage.setup(cfg, Dist())
    before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
    reference = {n: p.detach().clone() for n, p in parts.reference_model.named_parameters()}
    stage.train(cfg, parts, Dist(), None)
    changed = [n for n, p in parts.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the policy did not change"
    for name, p in parts.reference_model.named_parameters():
        assert torch.equal(p, reference[name]) and not p.requires_grad


def test_explicit_settings_are_recorded_as_given(tiny_model_dir, tmp_path):
    from honing.stages import rl as stage
    from honing.train.distributed import Dist

    cfg = _config(tiny_model_dir, tmp_path / "run", **{"adapter.method": "full", "rl.kl_beta": 0.1,
                                                       "rl.kl_placement": "reward", "rl.kl_estimator": "k2",
                                                       "rl.length_norm": "constant", "rl.whiten_advantages": True,
                                                       "train.precision": "fp32"})
    parts = stage.setup(cfg, Dist())
    resolved = stage.settings(cfg, parts, Dist())
    assert resolved["objective"] == {"algo": "grpo", "kl_beta": 0.1, "kl_placement": "reward", "kl_estimator": "k2",
                                     "length_norm": "constant", "whiten_advantages": True,
                                     "reference": "frozen copy", "dropout": "off"}
    total = sum(p.numel() for p in parts.model.parameters())
    assert resolved["plan"]["parameters"] == resolved["plan"]["trainable_parameters"] == total
    assert resolved["plan"]["precision"] == "fp32"
    without_kl = _config(tiny_model_dir, tmp_path / "run2", **{"rl.kl_beta": 0.0})
    assert stage.settings(without_kl, parts, Dist())["objective"]["reference"] == "none"


def test_lora_trains_only_the_adapter(tiny_model_dir, tmp_path):
    from honing.stages import rl as stage
    from honing.train.distributed import Dist

    cfg = _config(tiny_model_dir, tmp_path / "run", **{"rl.steps": 2})
    parts = stage.setup(cfg, Dist())
    before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
    stage.train(cfg, parts, Dist(), None)
    for name, p in parts.model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(p, before[name]), f"frozen {name} changed"
    assert any(not torch.equal(p, before[n]) for n, p in parts.model.named_parameters() if "lora_B" in n)


def test_resume_continues_exactly(tiny_model_dir, tmp_path):
    """Killed after step 3 (last checkpoint at 2), resumed: the same rewards and weights as a run that never stopped."""
    from honing.stages import rl as stage
    from honing.train.distributed import Dist

    settings = {"rl.steps": 4, "train.save_every": 2, "train.schedule": "cosine"}
    whole = rl(_config(tiny_model_dir, tmp_path / "whole", **settings))
    cfg = _config(tiny_model_dir, tmp_path / "cut", **settings)

    def kill(state):
        if state.step == 3:
            raise KeyboardInterrupt  # a kill between checkpoints

    with pytest.raises(KeyboardInterrupt):
        stage.train(cfg, stage.setup(cfg, Dist()), Dist(), None, after_step=kill)
    resumed = rl(load_config(RLConfig, tmp_path / "cut" / "config.yaml"), resume=tmp_path / "cut")
    assert resumed["steps"] == 4 and resumed["status"] == "completed"
    a, b = _adapter_weights(Path(whole["run_dir"])), _adapter_weights(Path(resumed["run_dir"]))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name

    def rewards(directory):
        lines = (Path(directory) / "metrics.jsonl").read_text().splitlines()
        return [(m["step"], m["reward_mean"]) for m in map(json.loads, lines) if "reward_mean" in m]

    assert rewards(whole["run_dir"]) == rewards(resumed["run_dir"])


def test_bad_prompt_record_names_file_and_line(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n{"question": "no prompt here"}\n')
    cfg = _config(tiny_model_dir, tmp_path / "run", **{"data.prompts": str(prompts)})
    with pytest.raises(DataError, match=r"prompts.jsonl:2"):
        rl(cfg)
    assert not (tmp_path / "run").exists()  # nothing half-written
    skip = _config(tiny_model_dir, tmp_path / "run2", **{"data.prompts": str(prompts), "data.on_bad_record": "skip",
                                                          "data.validation_split": 0.0, "rl.steps": 1,
                                                          "rl.eval_every": None})
    result = rl(skip)
    rejects = (Path(result["run_dir"]) / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and json.loads(rejects[0])["line"] == 2


def test_config_rejects_what_does_not_apply(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="group_size"):
        _config(tiny_model_dir, tmp_path, **{"rollout.group_size": 1})
    with pytest.raises(ValueError, match="do not apply to rl"):
        _config(tiny_model_dir, tmp_path, **{"train.epochs": 2})
    with pytest.raises(ValueError, match="minibatches"):
        _config(tiny_model_dir, tmp_path, **{"rl.minibatches": 3})
    with pytest.raises(ValueError, match="needs `pattern`"):
        RLConfig.model_validate({"data": {"prompts": "builtin:arithmetic"}, "rewards": [{"kind": "regex"}]})


# --------------------------------------------------------------------------- pieces


def test_prompts_for_step_walk_epochs_without_repeats():
    from honing.train.engine import epoch_order

    seen = [i for step in range(5) for i in prompts_for_step(10, 4, step, seed=1)]
    assert sorted(seen[:10]) == list(range(10))  # the first epoch covers every prompt once
    # Reference: the epochs' seeded orders laid end to end, 4 prompts a step, so step 2 takes the
    # last 2 of epoch 0 and the first 2 of epoch 1.
    stream = [i for epoch in range(2) for i in epoch_order(10, 1, epoch)]
    assert seen == stream[:20]
    assert stream[:10] != stream[10:]  # each epoch has its own order
    torch.manual_seed(123)  # the global RNG (restored or not on resume) plays no part
    assert prompts_for_step(10, 4, 3, seed=1) == stream[12:16]
    assert prompts_for_step(10, 4, 3, seed=2) != stream[12:16]  # the seed does


def test_builtin_task_is_deterministic_and_checkable():
    a, b = arithmetic(50, seed=3), arithmetic(50, seed=3)
    assert a == b and len({r["prompt"] for r in a}) == 50
    for record in a:
        assert eval(record["expression"]) == int(record["answer"])  # noqa: S307 - our own generated digits


def test_verifier_rewards():
    records = [{"answer": "42"}, {"answer": "-7"}, {"answer": "1200"}]
    specs = [{"kind": "numeric"}, {"kind": "exact_match"}, {"kind": "regex", "pattern": r"^\d+$", "name": "digits"},
             {"kind": "json_schema", "schema": {"type": "object", "required": ["a"]}},
             {"kind": "length_penalty", "max_tokens": 4}, {"kind": "function", "function": "tests.stages.test_rl_stage:_shout"}]
    suite = RewardSuite(RLConfig.model_validate({"data": {"prompts": "x"}, "rewards": specs}).rewards)
    scored = suite(["q"] * 3, ["The answer is 42", "-7", '{"a": 1}'], records, [4, 8, 2])
    assert scored.terms["numeric"] == [1.0, 1.0, 0.0]
    assert scored.terms["exact_match"] == [0.0, 1.0, 0.0]
    assert scored.terms["digits"] == [0.0, 0.0, 0.0]
    assert scored.terms["json_schema"] == [0.0, 0.0, 1.0]
    assert scored.terms["length_penalty"] == [0.0, -1.0, 0.0]
    assert scored.terms["function"] == [0.0, 0.0, 0.0]
    assert scored.total == [sum(v[i] for v in scored.terms.values()) for i in range(3)]
    assert last_number("it costs 1,200 dollars, not 3.5") == 3.5
    assert last_number("no digits") is None


def _characters(prompt, completion, record):
    return len(completion) / 20


def _shout(prompt, completion, record):
    return float(completion.isupper())


def test_reward_errors_are_clear():
    with pytest.raises(ConfigError, match="lacks"):
        RewardSuite([RLConfig.model_validate({"data": {"prompts": "x"}, "rewards": [{"kind": "numeric"}]}).rewards[0]])(
            ["q"], ["1"], [{"other": 1}], [1])
    with pytest.raises(ConfigError, match="cannot be loaded"):
        RewardSuite(RLConfig.model_validate({"data": {"prompts": "x"},
                                             "rewards": [{"kind": "function", "function": "nope.nothing:fn"}]}).rewards)


def test_grpo_kl_in_the_reward_lowers_the_score_of_drifting_completions():
    cfg = RLConfig.model_validate({"data": {"prompts": "x"}, "rewards": [{"kind": "numeric"}],
                                   "rollout": {"group_size": 2},
                                   "rl": {"kl_placement": "reward", "kl_beta": 1.0, "scale_rewards": "none"}})
    rows = []
    for drift in (0.0, 0.5):
        mask = torch.tensor([0, 0, 1, 1])
        rows.append({"input_ids": torch.zeros(4, dtype=torch.long), "response_mask": mask,
                     "old_logps": torch.tensor([0.0, 0.0, -1.0, -1.0]),
                     "ref_logps": torch.tensor([0.0, 0.0, -1.0 - drift, -1.0 - drift])})
    add_advantages(rows, torch.tensor([1.0, 1.0]), cfg)
    # equal scores, but the second completion's k1 KL is 2 × 0.5 = 1: advantages ±0.5
    assert torch.allclose(rows[0]["advantages"], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert torch.allclose(rows[1]["advantages"], torch.tensor([0.0, 0.0, -0.5, -0.5]))


def test_reward_model_and_judge_terms(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from honing.models.reward import RewardModel, save_reward_model, score_responses

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    scorer = RewardModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    save_reward_model(scorer, tmp_path / "rm", tokenizer=tokenizer)

    class ScriptedJudge:
        identity = {"kind": "scripted"}

        def texts(self, conversations):
            return ["Score: 7" if "right: 4" in c[-1]["content"] else "no grade here" for c in conversations]

    monkeypatch.setattr("honing.evals.judges.build_judge", lambda cfg, batch_size=8: ScriptedJudge())
    specs = RLConfig.model_validate({"data": {"prompts": "x"}, "rewards": [
        {"kind": "reward_model", "path": str(tmp_path / "rm"), "weight": 2.0},
        {"kind": "judge", "judge": {}, "rubric": "be correct"}]}).rewards
    suite = RewardSuite(specs)
    prompts, answers = ["What is 2 + 2?", "Name a colour."], ["right: 4", "blue"]
    scored = suite(prompts, answers, [{}, {}], [3, 1])
    expected = score_responses(scorer.eval(), tokenizer, prompts, answers)
    assert scored.terms["reward_model"] == pytest.approx(expected, abs=1e-5)
    assert scored.terms["judge"] == [pytest.approx(6 / 9), 0.0]  # an unreadable grade scores 0
    assert scored.total == pytest.approx([2 * e + j for e, j in zip(expected, scored.terms["judge"])])


def test_a_txt_prompt_file_that_is_not_utf8_is_one_line(tmp_path):
    from honing.errors import DataError
    from honing.rl.prompts import _read

    path = tmp_path / "prompts.txt"
    path.write_bytes(b"What is 2 + 2?\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"prompts.txt:2"):
        list(_read(str(path)))
