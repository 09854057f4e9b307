"""`honing reward` and `honing score` end to end on a tiny model: pairs from a file, the head and
the backbone (full or LoRA) trained through the engine, a reward model that reloads and scores
exactly as in memory, resume, and scoring files through the CLI with file:line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import honing.stages.reward as reward_stage
from honing.config import RewardConfig, ScoreConfig, load_config
from honing.errors import ConfigError, DataError, ModelError
from honing.stages.score import score_file
from honing.models.reward import RewardModel, load_reward_model, save_reward_model, score_responses


def _pairs(path, n=12, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f"It is {2 * i}.",
             "rejected": f"I do not know, maybe {i}?", **extra} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, tiny_model_dir, *overrides):
    return load_config(RewardConfig, None, [
        f"model.path={tiny_model_dir}", f"data.train={_pairs(tmp_path / 'prefs.jsonl')}", "data.validation_split=0.25",
        "data.max_length=64", "adapter.rank=4", "train.max_steps=4", "train.micro_batch_size=2", "train.lr=1e-2",
        "train.eval_every=2", "train.save_every=null", "train.precision=fp32", "train.schedule=constant",
        f"output.dir={tmp_path / 'run'}", "output.tensorboard=false", *overrides,
    ])


@pytest.fixture
def captured(monkeypatch):
    """The parts the stage built, and every parameter as it was before training."""
    seen: dict = {}
    build = reward_stage.setup_parts

    def setup(cfg, ctx):
        parts = build(cfg, ctx)
        seen["parts"] = parts
        seen["before"] = {name: p.detach().clone() for name, p in parts.model.named_parameters()}
        return parts

    monkeypatch.setattr(reward_stage, "setup_parts", setup)
    return seen


@pytest.mark.parametrize("method", ["lora", "full"])
def test_reward_stage_trains_saves_and_reloads(tmp_path, tiny_model_dir, captured, method):
    result = reward_stage.reward(_config(tmp_path, tiny_model_dir, f"adapter.method={method}"))
    assert result["status"] == "completed" and "val_accuracy" in result
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert steps[0]["pairs"] == 2 and "target_tokens" not in steps[0]  # units: 2 pairs; no labels, no target tokens
    assert not any("perplexity" in name for row in rows for name in row)
    assert {"accuracy", "margin", "chosen_score", "rejected_score"} <= set(steps[0])
    assert 0.0 <= steps[0]["accuracy"] <= 1.0  # a mean over the step's pairs, not a sum
    validations = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in validations] == [0, 2, 4] and all(0 <= r["val_accuracy"] <= 1 for r in validations)

    reward_model: RewardModel = captured["parts"].model
    trained = {name for name, p in reward_model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trained
    if method == "lora":
        assert trained - {"head.weight", "head.bias"} and all("lora_" in n for n in trained - {"head.weight", "head.bias"})
    for name, param in reward_model.named_parameters():
        changed = not torch.equal(param.detach(), captured["before"][name])
        assert changed == (name in trained), f"{name}: trainable={name in trained}, changed={changed}"

    saved = tmp_path / "run" / "reward_model"
    assert (saved / "reward_head.safetensors").is_file() and (saved / "tokenizer_config.json").is_file()
    assert (saved / ("adapter_config.json" if method == "lora" else "config.json")).is_file()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stage"] == "reward" and record["outputs"]["reward_model"] == str(saved)
    assert record["data"]["train_examples"] == 9 and record["data"]["validation_examples"] == 3

    loaded = load_reward_model(saved).eval()
    tokenizer = captured["parts"].tokenizer
    prompts = ["Question 3: what is 3 plus 3?", "Question 40: what is 40 plus 40?"]
    answers = ["It is 6.", "Maybe 80?"]
    torch.testing.assert_close(torch.tensor(score_responses(loaded, tokenizer, prompts, answers)),
                               torch.tensor(score_responses(reward_model, tokenizer, prompts, answers)), rtol=0, atol=1e-6)


def test_reward_resume_continues_exactly(tmp_path, tiny_model_dir):
    common = ["train.save_every=2", "adapter.dropout=0.1", "train.max_steps=4"]
    full = reward_stage.reward(_config(tmp_path / "a", tiny_model_dir, *common))
    cut_dir = tmp_path / "b" / "run"
    reward_stage.reward(_config(tmp_path / "b", tiny_model_dir, *common, "train.max_steps=2"))
    # Pretend the run was killed after its step-2 checkpoint: its saved config asks for 4 steps.
    saved = (cut_dir / "config.yaml").read_text().replace("max_steps: 2", "max_steps: 4")
    (cut_dir / "config.yaml").write_text(saved)
    resumed = reward_stage.reward(load_config(RewardConfig, cut_dir / "config.yaml"), resume=cut_dir)
    losses = lambda d: [json.loads(l).get("loss") for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [x for x in losses(cut_dir) if x] == pytest.approx([x for x in losses(tmp_path / "a" / "run") if x], rel=1e-6)
    assert resumed["val_accuracy"] == full["val_accuracy"]
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)


def test_margin_field_and_bad_pairs_name_file_and_line(tmp_path, tiny_model_dir, captured):
    data = _pairs(tmp_path / "gaps.jsonl", 8, gap=2.0)
    cfg = _config(tmp_path, tiny_model_dir, f"data.train={data}", "reward.margin=0.5", "reward.margin_field=gap",
                  "train.max_steps=1")
    reward_stage.reward(cfg)
    batch = captured["parts"].collate(captured["parts"].train_items[:2])
    assert batch["margin"].tolist() == [2.5, 2.5] and batch["input_ids"].shape[0] == 4
    data.write_text(data.read_text() + json.dumps({"prompt": "x", "chosen": "y", "rejected": "z"}) + "\n")
    with pytest.raises(DataError, match=r"gaps\.jsonl:9: missing field 'gap'"):
        reward_stage.reward(_config(tmp_path, tiny_model_dir, f"data.train={data}", "reward.margin_field=gap",
                                    f"output.dir={tmp_path / 'bad'}"))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("overrides, expected", [
    (["data.train=x.jsonl", "data.format=chat"], "reward trains on preference data"),
    (["data.train=x.jsonl", "output.save=merged"], "output.save does not apply"),
    (["data.train=x.jsonl", "train.distributed=fsdp"], "fsdp is not supported"),
    (["input=a.jsonl", "output=b.jsonl"], "reward_model, input and output are all required"),
])
def test_bad_configs_are_refused(overrides, expected):
    cls = ScoreConfig if any(o.startswith("input=") for o in overrides) else RewardConfig
    with pytest.raises(ConfigError, match=expected):
        load_config(cls, None, overrides)


# --------------------------------------------------------------------------- honing score


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    """A tiny, untrained reward model saved as `honing reward` saves one (full backbone + head + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    reward_model = RewardModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    out = tmp_path_factory.mktemp("run") / "reward_model"
    save_reward_model(reward_model, out, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    return out


ANSWERS = [
    {"prompt": "What is 2 + 2?", "response": "4", "id": 1},
    {"messages": [{"role": "user", "content": "What is 3 + 3?"}, {"role": "assistant", "content": "6"}], "id": 2},
    {"instruction": "Name a colour.", "input": "", "response": "", "id": 3},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "response": "Hello!", "id": 4},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_cli_writes_a_score_per_record(reward_dir, tokenizer, tmp_path):
    answers = _write(tmp_path / "answers.jsonl", ANSWERS)
    out = tmp_path / "scored.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "score", f"reward_model={reward_dir.parent}",
                           f"input={answers}", f"output={out}", "batch_size=3"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["id"] for w in written] == [1, 2, 3, 4]
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "What is 3 + 3?"}], "Name a colour.",
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    expected = score_responses(load_reward_model(reward_dir), tokenizer, prompts, ["4", "6", "", "Hello!"])
    assert [w["score"] for w in written] == pytest.approx(expected, abs=1e-5)

    bad = _write(tmp_path / "bad.jsonl", [ANSWERS[0], {"prompt": "where is the answer?"}])
    bad_out = tmp_path / "never.jsonl"
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "score", f"reward_model={reward_dir}",
                           f"input={bad}", f"output={bad_out}"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    assert "bad.jsonl:2: no answer to score" in proc.stderr
    assert not bad_out.exists() and not list(tmp_path.glob(".never*"))


def test_score_against_a_baseline_gives_the_win_rate(reward_dir, tmp_path):
    tuned = _write(tmp_path / "tuned.jsonl", [{"prompt": f"Q{i}?", "response": f"A{i}."} for i in range(4)])
    start = _write(tmp_path / "start.jsonl", [{"prompt": f"Q{i}?", "response": "Hmm, not sure."} for i in range(4)])
    cfg = load_config(ScoreConfig, None, [f"reward_model={reward_dir}", f"input={tuned}", f"baseline={start}",
                                          f"output={tmp_path / 'out.jsonl'}"])
    summary = score_file(cfg)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    wins = sum(r["score"] > r["baseline_score"] for r in rows)
    ties = sum(r["score"] == r["baseline_score"] for r in rows)
    assert summary["win_rate"] == pytest.approx((wins + 0.5 * ties) / 4)
    assert summary["mean_score"] == pytest.approx(sum(r["score"] for r in rows) / 4)
    assert summary["baseline_mean_score"] == pytest.approx(sum(r["baseline_score"] for r in rows) / 4)

    other = _write(tmp_path / "other.jsonl", [{"prompt": f"Q{i + 1}?", "response": "x"} for i in range(4)])
    with pytest.raises(DataError, match=r"other\.jsonl:1: its prompt differs"):
        score_file(cfg.model_copy(update={"baseline": str(other)}))


def test_score_refuses_a_directory_that_is_not_a_reward_model(tiny_model_dir, tmp_path):
    answers = _write(tmp_path / "answers.jsonl", ANSWERS[:1])
    cfg = load_config(ScoreConfig, None, [f"reward_model={tiny_model_dir}", f"input={answers}",
                                          f"output={tmp_path / 'out.jsonl'}"])
    with pytest.raises(ModelError, match="is not a reward model"):
        score_file(cfg)
    with pytest.raises(ModelError, match="does not exist"):
        score_file(cfg.model_copy(update={"reward_model": str(tmp_path / "nowhere")}))


def test_a_lora_reward_model_scores_on_its_recorded_base(tiny_model_dir, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    reward_model = RewardModel(lora).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    save_reward_model(reward_model, tmp_path / "rm", tokenizer=tokenizer)
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["base_model"] == str(tiny_model_dir.resolve())
    answers = _write(tmp_path / "answers.jsonl", ANSWERS)
    out = tmp_path / "scored.jsonl"
    score_file(load_config(ScoreConfig, None, [f"reward_model={tmp_path / 'rm'}", f"input={answers}", f"output={out}"]))
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "What is 3 + 3?"}], "Name a colour.",
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    assert scores == pytest.approx(score_responses(reward_model, tokenizer, prompts, ["4", "6", "", "Hello!"]), abs=1e-5)
