"""`honing monitor export` on request logs written by the server's writer (RequestLog): each kind of feedback gives
the records it should (choices, corrections, up/down pairs) and every row that gives none is counted with its
reason; the files load unchanged through the data pipelines `honing dpo` and `honing sft` read with; the run
record names the log so lineage reaches it; and the bundled feedback pipeline (export → dpo → gate → promote)
runs end to end on a tiny model."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from honing.config.loader import load_config
from honing.config.monitor import MonitorExportConfig
from honing.errors import HoningError
from honing.serve.log import LoggedRequest, RequestLog
from honing.stages.monitor import export

ROOT = Path(__file__).resolve().parents[2]
HONING = [sys.executable, "-m", "honing.cli"]
SYSTEM = {"role": "system", "content": "You are the support bot."}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HONING_USER", "tester")


def _chat(log: RequestLog, request_id: str, question: str, answers: list[str], *, version: str = "bot@1",
          messages: list[dict] | None = None, status: int = 200) -> None:
    log.record(LoggedRequest(
        id=request_id, endpoint="chat", status=status, model=version.partition("@")[0], model_version=version,
        latency_s=0.3, prompt_tokens=9, completion_tokens=5, n=len(answers), finish_reason="stop",
        request={"messages": messages or [SYSTEM, {"role": "user", "content": question}], "n": len(answers)},
        choices=[{"index": i, "text": a, "finish_reason": "stop", "completion_tokens": 5} for i, a in enumerate(answers)]))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def feedback_log(tmp_path) -> Path:
    """One request for each kind of feedback, and the rows that give nothing."""
    path = tmp_path / "requests.sqlite"
    log = RequestLog(path)
    _chat(log, "choice", "How do I reset my password?", ["Use the link on the sign-in page.", "I cannot help."])
    log.feedback("choice", choice=0)
    _chat(log, "corrected", "When does the shop open?", ["At noon."])
    log.feedback("corrected", rating="down", correction="The shop opens at 9:00 on weekdays.")
    _chat(log, "rated", "Can I pay by card?", ["No.", "Yes, every major card works."])
    log.feedback("rated", rating="down", answer_index=0)
    log.feedback("rated", rating="up", answer_index=1)
    _chat(log, "down-only", "Where is my parcel?", ["Somewhere."])
    log.feedback("down-only", rating="down")
    _chat(log, "up-only", "Thanks!", ["You are welcome."])
    log.feedback("up-only", rating="up")
    _chat(log, "both", "Do you ship abroad?", ["Yes.", "No."])
    log.feedback("both", rating="up", answer_index=0)
    log.feedback("both", rating="down", answer_index=0)
    _chat(log, "disagree", "Which plan is cheapest?", ["Basic.", "Pro."])
    log.feedback("disagree", choice=0)
    log.feedback("disagree", choice=1)
    _chat(log, "comment", "Hello", ["Hi there."])
    log.feedback("comment", comment="friendly")
    _chat(log, "tool", "What's the weather?", ["Sunny."],
          messages=[{"role": "user", "content": "What's the weather?"}, {"role": "tool", "content": "{}"}])
    log.feedback("tool", correction="It is sunny and 21 °C.")
    log.record(LoggedRequest(id="completion", endpoint="completions", status=200, model="bot", model_version="bot@1",
                             request={"prompt": "The capital of France is"}, n=1,
                             choices=[{"index": 0, "text": " Berlin.", "finish_reason": "stop", "completion_tokens": 2}]))
    log.feedback("completion", correction=" Paris.")
    _chat(log, "other-model", "Hi", ["Hello.", "Go away."], version="other@2")
    log.feedback("other-model", choice=0)
    log.close()
    return path


def _export(tmp_path: Path, log: Path, *overrides: str) -> dict:
    return export(load_config(MonitorExportConfig, None, [f"log={log}", f"run_dir={tmp_path / 'out'}", *overrides]))


def test_every_kind_of_feedback_gives_its_records_and_the_rest_are_counted(tmp_path, feedback_log):
    result = _export(tmp_path, feedback_log, "model=bot")
    out = tmp_path / "out"
    pairs = {p["provenance"]["request_ids"][0]: p for p in _lines(out / "preferences.jsonl")}
    question = lambda text: [SYSTEM, {"role": "user", "content": text}]
    assert pairs["choice"]["prompt"] == question("How do I reset my password?")
    assert (pairs["choice"]["chosen"], pairs["choice"]["rejected"]) == ("Use the link on the sign-in page.", "I cannot help.")
    assert (pairs["corrected"]["chosen"], pairs["corrected"]["rejected"]) == ("The shop opens at 9:00 on weekdays.", "At noon.")
    assert (pairs["rated"]["chosen"], pairs["rated"]["rejected"]) == ("Yes, every major card works.", "No.")
    assert pairs["completion"]["prompt"] == [{"role": "user", "content": "The capital of France is"}]
    assert set(pairs) == {"choice", "corrected", "rated", "completion"}
    provenance = pairs["rated"]["provenance"]
    assert provenance["sources"] == ["ratings"] and provenance["feedback_ids"] == [4, 3]  # the up, then the down
    assert provenance["model"] == "bot" and provenance["model_version"] == "bot@1" and provenance["endpoint"] == "chat"
    assert provenance["requested_at"] <= provenance["feedback_at"]
    assert pairs["completion"]["provenance"]["endpoint"] == "completions"

    sft = _lines(out / "sft.jsonl")
    assert [r["messages"] for r in sft] == [
        [*question("When does the shop open?"), {"role": "assistant", "content": "The shop opens at 9:00 on weekdays."}],
        [{"role": "user", "content": "The capital of France is"}, {"role": "assistant", "content": " Paris."}]]

    skipped = {row["request_id"]: row["reason"] for row in _lines(out / "skipped.jsonl")}
    assert skipped == {"down-only": "down_only", "up-only": "up_only", "both": "rated_both",
                       "disagree": "choices_disagree", "comment": "comment_only", "tool": "conversation"}
    assert result["preferences"] == 4 and result["sft"] == 2 and result["outside_filter"] == 1
    assert result["skipped"] == {"down_only": 1, "up_only": 1, "rated_both": 2, "choices_disagree": 2,
                                 "comment_only": 1, "conversation": 1}
    assert result["preferences_by_source"] == {"choice": 1, "correction": 2, "ratings": 1}

    record = json.loads((out / "run.json").read_text())
    assert record["stage"] == "monitor-export" and record["status"] == "completed"
    [log_input] = record["inputs"]
    assert log_input["role"] == "request_log" and log_input["path"] == str(feedback_log) and log_input["sha256"] is None
    assert len(log_input["feedback"]) == 14 and "other-model" in log_input["requests"]
    assert set(record["outputs"]) == {"sft", "preferences", "skipped"}
    assert record["export"]["reasons"]["down_only"].startswith("a down-rating with no correction")
    assert record["metrics"]["preferences"] == 4


def test_the_files_load_unchanged_through_dpo_and_sft_data_pipelines(tmp_path, feedback_log, tokenizer):
    from honing.config import DPOConfig, SFTConfig
    from honing.data.prepare import prepare_data
    from honing.stages.dpo import load_pairs

    _export(tmp_path, feedback_log)
    out = tmp_path / "out"
    assert all("provenance" in p for p in _lines(out / "preferences.jsonl"))
    dpo = load_config(DPOConfig, None, [f"data.train={out / 'preferences.jsonl'}", "data.validation_split=0"])
    pairs = load_pairs(dpo, tokenizer)
    assert len(pairs.train) == 5 and not pairs.rejects and pairs.stats["records"] == 5  # + other@2's choice
    assert all(e.chosen.target_tokens > 0 and e.rejected.target_tokens > 0 for e in pairs.train)
    sft = load_config(SFTConfig, None, [f"data.train={out / 'sft.jsonl'}", "data.validation_split=0"])
    data = prepare_data(sft.data, tokenizer, purpose="sft")
    assert data.format == "chat" and len(data.train) == 2 and not data.rejects


def test_the_same_pair_from_several_rows_is_written_once(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    for request_id in ("a", "b"):  # the same question answered the same way twice (greedy), chosen twice
        _chat(log, request_id, "Reset my password", ["Open Settings.", "No."])
        log.feedback(request_id, choice=0)
    log.feedback("a", rating="up", answer_index=0)
    log.feedback("a", rating="down", answer_index=1)
    _chat(log, "same", "Hi", ["Hello!", "Hello!"])
    log.feedback("same", choice=1)
    result = _export(tmp_path, tmp_path / "log.sqlite")
    [pair] = _lines(tmp_path / "out" / "preferences.jsonl")
    assert pair["provenance"]["request_ids"] == ["a", "b"] and pair["provenance"]["feedback_ids"] == [1, 3, 4, 2]
    assert pair["provenance"]["sources"] == ["choice", "ratings"]
    assert result["duplicates_merged"] == 2 and result["skipped"] == {"same_text": 1}


def test_since_and_model_filters(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    _chat(log, "old", "Q1", ["good", "bad"])
    _chat(log, "new", "Q2", ["good", "bad"], version="bot@2")
    log.feedback("old", choice=0)
    time.sleep(0.05)
    cut = _dt.datetime.now(_dt.timezone.utc).isoformat()
    time.sleep(0.05)
    log.feedback("new", choice=0)
    assert _export(tmp_path, tmp_path / "log.sqlite", f"since={cut}")["preferences"] == 1
    [pair] = _lines(tmp_path / "out" / "preferences.jsonl")
    assert pair["provenance"]["request_ids"] == ["new"]
    result = export(load_config(MonitorExportConfig, None, [f"log={tmp_path / 'log.sqlite'}", "model=bot@1",
                                                            f"run_dir={tmp_path / 'only-v1'}"]))
    assert result["preferences"] == 1 and result["outside_filter"] == 1
    assert _lines(tmp_path / "only-v1" / "preferences.jsonl")[0]["provenance"]["request_ids"] == ["old"]


def test_a_log_without_text_exports_nothing_and_says_why(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite", store_text=False)
    _chat(log, "x", "Q", ["a", "b"])
    log.feedback("x", choice=0)
    result = _export(tmp_path, tmp_path / "log.sqlite")
    assert result["preferences"] == 0 and result["skipped"] == {"no_text": 1}


def test_the_command_and_its_one_line_errors(tmp_path, feedback_log):
    run = lambda *args: subprocess.run([*HONING, "monitor", "export", *args], capture_output=True, text=True,
                                       timeout=120, cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})
    done = run(f"log={feedback_log}", "-o", "first")
    assert done.returncode == 0, done.stderr
    assert "exported 2 SFT records and 5 preference pairs" in done.stderr
    again = run(f"log={feedback_log}", "-o", "first")
    assert again.returncode == 1 and "first already holds an export (run.json)" in again.stderr
    assert again.stderr.strip().count("\n") == 0
    missing = run("log=none.sqlite", "-o", "second")
    assert missing.returncode == 1 and "no request log at none.sqlite" in missing.stderr and not (tmp_path / "second").exists()
    with pytest.raises(HoningError, match="give a duration"):
        load_config(MonitorExportConfig, None, ["since=last week"])


# --------------------------------------------------------------------------- the loop


def _tiny(prefix: str, settings: dict) -> list[str]:
    return [f"{prefix}.{key}={json.dumps(value)}" for key, value in settings.items()]


def test_the_bundled_feedback_pipeline_runs_on_a_tiny_model_and_lineage_reaches_the_log(tmp_path, feedback_log,
                                                                                       tiny_model_dir, monkeypatch):
    from honing.config.pipeline import PipelineConfig
    from honing.registry.lineage import build_lineage
    from honing.registry.pipeline import run_pipeline
    from honing.registry.store import Registry

    gate_data = tmp_path / "gate.jsonl"
    gate_data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no")))
    task = {"name": "probe", "data": str(gate_data), "metrics": ["exact_match"], "max_new_tokens": 4, "regression": True}
    monkeypatch.chdir(ROOT)  # the bundled pipelines name their files from the repository root
    overrides = [f"registry.gate.tasks=[{json.dumps(task)}]", "registry.gate.regression_tolerance=1.0",
                 "registry.gate.cache=false", f"output.dir={tmp_path / 'pipe'}",
                 *_tiny("steps.export.overrides", {"log": str(feedback_log), "since": "1h", "model": "bot"}),
                 *_tiny("steps.align.overrides", {"model": {"path": str(tiny_model_dir)}, "data.max_length": 64,
                                                  "data.validation_split": 0, "train.max_steps": 2,
                                                  "train.micro_batch_size": 2, "train.grad_accum": 1,
                                                  "adapter.rank": 4, "output.tensorboard": False})]
    result = run_pipeline(load_config(PipelineConfig, ROOT / "examples" / "pipeline" / "feedback.yaml", overrides))
    assert result["status"] == "completed", result
    with Registry() as registry:
        version = registry.get("support-bot", "production")
    assert version.version == 1
    align = json.loads((Path(version.run_dir) / "run.json").read_text())
    assert align["stage"] == "dpo" and align["data"]["train_examples"] == 4  # bot's four pairs
    graph = build_lineage(f"registry:support-bot@{version.version}")
    logs = [n for n in graph.nodes.values() if n.path == str(feedback_log)]
    assert logs and logs[0].kind == "file"
    assert any(e.role == "request_log" for e in graph.edges if e.upstream == logs[0].id)


def test_a_pair_the_format_refuses_is_listed_even_when_its_row_gave_an_sft_record(tmp_path):
    path = tmp_path / "requests.sqlite"
    log = RequestLog(path)
    _chat(log, "blank", "Say hello.", ["\n\n\n"])  # the model answered only whitespace
    log.feedback("blank", rating="down", correction="Hello! How can I help?")
    log.close()
    _export(tmp_path, path)
    out = tmp_path / "out"
    assert len(_lines(out / "sft.jsonl")) == 1 and _lines(out / "preferences.jsonl") == []
    [skipped] = _lines(out / "skipped.jsonl")
    assert skipped["request_id"] == "blank" and skipped["reason"] == "invalid"
    assert skipped["detail"].startswith("preference record:")
