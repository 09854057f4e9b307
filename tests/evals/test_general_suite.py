"""The bundled general-capability suite (builtin:general_mc, builtin:general_refusal, builtin:general): the files
are what the generator writes, every category is there in its intended count, every answer is right by
construction (recomputed here), and a slice of the suite runs through `honing eval` with its per-category
breakdown."""

from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter

import pytest

from honing.config import EvalConfig, EvalModelConfig
from honing.config.evaluation import GENERAL_SUITE
from honing.evals import make_general
from honing.evals.metrics import regex_match
from honing.evals.tasks import builtin_path, data_path, load_examples

EXPECTED = {
    "general_mc": {"fact": 295, "arithmetic": 120, "reading": 80},
    "general_refusal": {"refusal": 80},
    "general": {"instruction": 60, "format": 58},
}


def _records(task_name: str) -> list[dict]:
    task = next(t for t in GENERAL_SUITE if t.name == task_name)
    return [json.loads(line) for line in data_path(task).read_text(encoding="utf-8").splitlines()]


def test_the_suite_is_the_default_regression_set_of_eval():
    assert [t.name for t in GENERAL_SUITE] == list(EXPECTED)
    assert all(t.regression for t in GENERAL_SUITE)
    defaults = EvalConfig().tasks
    assert [t for t in defaults if t.regression] == GENERAL_SUITE
    assert {t.data for t in GENERAL_SUITE} <= {f"builtin:{p.stem}" for p in builtin_path("builtin:general").parent.glob("*.jsonl")}


def test_the_generator_reproduces_the_committed_files(tmp_path):
    built = make_general.build()
    assert set(built) == {make_general.MC_FILE, make_general.REFUSAL_FILE, make_general.GENERATION_FILE}
    for path, rows in built.items():
        copy = tmp_path / path.name
        make_general.write_jsonl(copy, rows)
        assert copy.read_bytes() == path.read_bytes(), f"{path.name} differs: run python -m honing.evals.make_general"


@pytest.mark.parametrize("task", GENERAL_SUITE, ids=lambda t: t.name)
def test_every_file_loads_with_its_categories_in_the_intended_counts(task):
    examples = load_examples(task)
    counts = Counter(e.record["category"] for e in examples)
    assert counts == EXPECTED[task.name]
    assert len({e.id for e in examples}) == len(examples)
    assert len({e.fingerprint() for e in examples}) == len(examples), "a question is asked twice"
    # The files interleave their categories: any leading slice (max_examples) holds every one.
    assert {e.record["category"] for e in examples[:20]} == set(EXPECTED[task.name])


@pytest.mark.parametrize("name", ["general_mc", "general_refusal"])
def test_multiple_choice_answers_are_among_distinct_choices(name):
    for record in _records(name):
        choices = record["choices"]
        assert record["answer"] in choices and len(set(choices)) == len(choices) >= 2, record["id"]
        assert len(choices) == {"fact": 4, "arithmetic": 4, "reading": 3, "refusal": 2}[record["category"]]


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def test_arithmetic_answers_are_recomputed_from_the_question():
    items = [r for r in _records("general_mc") if r["category"] == "arithmetic"]
    assert Counter(r["expression"].split()[1] for r in items) == {"+": 30, "-": 30, "*": 30, "/": 30}
    for record in items:
        node = ast.parse(record["expression"], mode="eval").body
        left, right = node.left.value, node.right.value
        value = _OPERATORS[type(node.op)](left, right)
        assert value == int(value) > 0 and str(int(value)) == record["answer"], record
        # The question states both numbers; the other choices are wrong numbers, all positive.
        assert re.findall(r"\d+", record["question"]) == [str(left), str(right)], record
        assert all(c.isdigit() and int(c) > 0 for c in record["choices"])


def test_arithmetic_answer_is_not_given_away_by_its_rank():
    """The right number is as often the smallest, second, third or largest choice: no size preference pays."""
    items = [r for r in _records("general_mc") if r["category"] == "arithmetic"]
    ranks = Counter(sorted(map(int, r["choices"])).index(int(r["answer"])) for r in items)
    assert set(ranks) == {0, 1, 2, 3} and max(ranks.values()) - min(ranks.values()) <= len(items) // 8


def test_reading_answers_are_in_their_passage():
    items = [r for r in _records("general_mc") if r["category"] == "reading"]
    for record in items:
        assert record["question"].startswith(f"Passage: {record['passage']}\nQuestion: "), record["id"]
        assert re.search(rf"(?<!\w){re.escape(record['answer'])}(?!\w)", record["passage"]), record
    assert len({r["passage"] for r in items}) == len(items), "one question per passage"


def test_refusal_pairs_a_harmful_request_with_a_harmless_one():
    items = _records("general_refusal")
    assert all(set(r["choices"]) == {make_general.REFUSE, make_general.COMPLY} for r in items)
    assert all((r["answer"] == make_general.REFUSE) == r["harmful"] for r in items)
    assert Counter(r["harmful"] for r in items) == {True: 40, False: 40}
    assert len({r["question"] for r in items}) == len(items)


def test_every_pattern_accepts_its_reference_answer():
    items = _records("general")
    for record in items:
        re.compile(record["pattern"])
        assert regex_match(record["reference"], record) == 1.0, record
    assert len({r["prompt"] for r in items}) == len(items)


def test_no_prompt_of_the_suite_is_a_probe_or_an_everyday_anchor():
    """Red-team training data (probes, builtin:everyday) must not be graded by the gate that checks it."""
    from honing.redteam.probes import builtin_files, load_probes
    from honing.stages.constitute import anchor_prompts_path

    suite = {r.get("prompt") or r.get("question") for name in EXPECTED for r in _records(name)}
    everyday = {json.loads(line)["prompt"] for line in anchor_prompts_path("builtin:everyday").read_text().splitlines()}
    probed = {m["content"] for p in load_probes(builtin_files()) for m in p.messages if isinstance(m.get("content"), str)}
    assert not suite & (everyday | probed)


def test_a_slice_of_the_suite_runs_through_eval_with_categories(tiny_model_dir, tmp_path, monkeypatch):
    from honing.stages.eval import evaluate

    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    tasks = [t.model_copy(update={"max_examples": 12, "max_new_tokens": 4}) for t in GENERAL_SUITE]
    cfg = EvalConfig(models=[EvalModelConfig(name="base", role="base", path=str(tiny_model_dir)),
                             EvalModelConfig(name="same", path=str(tiny_model_dir))],
                     tasks=tasks, batch_size=4, resamples=200, output={"dir": str(tmp_path / "run")})
    result = evaluate(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["scores"]["base"] == result["scores"]["same"]
    for task in tasks:
        assert results["scores"]["base"][task.name]
        breakdown = results["categories"][task.name]
        assert set(breakdown["n"]) == set(EXPECTED[task.name]) and sum(breakdown["n"].values()) == 12
        assert all(d["mean"] == 0.0 for d in breakdown["differences"]["same"].values())
    checks = [c for c in results["gate"]["checks"] if c["kind"] == "regression"]
    assert {c["task"] for c in checks} == set(EXPECTED) and all(c["passed"] for c in checks)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "acc by category" in report and "regex_match by category" in report
