"""`honing monitor` on request logs written by the server's own writer (RequestLog): per-version numbers equal
what is computed by hand from the rows, the window and model filters hold, drift is found through the registry
and the run records of a real fine-tune (and says which file is gone when one is), KS matches scipy, and the
shadow evaluation re-runs the registered gate tasks through a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from honing.config.loader import load_config
from honing.config.monitor import MonitorConfig, parse_since
from honing.errors import ConfigError
from honing.redteam.detectors import find_refusal
from honing.serve import drift
from honing.serve.log import LoggedRequest, RequestLog
from honing.stages.monitor import monitor
from tests.fake_openai import serve as fake_openai

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "data" / "chat.jsonl"
HONING = [sys.executable, "-m", "honing.cli"]
NOW = time.time()
ANSWERS = ["I'm sorry, but I can't help with that.", "Sure: open Settings, then Security.", "", "Your order ships today."]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HONING_USER", "tester")


def _request(i: int, version: str, *, status: int = 200, created: float, prompt: str = "Where is my order?",
             **fields) -> LoggedRequest:
    answer = ANSWERS[i % len(ANSWERS)]
    return LoggedRequest(
        id=f"{version}-{i}", endpoint="chat", status=status, created=created, model=version.partition("@")[0],
        model_version=version, error=None if status == 200 else ("rate_limit_exceeded" if status == 429 else "invalid_request_error"),
        latency_s=0.2 + 0.05 * i if status == 200 else 0.001, first_token_s=0.05 + 0.01 * i if status == 200 else None,
        prompt_tokens=12, completion_tokens=8 + i if status == 200 else 0, finish_reason="stop" if status == 200 else None,
        request={"messages": [{"role": "user", "content": prompt}], "temperature": 0.0},
        choices=[{"index": 0, "text": answer, "finish_reason": "stop", "completion_tokens": 8 + i}] if status == 200 else None,
        **fields)


def _log(path: Path, entries: list[LoggedRequest]) -> RequestLog:
    log = RequestLog(path, redact_pii=False)
    for entry in entries:
        log.record(entry)
    return log


def _report(tmp_path: Path, *overrides: str) -> dict:
    result = monitor(load_config(MonitorConfig, None, [f"output={tmp_path / 'report'}", *overrides]))
    return json.loads(Path(result["facts"]).read_text())


def test_every_number_per_version_is_the_logs(tmp_path):
    entries = [_request(i, "bot@1", created=NOW - 7200 + 60 * i, status=429 if i in (3, 7) else 200) for i in range(20)]
    entries += [_request(i, "bot@2", created=NOW - 3600 + 60 * i, status=400 if i == 0 else 200) for i in range(10)]
    log = _log(tmp_path / "log.sqlite", entries)
    log.feedback("bot@1-1", rating="up")
    log.feedback("bot@1-2", rating="down", correction="Your order ships tomorrow.")
    log.feedback("bot@2-4", rating="down", comment="rude")
    facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}")

    assert list(facts["versions"]) == ["bot@1", "bot@2"]
    one = facts["versions"]["bot@1"]
    answered = [e for e in entries[:20] if e.status == 200]
    assert (one["requests"], one["answered"], one["model"]) == (20, 18, "bot")
    latencies = [e.latency_s for e in answered]
    for point in (50, 95, 99):
        assert one["latency_s"][f"p{point}"] == pytest.approx(np.percentile(latencies, point))
    assert one["first_token_s"]["p95"] == pytest.approx(np.percentile([e.first_token_s for e in answered], 95))
    speeds = [e.completion_tokens / e.latency_s for e in answered]
    assert one["tokens_per_s"]["median"] == pytest.approx(np.median(speeds))
    assert one["tokens_per_s"]["overall"] == pytest.approx(sum(e.completion_tokens for e in answered) / sum(latencies))
    assert one["errors"]["count"] == 2 and one["errors"]["by_kind"] == [
        {"status": 429, "type": "rate_limit_exceeded", "count": 2, "share": 0.1}]
    assert one["errors"]["rate"]["mean"] == pytest.approx(0.1)
    refused = sum(find_refusal(e.choices[0]["text"])[0] for e in answered)
    assert refused == sum(ANSWERS.index(e.choices[0]["text"]) in (0, 2) for e in answered)  # the sorry and the empty one
    assert (one["refusals"]["answers"], one["refusals"]["refused"]) == (18, refused)
    assert one["refusals"]["rate"]["mean"] == pytest.approx(refused / 18)
    assert one["refusals"]["rate"]["low"] <= refused / 18 <= one["refusals"]["rate"]["high"]
    assert {k: one["feedback"][k] for k in ("up", "down", "corrections", "comments", "requests")} == {
        "up": 1, "down": 1, "corrections": 1, "comments": 0, "requests": 2}
    assert sum(one["traffic"]["counts"]) == 20 and sum(one["traffic"]["errors"]) == 2
    assert one["traffic"]["bucket_s"] == 300  # two hours of traffic: 5-minute bins (at most 48)
    two = facts["versions"]["bot@2"]
    assert two["errors"]["by_kind"][0]["status"] == 400 and two["feedback"]["comments"] == 1
    assert len(two["traffic"]["counts"]) == len(one["traffic"]["counts"])  # one time axis for every version

    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Version bot@1" in markdown and "| 429 | rate_limit_exceeded | 2 | 10.0% |" in markdown
    assert "no registry at" in markdown  # drift says why it has nothing to compare with
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<script" not in html and "http" not in html.split("<body>")[1].replace("http://www.w3.org", "")
    svgs = [part.split("</svg>")[0] + "</svg>" for part in html.split("<svg")[1:]]
    assert len(svgs) >= 4
    for svg in svgs:
        ET.fromstring("<svg" + svg)  # every chart is well-formed markup


def test_the_window_and_the_model_filter(tmp_path):
    entries = [_request(i, "bot@1", created=NOW - 3 * 86400 + i) for i in range(5)]
    entries += [_request(i, "bot@2", created=NOW - 600 + i) for i in range(4)]
    entries += [_request(i, "other@1", created=NOW - 300 + i) for i in range(3)]
    _log(tmp_path / "log.sqlite", entries)
    log = f"log={tmp_path / 'log.sqlite'}"
    assert list(_report(tmp_path, log, "since=24h")["versions"]) == ["bot@2", "other@1"]
    assert list(_report(tmp_path, log, "model=bot")["versions"]) == ["bot@1", "bot@2"]
    assert list(_report(tmp_path, log, "model=bot@2")["versions"]) == ["bot@2"]
    day = _dt.datetime.fromtimestamp(NOW - 86400, _dt.timezone.utc).date().isoformat()
    assert list(_report(tmp_path, log, f"since={day}", "model=bot")["versions"]) == ["bot@2"]
    empty = _report(tmp_path, log, "model=nobody")
    assert empty["versions"] == {}
    assert "No request in this window" in (tmp_path / "report" / "report.md").read_text()


def test_since_reads_durations_and_dates():
    assert parse_since("24h", 1_000_000.0) == 1_000_000.0 - 86400
    assert parse_since("30m", 5000.0) == 3200.0
    assert parse_since("2w", 2_000_000.0) == 2_000_000.0 - 14 * 86400
    assert parse_since("2025-05-01", 0) == _dt.datetime(2025, 5, 1, tzinfo=_dt.timezone.utc).timestamp()
    assert parse_since("2025-05-01T09:00+02:00", 0) == _dt.datetime(2025, 5, 1, 7, tzinfo=_dt.timezone.utc).timestamp()
    with pytest.raises(ConfigError, match="since='yesterday': give a duration"):
        load_config(MonitorConfig, None, ["since=yesterday"])
    with pytest.raises(ConfigError, match="shadow=true needs endpoint"):
        load_config(MonitorConfig, None, ["shadow=true"])
    assert load_config(MonitorConfig, None, ["since=2025-05-01"]).since == "2025-05-01"  # YAML's date, kept as text


# --------------------------------------------------------------------------- statistics


def test_ks_statistic_and_p_value_match_scipy():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    for a, b in ((rng.poisson(12, 300), rng.poisson(14, 200)), (rng.poisson(9, 50), rng.poisson(9, 80)),
                 ([1, 2, 2, 3, 3, 3], [2, 3, 4, 4, 5])):
        statistic, p_value = drift.ks_two_sample([float(x) for x in a], [float(x) for x in b])
        reference = ks_2samp(a, b, method="asymp")
        assert statistic == pytest.approx(reference.statistic, abs=1e-12)
        if len(a) >= 50:  # both are approximations of the exact p-value; they agree once the samples are not tiny
            assert p_value == pytest.approx(reference.pvalue, abs=0.03)
            assert p_value == pytest.approx(ks_2samp(a, b, method="exact").pvalue, abs=0.03)


def test_psi_and_jensen_shannon_by_hand():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert drift.psi([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * np.log(0.8 / 0.5) - 0.3 * np.log(0.2 / 0.5))
    same = drift.ngram_counts(["refund my order", "order status"])
    assert drift.js_divergence(same, same) == 0.0
    assert drift.js_divergence(drift.ngram_counts(["refund refund"]), drift.ngram_counts(["weather"])) == pytest.approx(1.0)
    assert drift.ngrams("Where is the <EMAIL> order?") == ["order", "the order"]  # no placeholder, no "where is"
    edges = drift.decile_edges([float(x) for x in range(1, 101)])
    assert edges == [11.0, 21.0, 31.0, 41.0, 51.0, 61.0, 71.0, 81.0, 91.0]
    assert drift.shares([float(x) for x in range(1, 101)], edges) == [0.1] * 10


# --------------------------------------------------------------------------- lineage, drift and shadow


@pytest.fixture(scope="module")
def registered(tiny_model_dir, tmp_path_factory):
    """A real LoRA fine-tune of the tiny model on examples/data/chat.jsonl (a copy), registered as bot v1 through the
    gate on a generation task and a multiple-choice one (its gate evaluation attached)."""
    from honing.config import SFTConfig
    from honing.config.evaluation import EvalTaskConfig
    from honing.config.registry import RegistryGateConfig
    from honing.registry.gate import register_through_gate
    from honing.registry.store import Registry
    from honing.stages.sft import sft

    root = tmp_path_factory.mktemp("lineage")
    data = root / "train.jsonl"
    data.write_text(CHAT.read_text())
    run_dir = root / "runs" / "sft-bot"
    sft(load_config(SFTConfig, None, [
        f"model.path={tiny_model_dir}", f"data.train={data}", f"output.dir={run_dir}", "data.max_length=64",
        "train.max_steps=2", "train.micro_batch_size=4", "adapter.rank=4", "output.tensorboard=false"]))
    gen = root / "say.jsonl"
    gen.write_text("".join(json.dumps({"prompt": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no", "maybe", "ok")))
    mc = root / "mc.jsonl"
    mc.write_text(json.dumps({"question": "2 + 2 =", "choices": ["4", "5"], "answer": 0}) + "\n")
    gate = RegistryGateConfig(tasks=[EvalTaskConfig(name="say", data=str(gen), metrics=["exact_match"], max_new_tokens=4,
                                                    regression=True),
                                     EvalTaskConfig(name="facts", kind="multiple_choice", data=str(mc), regression=True)],
                              regression_tolerance=1.0, cache=False)
    registry_path = root / "registry.sqlite"
    with Registry(registry_path) as registry:
        outcome = register_through_gate(registry, run_dir, "bot", gate, eval_dir=root / "runs" / "gate-eval")
    assert outcome["version"] == 1
    return {"run_dir": run_dir, "data": data, "registry": registry_path, "gate_eval": root / "runs" / "gate-eval"}


SERVED = ["What is the weather forecast for Paris tomorrow?", "Will it rain in Paris this weekend?",
          "Weather forecast for Lyon, please.", "Is the weather in Paris sunny tomorrow?"]


def test_drift_is_found_through_the_registry_and_the_run_record(tmp_path, registered):
    _log(tmp_path / "log.sqlite", [_request(i, "bot@1", created=NOW - 100 + i, prompt=SERVED[i % 4]) for i in range(12)])
    facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", f"registry={registered['registry']}")
    found = facts["versions"]["bot@1"]["drift"]
    assert [f["path"] for f in found["files"]] == [str(registered["data"])] and found["missing"] == []
    assert found["files"][0]["stage"] == "sft" and not found["files"][0]["changed"]
    assert any("bot@1 → run" in step for step in found["trail"])

    from honing.data.loading import load_dataset_file

    records, _, _ = load_dataset_file(registered["data"])
    training = [drift.user_text(r["messages"]) for r in records]
    lengths = [float(len(t.split())) for t in training]
    served = [float(len(SERVED[i % 4].split())) for i in range(12)]
    assert found["served_prompts"] == 12 and found["training_prompts"] == len(training)
    assert found["length"]["served"]["n"] == 12 and found["length"]["training"]["mean"] == pytest.approx(np.mean(lengths))
    assert found["length"]["ks"]["statistic"] == pytest.approx(drift.ks_two_sample(served, lengths)[0])
    assert found["length"]["psi"] == pytest.approx(drift.psi(*[drift.shares(v, drift.decile_edges(lengths))
                                                               for v in (lengths, served)]))
    topic = found["topic"]
    assert topic["js_divergence"] > topic["noise_floor"]  # weather questions are not the training's arithmetic
    top = [g["ngram"] for g in topic["over_represented"]]
    assert "weather" in top and "paris" in top and all(g["served"] >= 3 for g in topic["over_represented"])
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Kolmogorov–Smirnov D" in markdown and "| weather |" in markdown

    # The file moved away: the report names it and says it is gone, instead of failing.
    moved = registered["data"].with_suffix(".moved")
    registered["data"].rename(moved)
    try:
        gone = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", f"registry={registered['registry']}")
    finally:
        moved.rename(registered["data"])
    missing = gone["versions"]["bot@1"]["drift"]["missing"]
    assert missing == [f"the training data {registered['data']} (data_train of the sft run "
                       f"{registered['run_dir'].resolve()}) is gone"]
    assert "No comparison: no training prompts: the training data" in (tmp_path / "report" / "report.md").read_text()


def test_drift_of_a_path_version_and_of_given_files(tmp_path, registered):
    adapter = registered["run_dir"] / "adapter"
    _log(tmp_path / "log.sqlite", [_request(i, str(adapter), created=NOW - 50 + i, prompt=SERVED[i % 4]) for i in range(6)]
         + [_request(i, "plain", created=NOW - 40 + i) for i in range(3)])
    facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}")
    assert facts["versions"][str(adapter)]["drift"]["files"][0]["path"] == str(registered["data"])
    plain = facts["versions"]["plain"]["drift"]
    assert "not a registered version (NAME@V) and not inside a honing run directory" in plain["missing"][0]
    given = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", "model=plain", f"training_data=[{CHAT}]")
    assert given["versions"]["plain"]["drift"]["training_prompts"] > 0 and "length" in given["versions"]["plain"]["drift"]


def test_shadow_evaluation_through_a_real_server(tmp_path, registered, monkeypatch):
    from honing.registry.store import Registry

    answers = {f"Say {w}.": w for w in ("yes", "no", "maybe", "ok")}

    def reply(body: dict) -> str:  # the served model answers every gate prompt right
        return answers.get(body["messages"][-1]["content"], "?")

    _log(tmp_path / "log.sqlite", [_request(i, "bot@1", created=NOW - 30 + i) for i in range(3)])
    monkeypatch.setenv("HONING_TEST_SERVE_KEY", "k-123")
    with fake_openai(reply) as (handler, url):
        facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", f"registry={registered['registry']}", "shadow=true",
                        f"endpoint={url}/v1", "api_key_env=HONING_TEST_SERVE_KEY")
    shadow = facts["versions"]["bot@1"]["shadow"]
    assert shadow["endpoint_model"] == "bot" and shadow["registered_model"] == "candidate"
    assert shadow["skipped"] == {"facts": "multiple_choice needs log-likelihoods, which an endpoint does not give"}
    assert {r["body"]["model"] for r in handler.requests} == {"bot"} and len(handler.requests) == 4
    assert {r["authorization"] for r in handler.requests} == {"Bearer k-123"}
    [row] = shadow["rows"]
    with Registry(registered["registry"]) as registry:
        [attached] = registry.attachments("bot", 1, "eval")
    registered_score = attached["results"]["scores"]["candidate"]["say"]["exact_match"]
    assert row["task"] == "say" and row["metric"] == "exact_match" and row["primary"]
    assert row["registered"] == registered_score and row["served"]["mean"] == 1.0
    assert row["difference"] == pytest.approx(1.0 - registered_score["mean"])
    expected = "served higher" if registered_score["high"] < 1.0 else "intervals overlap"
    assert row["verdict"] == expected
    eval_record = json.loads((Path(shadow["eval_run"]) / "run.json").read_text())
    assert eval_record["stage"] == "eval" and eval_record["status"] == "completed"
    assert Path(shadow["eval_run"]).parent == tmp_path / "report"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Shadow evaluation" in markdown and "skipped facts: multiple_choice needs log-likelihoods" in markdown


def test_shadow_without_a_registered_version_or_gate_says_so(tmp_path, registered):
    _log(tmp_path / "log.sqlite", [_request(i, "plain", created=NOW - 30 + i) for i in range(2)]
         + [_request(i, "bot@7", created=NOW - 20 + i) for i in range(2)])
    facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", "model=plain", "shadow=true",
                    "endpoint=http://127.0.0.1:9/v1")
    assert "no version in this window is a registered one" in facts["versions"]["plain"]["shadow"]["unavailable"]
    facts = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", f"registry={registered['registry']}", "shadow=true",
                    "endpoint=http://127.0.0.1:9/v1")
    assert "bot has no version 7" in facts["versions"]["bot@7"]["shadow"]["unavailable"]


def test_a_log_without_text_reports_numbers_and_no_drift(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite", store_text=False)
    for i in range(4):
        log.record(_request(i, "bot@1", created=NOW - 10 + i))
    one = _report(tmp_path, f"log={tmp_path / 'log.sqlite'}", f"training_data=[{CHAT}]")["versions"]["bot@1"]
    assert one["answered"] == 4 and one["refusals"]["answers"] == 0 and one["refusals"]["without_text"] == 4
    assert one["drift"]["unavailable"].startswith("no served prompt text in the log")


# --------------------------------------------------------------------------- the command


def _honing(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*HONING, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "COLUMNS": "400"})


def test_the_command_its_help_and_its_errors(tmp_path):
    _log(tmp_path / "log.sqlite", [_request(i, "bot@1", created=NOW - 10 + i) for i in range(3)])
    done = _honing("monitor", "log=log.sqlite", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bot@1: 3 requests" in done.stderr and (tmp_path / "out" / "report.html").is_file()
    missing = _honing("monitor", "log=nowhere.sqlite", "-o", "out2", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "no request log at nowhere.sqlite" in missing.stderr and not (tmp_path / "out2").exists()
    code = ("import sys; from click.testing import CliRunner; from honing.cli import cli; "
            "a = CliRunner().invoke(cli, ['monitor', '--help']).output; "
            "b = CliRunner().invoke(cli, ['monitor', 'export', '--help']).output; "
            "print(a); print('=====', b); assert 'torch' not in sys.modules")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    report_help, export_help = shown.stdout.split("=====")
    assert "shadow: bool = false" in report_help and "export  Turn the feedback" in report_help
    assert "run_dir: str | None = null" in export_help and "shadow" not in export_help


def test_drift_reads_a_grounded_request_as_the_question_the_client_asked():
    from honing.rag.ask import rag_prompt
    from honing.rag.search import Hit
    from honing.serve.drift import served_prompt

    hit = Hit({"id": "manual.md#0", "text": "Hold the button for ten seconds."}, 1.0)
    seen = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": rag_prompt("How do I reset it?", [hit])}]}
    assert served_prompt(seen, grounded=True) == "How do I reset it?"
    assert "ten seconds" in served_prompt(seen)  # a request without sources is read whole
    assert served_prompt({"prompt": rag_prompt("Why?", [hit])}, grounded=True) == "Why?"
    plain = {"messages": [{"role": "user", "content": "Question: no context here"}]}
    assert served_prompt(plain, grounded=True) == "Question: no context here"
