"""The registry on real runs of a tiny model: versions, aliases, the gate, rollback, references,
export/import, migrations, two processes at once, and kill -9 in the middle of a move."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from honing.config import SFTConfig, load_config
from honing.config.evaluation import EvalTaskConfig
from honing.config.registry import RegistryGateConfig
from honing.errors import HoningError
from honing.registry import actions
from honing.registry.diff import scores_of
from honing.registry.gate import run_gate
from honing.registry.refs import resolve_ref
from honing.registry.store import SCHEMA_VERSION, Registry

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
HONING = [sys.executable, "-m", "honing.cli"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two finished LoRA runs of the tiny model (different seeds, so different weights)."""
    from honing.stages.sft import sft

    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, seed in (("a", 1), ("b", 2)):
        sft(load_config(SFTConfig, None, [
            f"model.path={tiny_model_dir}", f"data.train={DATA / 'chat.jsonl'}", f"output.dir={root / name}",
            "data.max_length=64", "train.max_steps=2", "train.micro_batch_size=4", f"train.seed={seed}",
            "adapter.rank=4", "output.tensorboard=false"]))
        made[name] = root / name
    return made


@pytest.fixture(autouse=True)
def _registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HONING_USER", "tester")


def _honing(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # one message, one line
    return subprocess.run([*HONING, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _gate_task(tmp_path: Path, **settings) -> RegistryGateConfig:
    data = tmp_path / "gate.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no", "maybe")))
    task = EvalTaskConfig(name="probe", data=str(data), metrics=["exact_match"], max_new_tokens=4,
                          regression=True, **settings.pop("task", {}))
    return RegistryGateConfig(tasks=[task], cache=False, **settings)


# --------------------------------------------------------------------------- versions


def test_register_numbers_versions_and_keeps_the_record(runs):
    with Registry() as registry:
        first = actions.register(registry, runs["a"], "bot", alias="candidate", reason="first try")
        second = actions.register(registry, runs["b"] / "adapter", "bot")  # a model directory inside a run works too
        assert (first.version, second.version) == (1, 2)
        assert first.kind == "adapter" and first.model_path == str((runs["a"] / "adapter").resolve())
        assert first.weights_sha256 != second.weights_sha256
        assert first.record["run_id"] == json.loads((runs["a"] / "run.json").read_text())["run_id"]
        assert "lr" in first.config and registry.get("bot", "candidate").version == 1
        actions_seen = [(e["action"], e["version"], e["who"]) for e in registry.history("bot")]
        assert actions_seen == [("register", 1, "tester"), ("alias", 1, "tester"), ("register", 2, "tester")]
        assert registry.history("bot")[0]["reason"] == "first try"
        with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
            registry.db.execute("DELETE FROM events")
        with pytest.raises(sqlite3.DatabaseError, match="never rewritten"):
            registry.db.execute("UPDATE events SET who = 'someone else'")


def test_bad_registrations_are_one_line_errors(runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["a"], unfinished)
    record = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    tampered = tmp_path / "tampered"
    shutil.copytree(runs["a"], tampered)
    weights = tampered / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert json.loads((runs["a"] / "run.json").read_text())["output_sha256"]["adapter"]
    cases = [(str(tmp_path / "nope"), "bot", "does not exist"), (str(not_a_run), "bot", "not a honing run directory"),
             (str(unfinished), "bot", "did not finish"), (str(runs["a"]), "bad@name", "model name"),
             (str(tampered), "bot", "not the ones the run saved")]
    for path, name, message in cases:
        out = _honing("registry", "register", path, "--name", name)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_show_list_and_diff_through_the_cli(runs):
    assert _honing("registry", "register", str(runs["a"]), "--name", "bot").returncode == 0
    assert _honing("registry", "register", str(runs["b"]), "--name", "bot").returncode == 0
    shown = json.loads(_honing("registry", "show", "bot@2", "--json").stdout)
    assert shown["version"] == 2 and shown["missing"] == [] and shown["history"][0]["action"] == "register"
    listed = json.loads(_honing("registry", "list", "--json").stdout)
    assert [(v["name"], v["version"]) for v in listed] == [("bot", 1), ("bot", 2)]
    changes = json.loads(_honing("registry", "diff", "bot@1", "bot@2", "--json").stdout)
    assert {"key": "train.seed", "a": 1, "b": 2} in changes["config"] and not changes["weights"]["same"]
    for args, message in ((("show", "bot@9"), "no version 9"), (("show", "nope@1"), "no model named 'nope'"),
                          (("show", "bot@staging"), "no alias 'staging'"), (("show", "bot"), "say which version")):
        out = _honing("registry", *args)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


# --------------------------------------------------------------------------- aliases, the gate, rollback


def test_a_failed_gate_rejects_the_candidate_and_leaves_production(runs, tmp_path):
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.register(registry, runs["b"], "bot", alias="candidate")
        actions.promote(registry, "bot", 1, gate=None, reason="the first")
        impossible = _gate_task(tmp_path, task={"min": {"exact_match": 1.0}})  # a random tiny model never gets there
        outcome = actions.promote(registry, "bot", 2, gate=lambda c, p: run_gate(
            registry, c, p, impossible, run_dir=tmp_path / "gate-eval"))
        assert outcome["promoted"] is False and outcome["previous"] == 1 and not outcome["gate"]["passed"]
        assert registry.get("bot", "production").version == 1
        rejected = registry.get("bot", 2)
        assert rejected.status == "rejected" and rejected.aliases == []  # candidate moved off it
        evaluation = registry.attachments("bot", 2, "eval")
        assert len(evaluation) == 1 and evaluation[0]["run_dir"] == str((tmp_path / "gate-eval").resolve())
        assert evaluation[0]["results"]["gate"]["passed"] is False
        last = registry.history("bot")[-1]
        assert last["action"] == "reject" and last["reason"].startswith("gate failed") and last["details"]["gate"]
        with pytest.raises(HoningError, match="was rejected"):
            actions.promote(registry, "bot", 2, gate=None)
    with pytest.raises(HoningError, match="rejected"):
        resolve_ref("registry:bot@2")


def test_a_passing_gate_promotes_and_rollback_goes_back(runs, tmp_path):
    lenient = _gate_task(tmp_path, regression_tolerance=1.0)
    with Registry() as registry:
        for run in ("a", "b", "a"):
            actions.register(registry, runs[run], "bot")
        first = actions.promote(registry, "bot", 1, gate=lambda c, p: run_gate(registry, c, p, lenient))
        assert first["promoted"] and first["gate"]["against"] == "the model it was trained from"
        second = actions.promote(registry, "bot", 2, gate=lambda c, p: run_gate(registry, c, p, lenient))
        assert second["promoted"] and second["previous"] == 1 and second["gate"]["against"] == "production v1"
        actions.promote(registry, "bot", 3, gate=None, reason="hotfix")
        assert actions.rollback(registry, "bot", reason="v3 misbehaves") == {"version": 2, "previous": 3}
        assert actions.rollback(registry, "bot", reason="v2 too") == {"version": 1, "previous": 2}
        with pytest.raises(HoningError, match="nothing to roll back"):
            actions.rollback(registry, "bot", reason="again")
        with pytest.raises(HoningError, match="is production"):
            actions.reject(registry, "bot", 1, reason="no")
        moves = [(e["action"], e["version"], e["from_version"]) for e in registry.history("bot") if e["alias"]]
        assert moves == [("promote", 1, None), ("promote", 2, 1), ("promote", 3, 2), ("rollback", 2, 3),
                         ("rollback", 1, 2)]


def test_a_pipeline_gate_registers_only_after_its_evaluation(runs, tmp_path, monkeypatch):
    from honing.registry import gate as gate_module

    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.promote(registry, "bot", 1, gate=None)
        failing = _gate_task(tmp_path, task={"min": {"exact_match": 1.0}})
        outcome = gate_module.register_through_gate(registry, runs["b"], "bot", failing, eval_dir=tmp_path / "ev1")
        assert outcome == {**outcome, "version": 2, "promoted": False, "previous": 1}
        assert registry.get("bot", 2).status == "rejected" and registry.get("bot", "production").version == 1
        assert registry.history("bot")[-1]["action"] == "reject" and registry.attachments("bot", 2, "eval")
        passing = _gate_task(tmp_path, regression_tolerance=1.0)
        outcome = gate_module.register_through_gate(registry, runs["b"], "bot", passing, eval_dir=tmp_path / "ev2")
        assert outcome["promoted"] and registry.get("bot", "production").version == 3
        before = registry.dump()

        def crash(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(gate_module, "evaluate", crash)
        with pytest.raises(KeyboardInterrupt):
            gate_module.register_through_gate(registry, runs["a"], "bot", passing)
        after = registry.dump()
        assert all(after[t] == before[t] for t in ("versions", "aliases", "events", "attachments"))


def test_moves_are_checked_inside_their_transaction(runs):
    with Registry() as registry:
        for run in ("a", "b"):
            actions.register(registry, runs[run], "bot")
        actions.promote(registry, "bot", 1, gate=None)

        def gate_meanwhile_rejected(candidate, production):  # another process rejects v2 while its gate runs
            with Registry() as other:
                actions.reject(other, "bot", 2, reason="found a leak")
            return {"passed": True, "summary": "ok"}

        with pytest.raises(HoningError, match="v2 was rejected; production stays on v1"):
            actions.promote(registry, "bot", 2, gate=gate_meanwhile_rejected)
        assert registry.get("bot", "production").version == 1
        with pytest.raises(HoningError, match="is production"):
            registry.set_status("bot", 1, "rejected", action="reject", reason="x")  # the check is in the transaction


def test_rollback_never_lands_on_the_version_it_leaves(runs):
    with Registry() as registry:
        for run in ("a", "b"):
            actions.register(registry, runs[run], "bot")
        for number in (1, 2, 1):
            actions.promote(registry, "bot", number, gate=None)
        actions.reject(registry, "bot", 2, reason="bad")
        with pytest.raises(HoningError, match="nothing to roll back"):
            actions.rollback(registry, "bot", reason="again")


def test_a_gate_that_checks_nothing_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="checks nothing"):
        RegistryGateConfig(tasks=[EvalTaskConfig(name="t", data="builtin:quickstart")])


def test_careless_names_and_imports_are_one_line(runs, tmp_path):
    assert _honing("registry", "register", str(runs["a"]), "--name", "bot").returncode == 0
    cases = [(("registry", "show", "bot@²"), "no alias '²'"),
             (("registry", "register", str(runs["a"]), "--name", "x\ty"), "model name"),
             (("registry", "alias", "bot", "é", "1"), "alias 'é'")]
    for number, (shape, message) in enumerate([({"versions": 5}, "not a list of rows"),
                                               ({"models": [{"name": "m", "nope": 1}]}, "unknown column(s) 'nope'"),
                                               ({"versions": [{"name": "m", "record": "{bad"}]}, "record must be JSON")]):
        export = tmp_path / f"bad{number}.json"
        export.write_text(json.dumps({"format": "honing-registry", "schema_version": SCHEMA_VERSION, **shape}))
        cases.append((("registry", "import", str(export), f"path={tmp_path / f'new{number}.sqlite'}"), message))
    for args, message in cases:
        out = _honing(*args)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not list(tmp_path.glob("new*.sqlite*"))  # a failed import leaves no empty registry behind


def test_the_cli_promote_exits_3_on_a_failed_gate(runs, tmp_path):
    data = tmp_path / "gate.jsonl"
    data.write_text(json.dumps({"prompt": "Say yes.", "answer": "yes"}) + "\n")
    assert _honing("registry", "register", str(runs["a"]), "--name", "bot").returncode == 0
    assert _honing("registry", "promote", "bot", "1", "--no-gate", "--reason", "seed").returncode == 0
    assert _honing("registry", "register", str(runs["b"]), "--name", "bot").returncode == 0
    out = _honing("registry", "promote", "bot", "2", "--eval-dir", str(tmp_path / "ev"),
                  f"gate.tasks=[{{name: probe, data: {data}, metrics: [exact_match], max_new_tokens: 4, "
                  "min: {exact_match: 1.0}}]", "gate.cache=false")
    assert out.returncode == 3 and "gate failed" in out.stderr and "production stays on v1" in out.stderr, out.stderr
    assert json.loads(_honing("registry", "show", "bot@production", "--json").stdout)["version"] == 1


# --------------------------------------------------------------------------- references


def test_registry_references_load_wherever_a_model_is_named(runs, tmp_path):
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.promote(registry, "bot", 1, gate=None)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hello"}) + "\n")
    out = _honing("generate", str(prompts), "-o", str(tmp_path / "answers.jsonl"), "model.path=registry:bot@production",
                  "sampling.max_new_tokens=3")
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 1
    for ref, message in (("registry:nope@9", "no model named 'nope'"), ("registry:bot@9", "no version 9"),
                         ("registry:bot@staging", "no alias 'staging'"), ("registry:bot@1@2", "not a registry reference")):
        out = _honing("generate", str(prompts), "-o", str(tmp_path / "x.jsonl"), f"model.path={ref}")
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "x.jsonl").exists()


def test_an_eval_of_a_registered_model_attaches_itself_pinned_to_the_version(runs, tmp_path):
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.promote(registry, "bot", 1, gate=None)
        actions.register(registry, runs["b"], "bot")
    task = _gate_task(tmp_path).tasks[0]
    relative = os.path.relpath(runs["b"], tmp_path)  # as typed, from where the eval runs
    out = _honing("eval", f"models=[{{name: served, path: 'registry:bot@production', role: base}}, "
                  f"{{name: other, path: {relative}}}]",
                  f"tasks=[{{name: probe, data: {task.data}, metrics: [exact_match], max_new_tokens: 4}}]",
                  f"output.dir={tmp_path / 'ev'}", "cache=false", cwd=tmp_path)
    assert out.returncode == 0 and "attached to bot@1" in out.stderr, out.stderr
    record = json.loads((tmp_path / "ev" / "run.json").read_text())
    assert [i["registry"] for i in record["inputs"] if i["role"] == "model_served"] == ["bot@1"]
    with Registry() as registry:
        attached = registry.attachments("bot", 1, "eval")
        assert [a["run_id"] for a in attached] == [record["run_id"]]
        assert "served" in attached[0]["results"]["scores"]
        assert set(scores_of(registry, registry.get("bot", 1))) == {"probe · exact_match"}
        registry.attach("bot", 2, actions.attachment(tmp_path / "ev"))  # v2 was the other model (named by a relative path)
        results = json.loads((tmp_path / "ev" / "results.json").read_text())["scores"]
        for number, model in ((1, "served"), (2, "other")):
            score = scores_of(registry, registry.get("bot", number))["probe · exact_match"]
            assert score["mean"] == results[model]["probe"]["exact_match"]["mean"]


def test_a_training_run_from_a_registered_model_records_the_reference(runs, tiny_model_dir, tmp_path):
    from honing.runs import find_parent_run

    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
    parent = find_parent_run("registry:bot@1")
    assert parent["dir"] == str(runs["a"].resolve()) and parent["registry"] == "bot@1"


def test_changed_or_missing_weights_are_refused_but_show_still_answers(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["a"], copy)
    with Registry() as registry:
        actions.register(registry, copy, "bot")
    weights = copy / "adapter" / "adapter_model.safetensors"
    stat = weights.stat()
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later edit (mtimes can be coarse)
    with pytest.raises(HoningError, match="changed since"):
        resolve_ref("registry:bot@1")
    shutil.rmtree(copy)
    with pytest.raises(HoningError, match="no longer exist"):
        resolve_ref("registry:bot@1")
    shown = _honing("registry", "show", "bot@1")
    assert shown.returncode == 0 and "missing: run directory" in shown.stdout and "sha256" in shown.stdout


# --------------------------------------------------------------------------- export, import, schema


def test_export_and_import_round_trip(runs, tmp_path, monkeypatch):
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.promote(registry, "bot", 1, gate=None, reason="r")
        before = registry.dump()
    assert _honing("registry", "export", str(tmp_path / "backup.json")).returncode == 0
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "restored.sqlite"))
    assert _honing("registry", "import", str(tmp_path / "backup.json")).returncode == 0
    with Registry() as restored:
        after = restored.dump()
    for table in ("models", "versions", "attachments", "aliases", "events"):
        assert after[table] == before[table]
    again = _honing("registry", "import", str(tmp_path / "backup.json"))
    assert again.returncode == 1 and "not empty" in again.stderr
    (tmp_path / "junk.json").write_text("{not json")
    junk = _honing("registry", "import", str(tmp_path / "junk.json"), f"path={tmp_path / 'other.sqlite'}")
    assert junk.returncode == 1 and "not valid JSON" in junk.stderr


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    with Registry(path) as registry:
        assert registry.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HoningError, match="newer than this honing"):
        Registry(path)
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(HoningError, match="not a readable registry"):
        Registry(tmp_path / "garbage.sqlite")


# --------------------------------------------------------------------------- two processes, kill -9

_REGISTER_MANY = """
import sys
from honing.registry import actions
from honing.registry.store import Registry
with Registry() as registry:
    for _ in range(int(sys.argv[2])):
        actions.register(registry, sys.argv[1], "bot")
"""


def test_two_processes_registering_at_once_corrupt_nothing(runs):
    workers = [subprocess.Popen([sys.executable, "-c", _REGISTER_MANY, str(runs[r]), "6"], env=os.environ.copy())
               for r in ("a", "b")]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    with Registry() as registry:
        versions = registry.versions("bot")
        assert [v.version for v in versions] == list(range(1, 13))
        assert sum(v.run_dir == str(runs["a"].resolve()) for v in versions) == 6
        assert [e["version"] for e in registry.history("bot")] == list(range(1, 13))
        assert registry.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_PROMOTE_FOREVER = """
import sys
from honing.registry import actions
from honing.registry.store import Registry
with Registry() as registry:
    print("ready", flush=True)
    while True:
        for version in (2, 1):
            actions.promote(registry, "bot", version, gate=None, reason="churn")
"""


def test_kill_9_during_promote_leaves_the_alias_on_one_valid_version(runs):
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        actions.register(registry, runs["b"], "bot")
        actions.promote(registry, "bot", 1, gate=None)
    for delay in (0.3, 0.75, 1.2):
        worker = subprocess.Popen([sys.executable, "-c", _PROMOTE_FOREVER], stdout=subprocess.PIPE, text=True,
                                  env=os.environ.copy())
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(delay)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        with Registry() as registry:
            assert registry.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            production = registry.get("bot", "production")
            last_move = [e for e in registry.history("bot") if e["alias"] == "production"][-1]
            assert production.version in (1, 2) and last_move["version"] == production.version
