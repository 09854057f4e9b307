"""Mirror the registry into MLflow (the optional `mlflow` extra), for teams whose dashboards live there.

honing's registry stays the source of truth; MLflow gets a read-only copy, rewritten after every change
(registry.mlflow_uri) or on demand (mirror_all):

    honing                               MLflow
    model NAME                           experiment honing/NAME, and registered model NAME
    version V (its training run)         a run NAME-vV: params = the flattened config.yaml, metrics = the
                                         record's final metrics (+ metrics.jsonl step by step, + attached
                                         eval scores), tags honing.*, artifacts run.json, config.yaml and
                                         the attached eval/redteam reports (never the weights: their path
                                         and sha256 are tags)
                                         model version (source = that run's artifact URI), tags honing.*
    alias (production, candidate, …)     alias of the registered model, moved and removed with honing's

Every MLflow object carries the tag honing.ref = registry:NAME@V, which is how a second call finds what
the first made: a version is created once, and later calls only update what can change (status, aliases,
newly attached evaluations). Nothing here talks to the network beyond the URI given, and MLflow's
telemetry is off.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.registry.diff import config_of, metrics_of, scores_of
from honing.registry.store import Registry, Version

INSTALL = "pip install 'honing[mlflow]'"
REF = "honing.ref"
MIRRORED_ALIASES = "honing.mirrored_aliases"
"""Registered-model tag: the aliases honing set, so aliases made in MLflow by hand are left alone."""
ARTIFACT_LIMIT = 5 * 1024 * 1024
"""Files larger than this (bytes) are not uploaded; the run's tag honing.artifacts_skipped names them."""
REPORT_FILES = ("run.json", "results.json", "report.md", "report.html")
PARAM_VALUE_LIMIT = 6000
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
          "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_LOGGING_LEVEL": "WARNING"}


def client(uri: str):
    """An MlflowClient on `uri` (tracking store and Model Registry), quiet and without telemetry."""
    if importlib.util.find_spec("mlflow") is None:
        raise HoningError(f"registry.mlflow_uri is set but MLflow is not installed: {INSTALL}")
    if uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql") and \
            importlib.util.find_spec("sqlalchemy") is None:
        raise HoningError(f"an MLflow database store ({uri}) needs SQLAlchemy and alembic: {INSTALL}")
    if uri.startswith("sqlite:///"):
        _database(uri).parent.mkdir(parents=True, exist_ok=True)
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
    import mlflow
    from mlflow import MlflowClient
    from packaging.version import Version as V

    if V(mlflow.__version__) < V("3"):
        raise HoningError(f"the MLflow mirror needs MLflow 3 or newer (found {mlflow.__version__}): {INSTALL}")
    level = logging.getLevelName(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level if isinstance(level, int) else logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def mirror_all(registry: Registry, uri: str) -> dict[str, dict[str, Any]]:
    """Mirror every model of the registry; {name: what mirror_model did}."""
    return {name: mirror_model(registry, name, uri) for name in registry.names()}


def mirror_model(registry: Registry, name: str, uri: str) -> dict[str, Any]:
    """Bring MLflow up to date with every version and alias of `name`. Safe to call after every change:
    returns {"runs_created", "versions_created", "updated", "aliases"} (counts, and alias → version)."""
    mlflow_client = client(uri)
    from mlflow.exceptions import MlflowException

    try:
        return _mirror(mlflow_client, registry, name, uri)
    except MlflowException as err:
        first = str(err.message if hasattr(err, "message") else err).strip().splitlines()[0]
        raise HoningError(f"the registry change is saved, but mirroring {name} into MLflow ({uri}) failed: {first}; "
                          "fix it and mirror again") from None


def _mirror(mlflow_client, registry: Registry, name: str, uri: str) -> dict[str, Any]:
    versions = registry.versions(name)
    experiment_id = _experiment(mlflow_client, name, uri)
    runs = {run.data.tags[REF]: run for run in _runs(mlflow_client, experiment_id)}
    _registered_model(mlflow_client, name)
    model_versions = {mv.tags[REF]: mv for mv in _model_versions(mlflow_client, name)}
    done = {"runs_created": 0, "versions_created": 0, "updated": 0, "aliases": {}}
    numbers: dict[int, int] = {}
    for version in versions:
        run = runs.get(version.ref)
        if run is None:
            run = _create_run(mlflow_client, registry, experiment_id, version)
            done["runs_created"] += 1
        else:
            done["updated"] += _update_run(mlflow_client, registry, run, version)
        model_version = model_versions.get(version.ref)
        if model_version is None:
            model_version = mlflow_client.create_model_version(
                name, run.info.artifact_uri, run.info.run_id, tags=_version_tags(version),
                description=f"{version.ref}: the {version.kind} of {version.stage or 'a'} run {version.run_id}")
            done["versions_created"] += 1
        else:
            for key, value in _version_tags(version).items():
                if model_version.tags.get(key) != value:
                    mlflow_client.set_model_version_tag(name, model_version.version, key, value)
                    done["updated"] += 1
        numbers[version.version] = int(model_version.version)
    done["aliases"] = _aliases(mlflow_client, name, registry.aliases(name), numbers)
    return done


# --------------------------------------------------------------------------- finding what exists


def _experiment(mlflow_client, name: str, uri: str) -> str:
    experiment_name = f"honing/{name}"
    found = mlflow_client.get_experiment_by_name(experiment_name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    return mlflow_client.create_experiment(experiment_name, artifact_location=_artifact_location(uri, name),
                                           tags={"honing.name": name})


def _artifact_location(uri: str, name: str) -> str | None:
    """Beside a local sqlite database (mlartifacts/NAME), not in whatever directory honing ran from; a server
    chooses its own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (_database(uri).parent / "mlartifacts" / name).as_uri()


def _database(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()


def _runs(mlflow_client, experiment_id: str) -> list:
    found, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{REF}` LIKE 'registry:%'",
                                         max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _registered_model(mlflow_client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as err:
        if getattr(err, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlflow_client.create_registered_model(name, tags={"honing.name": name},
                                              description=f"Mirrored from honing's registry (registry:{name}@V).")


def _model_versions(mlflow_client, name: str) -> list:
    found, token = [], None
    while True:
        page = mlflow_client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        found.extend(mv for mv in page if REF in mv.tags)
        token = page.token
        if not token:
            return found


# --------------------------------------------------------------------------- one version's run


def _run_tags(version: Version) -> dict[str, str]:
    return {REF: version.ref, "honing.name": version.name, "honing.version": str(version.version),
            "honing.run_id": version.run_id or "", "honing.stage": version.stage or "",
            "honing.status": version.status, "honing.kind": version.kind,
            "honing.weights_sha256": version.weights_sha256, "honing.weights_path": version.model_path,
            "honing.run_dir": version.run_dir, "honing.registered_by": version.created_by,
            "honing.aliases": ",".join(version.aliases)}


def _version_tags(version: Version) -> dict[str, str]:
    return {REF: version.ref, "honing.version": str(version.version), "honing.status": version.status,
            "honing.weights_sha256": version.weights_sha256, "honing.weights_path": version.model_path,
            "honing.run_id": version.run_id or ""}


def _create_run(mlflow_client, registry: Registry, experiment_id: str, version: Version):
    from mlflow.entities import Param, RunTag

    record = version.record
    # honing.ref, by which a later mirror finds this run, is set last: a mirror that fails half-way leaves a run
    # the next one does not mistake for a finished copy (it makes a whole new one).
    tags = {key: value for key, value in _run_tags(version).items() if key != REF}
    run = mlflow_client.create_run(experiment_id, start_time=_millis(record.get("started")),
                                   tags=tags, run_name=f"{version.name}-v{version.version}")
    run_id = run.info.run_id
    params, long_keys = [], []
    for key, value in config_of(version).items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > PARAM_VALUE_LIMIT:
            long_keys.append(key)
            text = text[:PARAM_VALUE_LIMIT - 1] + "…"
        params.append(Param(_key(key), text))
    notes = [RunTag("honing.params_truncated", ",".join(long_keys))] if long_keys else []
    for start in range(0, len(params), 100):
        mlflow_client.log_batch(run_id, params=params[start:start + 100], synchronous=True)
    _log_metrics(mlflow_client, run_id, _metrics(registry, version))
    skipped = _upload(mlflow_client, run_id, version, registry.attachments(version.name, version.version))
    if skipped:
        notes.append(RunTag("honing.artifacts_skipped", ",".join(skipped)))
    if notes:
        mlflow_client.log_batch(run_id, tags=notes, synchronous=True)
    status = "FINISHED" if record.get("status") in ("completed", "early_stopped", None) else "FAILED"
    mlflow_client.set_terminated(run_id, status=status, end_time=_millis(record.get("finished")))
    mlflow_client.set_tag(run_id, REF, version.ref)
    return mlflow_client.get_run(run_id)


def _update_run(mlflow_client, registry: Registry, run, version: Version) -> int:
    """Tags that changed (status, aliases) and evaluations attached since; how many things changed."""
    changed = 0
    for key, value in _run_tags(version).items():
        if run.data.tags.get(key) != value:
            mlflow_client.set_tag(run.info.run_id, key, value)
            changed += 1
    have = {item.path for item in mlflow_client.list_artifacts(run.info.run_id, "attachments")}
    attachments = [a for a in registry.attachments(version.name, version.version)
                   if f"attachments/{_attachment_dir(a)}" not in have]
    if attachments:
        _upload(mlflow_client, run.info.run_id, version, attachments, record_and_config=False)
        scores = {k: v for k, v in _scores(registry, version).items() if k not in run.data.metrics}
        _log_metrics(mlflow_client, run.info.run_id, [(k, v, 0, None) for k, v in scores.items()])
        changed += len(attachments)
    return changed


def _metrics(registry: Registry, version: Version) -> list[tuple[str, float, int, int | None]]:
    """(key, value, step, timestamp): each step of metrics.jsonl (when the run directory is still there), then
    the record's final metrics at the last step, stamped when the run finished (so MLflow shows them as the
    latest), then the attached evaluations' scores."""
    points, last_step = [], 0
    path = Path(version.run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
            step, stamp = int(row.get("step") or 0), _millis(row.get("time"))
            last_step = max(last_step, step)
            points.extend((_key(k), float(v), step, stamp) for k, v in row.items()
                          if k not in ("step", "time") and _number(v))
    step = int(version.record.get("metrics", {}).get("steps") or last_step)
    last_stamp = max((stamp or 0 for *_, stamp in points), default=0)
    finished = _millis(version.record.get("finished"))
    if last_stamp:  # metrics.jsonl's times are to the second: the final values must come after its last line
        finished = max(finished or 0, last_stamp + 1)
    logged = {(key, at, value) for key, value, at, _ in points}
    points.extend((_key(k), float(v), step, finished) for k, v in metrics_of(version).items()
                  if (_key(k), step, float(v)) not in logged)  # val_loss at the last step is there already
    points.extend((k, v, 0, None) for k, v in _scores(registry, version).items())
    return points


def _scores(registry: Registry, version: Version) -> dict[str, float]:
    return {_key(f"eval/{key.replace(' · ', '/')}"): float(score["mean"])
            for key, score in scores_of(registry, version).items() if _number(score.get("mean"))}


def _log_metrics(mlflow_client, run_id: str, points: list[tuple[str, float, int, int | None]]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, stamp or now, step) for key, value, step, stamp in points]
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + 1000], synchronous=True)


def _upload(mlflow_client, run_id: str, version: Version, attachments: list[dict[str, Any]], *,
            record_and_config: bool = True) -> list[str]:
    """run.json and config.yaml (the registry's copies), and each attachment's report files (from its run
    directory when it is still there, else the registry's copy of its record and results); the files left out
    for size."""
    skipped = []
    with tempfile.TemporaryDirectory(prefix="honing-mlflow-") as scratch:
        root = Path(scratch)
        if record_and_config:
            (root / "run.json").write_text(json.dumps(version.record, indent=2, default=str), encoding="utf-8")
            if version.config:
                (root / "config.yaml").write_text(version.config, encoding="utf-8")
            for file in sorted(root.iterdir()):
                mlflow_client.log_artifact(run_id, str(file))
        for attached in attachments:
            folder = root / "attachments" / _attachment_dir(attached)
            folder.mkdir(parents=True)
            run_dir = Path(attached["run_dir"])
            for file_name in REPORT_FILES:
                source = run_dir / file_name
                if not source.is_file():
                    continue
                if source.stat().st_size > ARTIFACT_LIMIT:
                    skipped.append(str(source))
                    continue
                (folder / file_name).write_bytes(source.read_bytes())
            if not any(folder.iterdir()):  # the run directory is gone: what the registry kept of it
                (folder / "run.json").write_text(json.dumps(attached["record"], indent=2, default=str), encoding="utf-8")
                (folder / "results.json").write_text(json.dumps(attached["results"], indent=2, default=str),
                                                     encoding="utf-8")
            mlflow_client.log_artifacts(run_id, str(folder), artifact_path=f"attachments/{folder.name}")
    return skipped


def _attachment_dir(attached: dict[str, Any]) -> str:
    return _key(f"{attached['kind']}-{attached.get('run_id') or Path(attached['run_dir']).name}").replace("/", "_")


# --------------------------------------------------------------------------- aliases


def _aliases(mlflow_client, name: str, aliases: dict[str, int], numbers: dict[int, int]) -> dict[str, int]:
    """Set MLflow's aliases to honing's; remove those honing set before and no longer has (aliases made in
    MLflow by hand stay)."""
    model = mlflow_client.get_registered_model(name)
    current = dict(model.aliases)
    wanted = {alias: numbers[version] for alias, version in aliases.items() if version in numbers}
    before = set(filter(None, (model.tags.get(MIRRORED_ALIASES) or "").split(",")))
    for alias in sorted(before - set(wanted)):
        if alias in current:
            mlflow_client.delete_registered_model_alias(name, alias)
    for alias, number in wanted.items():
        if str(current.get(alias)) != str(number):
            mlflow_client.set_registered_model_alias(name, alias, str(number))
    if set(wanted) != before:
        mlflow_client.set_registered_model_tag(name, MIRRORED_ALIASES, ",".join(sorted(wanted)))
    return wanted


# --------------------------------------------------------------------------- small conversions


def _key(key: str) -> str:
    """MLflow keys allow letters, digits, _ - . space and /; anything else becomes _."""
    return _BAD_KEY.sub("_", key)[:250]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _millis(stamp: str | None) -> int | None:
    import datetime as _dt

    if not stamp:
        return None
    try:
        return int(_dt.datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None
