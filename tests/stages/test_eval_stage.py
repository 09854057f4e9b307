"""`honing eval` end to end on tiny models: every task kind, the answer cache, judges (scripted),
the gate through the CLI, and bad input stopping before a run directory exists."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import honing.evals.judges as judges
from honing.config import EvalConfig, EvalTaskConfig, SamplingConfig, load_config
from honing.errors import DataError
from honing.evals.loglik import continuation_logprobs
from honing.evals.tasks import load_examples
from honing.stages.eval import evaluate

PROMPTS = ["hello", "The answer is", "Once upon a time", "Say something unclear"]
MAX_NEW_TOKENS = 4


# ----------------------------------------------------------------------- fixtures


class ScriptedJudge:
    """Pairwise: prefers the alphabetically first answer (whatever its position), TIE when equal.
    Rubric: grades by answer length, and cannot grade a question that says "unclear"."""

    identity = {"kind": "scripted", "version": 1}

    def __init__(self):
        self.asked: list[tuple[list[dict[str, str]], str]] = []

    def texts(self, conversations):
        replies = [self._reply(m[-1]["content"]) for m in conversations]
        self.asked += list(zip(conversations, replies))
        return replies

    @staticmethod
    def _reply(prompt: str) -> str:
        pair = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", prompt, re.DOTALL)
        if pair:
            a, b = pair.groups()
            return "TIE" if a == b else "Answer A" if a < b else "Answer B"
        if "unclear" in prompt:
            return "I cannot grade this."
        answer = re.search(r"Answer:\n(.*?)\n\n", prompt, re.DOTALL).group(1)
        return f"Score: {1 + len(answer) % 10}"


@pytest.fixture(scope="module")
def scripted_judges(tmp_path_factory):
    """Every judge the stage builds is scripted; the answer cache lives in a temporary directory."""
    built: list[ScriptedJudge] = []

    def build_judge(cfg, *, batch_size=8):
        built.append(ScriptedJudge())
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONING_CACHE", str(tmp_path_factory.mktemp("honing-cache")))
        patch.setattr(judges, "build_judge", build_judge)
        yield built


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model's architecture with other random weights: a candidate that answers differently."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir))
    out = tmp_path_factory.mktemp("tiny-model-seed1")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("eval-data")
    return {
        "generation": write_jsonl(root / "gen.jsonl", [
            {"prompt": p, "reference": r} for p, r in zip(PROMPTS, ["hi", "42", "there was", "no"])]),
        "multiple_choice": write_jsonl(root / "mc.jsonl", [
            {"question": "Q: 2 + 2 =", "choices": ["4", "5", "22"], "answer": 0},
            {"question": "The sky is", "choices": ["blue", "green", "made of cheese"], "answer": "blue"},
            {"question": "Q: the capital of France?\nA: ", "choices": ["Paris", "Lyon"], "answer": 0},
            {"question": "Cats say", "choices": ["woof", "meow", "moo"], "answer": 1},
        ]),
        "classification": write_jsonl(root / "cls.jsonl", [
            {"prompt": f"Is this ticket about billing? {text}", "label": label}
            for text, label in [("My invoice is wrong", "yes"), ("The parcel is late", "no"),
                                ("I was charged twice", "yes"), ("How do I reset my password", "no")]]),
        "perplexity": write_jsonl(root / "ppl.jsonl", [
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]},
            {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]},
            {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}]},
        ]),
    }


def every_kind(data: dict[str, str], model_dir: Path, output: Path) -> dict:
    """Base and an identical twin (the same weights under another name) on every kind of task."""
    return {
        "models": [{"name": "base", "path": str(model_dir), "role": "base"}, {"name": "twin", "path": str(model_dir)}],
        "tasks": [
            {"name": "answers", "data": data["generation"], "metrics": ["exact_match", "token_f1"]},
            {"name": "choices", "kind": "multiple_choice", "data": data["multiple_choice"]},
            {"name": "labels_generated", "kind": "classification", "data": data["classification"]},
            {"name": "labels_scored", "kind": "classification", "data": data["classification"],
             "classify_by": "loglikelihood"},
            {"name": "heldout", "kind": "perplexity", "data": data["perplexity"]},
            {"name": "versus", "kind": "pairwise", "data": data["generation"], "chat_template": False},
            {"name": "graded", "kind": "rubric", "data": data["generation"], "chat_template": False,
             "rubric": "Answers the question."},
        ],
        "judge": {"path": str(model_dir), "max_new_tokens": 8},
        "sampling": {"max_new_tokens": MAX_NEW_TOKENS},
        "batch_size": 3,
        "resamples": 200,
        "output": {"dir": str(output)},
    }


def config_file(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def first_run(scripted_judges, data, tiny_model_dir, tmp_path_factory):
    settings = every_kind(data, tiny_model_dir, tmp_path_factory.mktemp("runs") / "first")
    cfg = load_config(EvalConfig, config_file(tmp_path_factory.mktemp("cfg") / "eval.yaml", settings))
    returned = evaluate(cfg)
    results = json.loads((Path(returned["run_dir"]) / "results.json").read_text())
    return {"settings": settings, "returned": returned, "results": results, "judge": scripted_judges[-1]}


def run_again(settings: dict, output: Path, **changes) -> dict:
    cfg = EvalConfig.model_validate({**settings, **changes, "output": {"dir": str(output)}})
    return json.loads((Path(evaluate(cfg)["run_dir"]) / "results.json").read_text())


# ----------------------------------------------------------------------- every kind, end to end


def test_every_model_task_and_metric_has_a_score_with_an_interval(first_run):
    results, settings = first_run["results"], first_run["settings"]
    run_dir = Path(first_run["returned"]["run_dir"])
    assert (run_dir / "report.html").stat().st_size > 0 and (run_dir / "report.md").stat().st_size > 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and {"results", "html", "markdown"} <= set(record["outputs"])
    expected = {"answers": {"exact_match", "token_f1"}, "choices": {"acc", "acc_norm"},
                "labels_generated": {"accuracy", "macro_f1"}, "labels_scored": {"accuracy", "macro_f1"},
                "heldout": {"loss", "perplexity"}, "versus": {"win_rate"}, "graded": {"rubric_score"}}
    for model in ("base", "twin"):
        tasks = dict(expected) if model == "twin" else {k: v for k, v in expected.items() if k != "versus"}
        assert {t: set(m) for t, m in results["scores"][model].items()} == tasks
        for task, metrics in results["scores"][model].items():
            for metric, score in metrics.items():
                assert score["low"] <= score["mean"] <= score["high"], (model, task, metric, score)
    assert [t["n"] for t in results["tasks"]] == [4, 4, 4, 4, 3, 4, 4]
    assert first_run["returned"]["gate"] is None and "gate" not in results  # no thresholds, no regression tasks
    assert [m["name"] for m in results["models"]] == [m["name"] for m in settings["models"]]


def test_identical_models_differ_by_exactly_zero(first_run):
    results = first_run["results"]
    differences = results["differences"]
    compared = {(d["task"], d["metric"]) for d in differences}
    assert compared == {(t, m) for t, metrics in results["scores"]["base"].items() for m in metrics}
    for d in differences:
        assert d["model"] == "twin" and d["baseline"] == "base"
        assert d["diff"] == d["low"] == d["high"] == 0.0, d
    for task, metrics in results["scores"]["base"].items():
        assert results["scores"]["twin"][task] == metrics
    assert all(not shown for shown in results["examples"].values())  # nothing where the scores differ
    # The twin has the base's weights: its answers come from the base's cache entries.
    for task, throughput in results["throughput"]["twin"].items():
        assert throughput["cached"] == throughput["examples"], task


def test_multiple_choice_accuracy_equals_own_loglikelihood_ranking(first_run, data, tiny_model, tokenizer):
    examples = [json.loads(line) for line in Path(data["multiple_choice"]).read_text().splitlines()]
    hits, hits_norm = [], []
    for example in examples:
        question, choices = example["question"], example["choices"]
        gold = choices.index(example["answer"]) if isinstance(example["answer"], str) else example["answer"]
        delimiter = "" if question.endswith((" ", "\n")) else " "
        scored = continuation_logprobs(tiny_model, tokenizer, [(question, delimiter + c) for c in choices])
        logprobs = [s.logprob for s in scored]
        hits.append(max(range(len(choices)), key=lambda i: (logprobs[i], -i)) == gold)
        per_char = [lp / len(c) for lp, c in zip(logprobs, choices)]
        hits_norm.append(max(range(len(choices)), key=lambda i: (per_char[i], -i)) == gold)
    score = first_run["results"]["scores"]["base"]["choices"]
    assert score["acc"]["mean"] == pytest.approx(sum(hits) / len(hits))
    assert score["acc_norm"]["mean"] == pytest.approx(sum(hits_norm) / len(hits_norm))


def test_perplexity_is_exp_of_the_pooled_assistant_loss(first_run, data, tiny_model, tokenizer):
    from honing.data.templating import tokenize_conversation

    loss_sum, targets = 0.0, 0
    for line in Path(data["perplexity"]).read_text().splitlines():
        example = tokenize_conversation(tokenizer, json.loads(line)["messages"], max_length=1024)
        with torch.no_grad():
            loss = tiny_model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
        loss_sum += float(loss) * example.target_tokens
        targets += example.target_tokens
    score = first_run["results"]["scores"]["base"]["heldout"]
    assert score["loss"]["mean"] == pytest.approx(loss_sum / targets, rel=1e-5)
    assert score["perplexity"]["mean"] == pytest.approx(math.exp(score["loss"]["mean"]), rel=1e-9)
    assert score["loss"]["low"] < score["loss"]["high"]  # the examples' losses differ, so resamples do


def test_judged_tasks_record_the_judge_and_outcomes(first_run):
    results, judge = first_run["results"], first_run["judge"]
    assert results["judge"] == ScriptedJudge.identity
    # The twin answers exactly as the base does: every pair a tie, in both orders.
    assert results["pairwise_outcomes"] == {"versus": {"twin": {"win": 0, "tie": 4, "loss": 0, "inconsistent": 0}}}
    assert results["scores"]["twin"]["versus"]["win_rate"]["mean"] == 0.5
    # Rubric: grades normalised to [0, 1]; the reply without a grade is left out, not counted as 0.
    grades = [(int(reply.split()[-1]) - 1) / 9 for messages, reply in judge.asked if reply.startswith("Score")]
    assert len(grades) == 3 and len(judge.asked) == 2 * 4 + 4  # pairwise both orders (twin), rubric once (base)
    rubric = results["scores"]["base"]["graded"]["rubric_score"]
    assert rubric["n"] == 3 and rubric["mean"] == pytest.approx(sum(grades) / 3)


def test_second_run_comes_from_the_cache(first_run, scripted_judges, tmp_path):
    again = run_again(first_run["settings"], tmp_path / "again")
    for model, tasks in again["throughput"].items():
        for task, throughput in tasks.items():
            assert throughput["cached"] == throughput["examples"], (model, task)
    assert scripted_judges[-1].asked == []  # verdicts and grades cached too
    assert again["scores"] == first_run["results"]["scores"]
    assert again["differences"] == first_run["results"]["differences"]
    assert again["pairwise_outcomes"] == first_run["results"]["pairwise_outcomes"]


def test_changing_metrics_rescores_without_running_the_model(first_run, tmp_path):
    settings = first_run["settings"]
    tasks = [dict(t, metrics=["rouge_l", "exact_match_normalized"]) if t["name"] == "answers" else t
             for t in settings["tasks"]]
    again = run_again(settings, tmp_path / "rescored", tasks=tasks)
    assert set(again["scores"]["base"]["answers"]) == {"rouge_l", "exact_match_normalized"}
    for model in ("base", "twin"):
        throughput = again["throughput"][model]["answers"]
        assert throughput["cached"] == throughput["examples"] == 4


def test_cache_off_recomputes_the_same_scores(first_run, tmp_path):
    settings = first_run["settings"]
    tasks = [t for t in settings["tasks"] if t["name"] in ("choices", "heldout")]
    again = run_again(settings, tmp_path / "uncached", tasks=tasks, cache=False,
                      models=settings["models"][:1])
    assert again["throughput"]["base"]["choices"]["cached"] == 0
    for task in ("choices", "heldout"):
        for metric, score in again["scores"]["base"][task].items():
            assert score["mean"] == pytest.approx(first_run["results"]["scores"]["base"][task][metric]["mean"], rel=1e-6)


def test_truncated_contexts_are_counted(first_run, data, tokenizer, tmp_path):
    from honing.evals.loglik import encode_pair

    settings = first_run["settings"]
    tasks = [{"name": "choices", "kind": "multiple_choice", "data": data["multiple_choice"], "max_length": 8}]
    again = run_again(settings, tmp_path / "short", tasks=tasks, models=settings["models"][:1], cache=False)
    expected = 0
    for line in Path(data["multiple_choice"]).read_text().splitlines():
        example = json.loads(line)
        delimiter = "" if example["question"].endswith((" ", "\n")) else " "
        lengths = [sum(map(len, encode_pair(tokenizer, example["question"], delimiter + c, add_special_tokens=True)))
                   for c in example["choices"]]
        expected += max(lengths) > 8 + 1
    assert 0 < expected < 4
    assert again["throughput"]["base"]["choices"]["truncated"] == expected
    assert first_run["results"]["throughput"]["base"]["choices"]["truncated"] == 0


def test_pairwise_against_a_different_model(scripted_judges, data, tiny_model_dir, other_model_dir, tmp_path,
                                            monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))  # every pair judged here, none from earlier tests
    settings = every_kind(data, tiny_model_dir, tmp_path / "run")
    settings["models"][1] = {"name": "other", "path": str(other_model_dir)}
    settings["tasks"] = [t for t in settings["tasks"] if t["name"] == "versus"]
    results = run_again(settings, tmp_path / "run")
    judge = scripted_judges[-1]
    assert len(judge.asked) == 2 * 4
    forward = [messages for messages, _ in judge.asked[:4]]  # the candidate shown first
    expected = {"win": 0, "tie": 0, "loss": 0}
    for messages in forward:
        a, b = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", messages[-1]["content"], re.DOTALL).groups()
        expected["tie" if a == b else "win" if a < b else "loss"] += 1
    assert expected["tie"] < 4  # the two models answer differently
    assert results["pairwise_outcomes"]["versus"]["other"] == expected | {"inconsistent": 0}
    win_rate = results["scores"]["other"]["versus"]["win_rate"]["mean"]
    assert win_rate == pytest.approx((expected["win"] + expected["tie"] / 2) / 4)
    assert "versus" not in results["scores"]["base"]


# ----------------------------------------------------------------------- the gate through the CLI


def run_cli(monkeypatch, *args: str) -> int:
    from honing.cli import main

    monkeypatch.setattr(sys, "argv", ["honing", "eval", *args])
    try:
        main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def choices_only(data: dict[str, str], model_dir: Path, output: Path, **task) -> dict:
    settings = every_kind(data, model_dir, output)
    settings["tasks"] = [{"name": "choices", "kind": "multiple_choice", "data": data["multiple_choice"], **task}]
    del settings["judge"]
    return settings


def test_gate_fails_on_a_missed_threshold(scripted_judges, data, tiny_model_dir, tmp_path, monkeypatch):
    path = config_file(tmp_path / "eval.yaml", choices_only(data, tiny_model_dir, tmp_path / "run", min={"acc": 1.1}))
    assert run_cli(monkeypatch, str(path), "--gate") == 3
    gate = json.loads((tmp_path / "run" / "results.json").read_text())["gate"]
    assert not gate["passed"] and [(c["model"], c["kind"], c["passed"]) for c in gate["checks"]] == [
        ("twin", "threshold", False)]
    # Without --gate the same result is reported, not the exit code.
    assert run_cli(monkeypatch, str(path), f"output.dir={tmp_path / 'report-only'}") == 0
    assert not json.loads((tmp_path / "report-only" / "results.json").read_text())["gate"]["passed"]


def test_gate_passes_when_thresholds_are_met(scripted_judges, data, tiny_model_dir, tmp_path, monkeypatch):
    path = config_file(tmp_path / "eval.yaml", choices_only(data, tiny_model_dir, tmp_path / "run", min={"acc": 0.0},
                                                            regression=True))
    assert run_cli(monkeypatch, str(path), "--gate") == 0
    gate = json.loads((tmp_path / "run" / "results.json").read_text())["gate"]
    assert gate["passed"] and {c["kind"] for c in gate["checks"]} == {"threshold", "regression"}


def test_gate_checks_a_single_model_against_thresholds(scripted_judges, data, tiny_model_dir, tmp_path, monkeypatch):
    settings = choices_only(data, tiny_model_dir, tmp_path / "run", min={"acc": 1.1})
    settings["models"] = settings["models"][:1]
    assert run_cli(monkeypatch, str(config_file(tmp_path / "eval.yaml", settings)), "--gate") == 3


def test_gate_fails_when_a_candidate_regresses(scripted_judges, data, tiny_model_dir, other_model_dir, tmp_path,
                                               monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from honing.generate import generate

    # References are the base model's own greedy answers: the base matches all of them, the other model none.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = generate(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=MAX_NEW_TOKENS), batch_size=3,
                       chat_template=False, progress=False)
    assert all(answers)
    references = write_jsonl(tmp_path / "own.jsonl", [{"prompt": p, "reference": a} for p, a in zip(PROMPTS, answers)])
    settings = every_kind(data, tiny_model_dir, tmp_path / "run")
    settings["models"][1] = {"name": "other", "path": str(other_model_dir)}
    settings["tasks"] = [{"name": "general", "data": references, "metrics": ["exact_match"], "chat_template": False,
                          "regression": True}]
    del settings["judge"]
    assert run_cli(monkeypatch, str(config_file(tmp_path / "eval.yaml", settings)), "--gate") == 3
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["scores"]["base"]["general"]["exact_match"]["mean"] == 1.0
    (check,) = results["gate"]["checks"]
    assert (check["model"], check["kind"], check["metric"], check["passed"]) == ("other", "regression", "exact_match", False)
    assert check["value"] == results["scores"]["other"]["general"]["exact_match"]["mean"] - 1.0 < -0.02


@pytest.mark.parametrize("problem, message", [
    ("unknown_metric", "unknown metric 'exact_matches'"),
    ("missing_data", "does not exist"),
    ("bad_answer", "mc.jsonl:2: answer index 3 is out of range for 3 choices"),
])
def test_bad_input_exits_1_with_one_line_and_no_run_dir(tiny_model_dir, tmp_path, problem, message):
    task = {"name": "answers", "data": str(tmp_path / "gen.jsonl"), "metrics": ["exact_match"]}
    write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "hi", "reference": "there"}])
    if problem == "unknown_metric":
        task["metrics"] = ["exact_matches"]
    elif problem == "missing_data":
        task["data"] = str(tmp_path / "nope.jsonl")
    else:
        task = {"name": "choices", "kind": "multiple_choice", "data": str(tmp_path / "mc.jsonl")}
        write_jsonl(tmp_path / "mc.jsonl", [{"question": "a?", "choices": ["x", "y", "z"], "answer": 0},
                                            {"question": "b?", "choices": ["x", "y", "z"], "answer": 3}])
    settings = {"models": [{"name": "base", "path": str(tiny_model_dir)}], "tasks": [task],
                "output": {"dir": str(tmp_path / "run")}}
    path = config_file(tmp_path / "eval.yaml", settings)
    out = subprocess.run([sys.executable, "-m", "honing.cli", "eval", str(path), "--gate"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "HONING_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_bad_multiple_choice_answers_name_file_and_line(tmp_path):
    path = tmp_path / "mc.jsonl"
    cases = [({"answer": 3}, "answer index 3 is out of range for 3 choices"),
             ({"answer": -1}, "answer index -1 is out of range"),
             ({"answer": "w"}, "answer 'w' is not one of the choices"),
             ({"answer": True}, "`answer` must be the index"),
             ({"choices": ["only one"]}, "`choices` must be a list of at least two"),
             ({"question": None}, "a multiple-choice example needs `question`")]
    for change, message in cases:
        record = {"question": "b?", "choices": ["x", "y", "z"], "answer": 1} | change
        write_jsonl(path, [{"question": "a?", "choices": ["x", "y"], "answer": 0}, record])
        with pytest.raises(DataError, match=re.escape(f"{path}:2: {message}")):
            load_examples(EvalTaskConfig(name="mc", kind="multiple_choice", data=str(path)))
