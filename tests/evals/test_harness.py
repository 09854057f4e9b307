"""lm-evaluation-harness on a honing model (skipped when the lm-eval extra is not installed), and a
cross-check: honing's own multiple-choice scoring gives the harness's accuracy on the same data."""

from __future__ import annotations

import json

import pytest

from honing.config import EvalConfig
from honing.stages.eval import evaluate

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")

QUESTIONS = [
    {"question": "The sky on a clear day is", "choices": ["blue", "green", "made of cheese"], "answer": 0},
    {"question": "Fire feels", "choices": ["cold", "hot"], "answer": 1},
    {"question": "Two plus two is", "choices": ["four", "five", "twenty two"], "answer": 0},
    {"question": "Cats say", "choices": ["meow", "moo"], "answer": 0},
    {"question": "Ice is", "choices": ["frozen water", "hot sand"], "answer": 0},
    {"question": "The opposite of up is", "choices": ["left", "down", "sideways"], "answer": 1},
]


@pytest.fixture()
def harness_task(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "honing_tiny_mc.yaml").write_text(
        "task: honing_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return data, tasks


def test_harness_task_matches_honing_multiple_choice(tmp_path, tiny_model_dir, harness_task, monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    data, tasks = harness_task
    cfg = EvalConfig(
        models=[{"name": "tiny", "path": str(tiny_model_dir), "role": "base"}],
        tasks=[
            {"name": "harness", "kind": "lm_eval", "lm_eval_task": "honing_tiny_mc", "include_path": str(tasks)},
            {"name": "ours", "kind": "multiple_choice", "data": str(data)},
        ],
        output={"dir": str(tmp_path / "eval")}, resamples=200,
    )
    result = evaluate(cfg)
    harness, ours = result["scores"]["tiny"]["harness"], result["scores"]["tiny"]["ours"]
    assert harness["acc"]["n"] == len(QUESTIONS)
    # Same definitions (sum of continuation log-probs after a " " delimiter; acc_norm per character).
    assert ours["acc"]["mean"] == pytest.approx(harness["acc"]["mean"])
    assert ours["acc_norm"]["mean"] == pytest.approx(harness["acc_norm"]["mean"])
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "harness" in report
