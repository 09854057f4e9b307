"""The MLflow mirror against a local MLflow store (sqlite in tmp_path, no server, no network): runs with the
training run's params, metrics, tags and artifacts, one model version per honing version, aliases that follow
promote and rollback, and a second mirror that creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from honing.errors import HoningError
from honing.registry import actions
from honing.registry.store import Registry

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow's import starts its telemetry client
mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'honing[mlflow]')")
pytest.importorskip("sqlalchemy", reason="MLflow's sqlite store needs SQLAlchemy (pip install 'honing[mlflow]')")

from honing.registry.mirror import mirror_all, mirror_model  # noqa: E402

from tests.registry.test_registry import runs  # noqa: E402,F401  (the module-scoped fixture: two tiny LoRA runs)

HONING = [sys.executable, "-m", "honing.cli"]


@pytest.fixture(autouse=True)
def _registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.setenv("HONING_USER", "tester")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs_by_ref(client, name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(f"honing/{name}")
    return {run.data.tags["honing.ref"]: run for run in client.search_runs([experiment.experiment_id])}


def test_versions_runs_and_aliases_follow_the_registry(runs, uri, tmp_path):  # noqa: F811
    with Registry() as registry:
        first = actions.register(registry, runs["a"], "bot")
        done = mirror_model(registry, "bot", uri)
        assert (done["runs_created"], done["versions_created"]) == (1, 1)
        actions.register(registry, runs["b"], "bot", alias="candidate")
        assert mirror_model(registry, "bot", uri)["runs_created"] == 1
        actions.promote(registry, "bot", 1, gate=None)
        mirror_model(registry, "bot", uri)
        client = _client(uri)
        assert client.get_model_version_by_alias("bot", "production").tags["honing.version"] == "1"
        actions.promote(registry, "bot", 2, gate=None)
        mirror_model(registry, "bot", uri)
        assert client.get_model_version_by_alias("bot", "production").tags["honing.version"] == "2"
        actions.rollback(registry, "bot", reason="v2 answers worse")
        mirror_model(registry, "bot", uri)

        again = mirror_model(registry, "bot", uri)  # nothing changed: nothing new
        assert again == {"runs_created": 0, "versions_created": 0, "updated": 0,
                         "aliases": {"candidate": 2, "production": 1}}
        assert mirror_all(registry, uri)["bot"]["runs_created"] == 0

    model = client.get_registered_model("bot")
    assert model.aliases == {"candidate": 2, "production": 1}
    versions = client.search_model_versions("name = 'bot'")
    assert sorted(v.tags["honing.ref"] for v in versions) == ["registry:bot@1", "registry:bot@2"]
    by_ref = _runs_by_ref(client, "bot")
    assert sorted(by_ref) == ["registry:bot@1", "registry:bot@2"]
    run = by_ref["registry:bot@1"]
    v1 = next(v for v in versions if v.tags["honing.version"] == "1")
    assert v1.run_id == run.info.run_id and v1.source == run.info.artifact_uri
    assert v1.tags["honing.weights_sha256"] == first.weights_sha256 and v1.tags["honing.status"] == "registered"

    assert run.data.params["train.seed"] == "1" and run.data.params["adapter.rank"] == "4"
    assert "model.path" in run.data.params and "data.train" in run.data.params
    tags = run.data.tags
    assert tags["honing.run_id"] == first.run_id and tags["honing.stage"] == "sft"
    assert tags["honing.weights_sha256"] == first.weights_sha256 and tags["honing.weights_path"] == first.model_path
    assert tags["honing.status"] == "registered" and tags["honing.aliases"] == "production"
    assert run.info.status == "FINISHED"
    final = json.loads((runs["a"] / "run.json").read_text())["metrics"]
    assert run.data.metrics["train_loss"] == pytest.approx(final["train_loss"])
    steps = [json.loads(line) for line in (runs["a"] / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s["step"], pytest.approx(s["loss"])) for s in steps if "loss" in s]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == sum("val_loss" in s for s in steps)
    assert run.data.metrics["tokens_per_s"] == pytest.approx(final["tokens_per_s"])  # the record's, not the last step's
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run.json", "config.yaml"} <= artifacts
    assert not any(a.endswith((".safetensors", ".bin")) for a in artifacts)
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(tmp_path / "mlflow")  # beside the database, not in the working directory
    assert json.loads((artifact_dir / "run.json").read_text())["run_id"] == first.run_id


def test_reject_moves_status_and_removes_aliases_in_mlflow(runs, uri, monkeypatch):  # noqa: F811
    import socket

    dialled = []
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")  # the mirror turns telemetry off itself
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: dialled.append(address))
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot", alias="candidate")
        mirror_model(registry, "bot", uri)
        client = _client(uri)
        client.set_registered_model_alias("bot", "mine", "1")  # set in MLflow by hand: left alone
        actions.reject(registry, "bot", 1, reason="leaks the system prompt")
        done = mirror_model(registry, "bot", uri)
    assert done["runs_created"] == 0 and done["updated"] > 0 and done["aliases"] == {}
    assert client.get_registered_model("bot").aliases == {"mine": 1}
    assert client.get_model_version("bot", "1").tags["honing.status"] == "rejected"
    assert _runs_by_ref(client, "bot")["registry:bot@1"].data.tags["honing.status"] == "rejected"
    assert dialled == []  # no telemetry, no server: nothing but the sqlite file


def test_without_mlflow_the_error_says_what_to_install(runs, uri, monkeypatch):  # noqa: F811
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with Registry() as registry:
        actions.register(registry, runs["a"], "bot")
        with pytest.raises(HoningError, match=r"pip install 'honing\[mlflow\]'"):
            mirror_model(registry, "bot", uri)


def test_the_cli_mirrors_when_mlflow_uri_is_set(runs, uri, tmp_path):  # noqa: F811
    env = {**os.environ, "COLUMNS": "400"}
    out = subprocess.run([*HONING, "registry", "register", str(runs["a"]), "--name", "bot", f"mlflow_uri={uri}"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "registered" in out.stderr and "mlflow" not in out.stderr.lower() and out.stdout == ""
    assert not (tmp_path / "mlruns").exists()
    client = _client(uri)
    assert [v.tags["honing.ref"] for v in client.search_model_versions("name = 'bot'")] == ["registry:bot@1"]
    again = subprocess.run([*HONING, "registry", "mirror", f"mlflow_uri={uri}"], capture_output=True, text=True,
                           timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "bot: 0 runs and 0 model versions created" in again.stderr, again.stderr
    unset = subprocess.run([*HONING, "registry", "mirror"], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    assert unset.returncode == 1 and "set mlflow_uri" in unset.stderr
