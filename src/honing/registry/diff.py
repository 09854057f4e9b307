"""`honing registry diff NAME@A NAME@B`: what differs between two versions, from their records:
the config (key by key), the data (by content hash), the final metrics, and the evaluation scores
with their intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from honing.registry.store import Registry, Version


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf}; lists stay whole (a list of tasks reads better as one value)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "a": a.get(key), "b": b.get(key)} for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def config_of(version: Version) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(version.config) if version.config else {}
    except yaml.YAMLError:
        return {"(config.yaml)": "unreadable"}
    return flatten(loaded) if isinstance(loaded, dict) else {}


def data_of(version: Version) -> dict[str, Any]:
    """role → sha256 of every recorded input (data files and the base model)."""
    found = {}
    for entry in version.record.get("inputs") or []:
        if isinstance(entry, dict):
            found[f"{entry.get('role')} {entry.get('path')}"] = entry.get("sha256")
    return found


def metrics_of(version: Version) -> dict[str, Any]:
    return {k: v for k, v in flatten(version.record.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def scores_of(registry: Registry, version: Version) -> dict[str, dict[str, Any]]:
    """task · metric → {mean, low, high, eval_run} of this version, from its latest attached evaluation of
    each task (the version is the candidate there, or the only model)."""
    found: dict[str, dict[str, Any]] = {}
    for attached in registry.attachments(version.name, version.version, "eval"):
        results = attached.get("results") or {}
        model = _name_in_eval(results, version, attached.get("record") or {})
        for task, metrics in (results.get("scores") or {}).get(model, {}).items():
            for metric, score in metrics.items():
                if isinstance(score, dict) and "mean" in score:
                    found[f"{task} · {metric}"] = {"mean": score.get("mean"), "low": score.get("low"),
                                                   "high": score.get("high"), "eval_run": attached["run_id"]}
    return found


def _name_in_eval(results: dict[str, Any], version: Version, record: dict[str, Any]) -> str | None:
    """The name this version had in an evaluation: the model input pinned to this version (registry:NAME@…), else
    the one whose path, resolved where the eval ran, is this version's run or weights; an eval of one model only
    names it. None when the version is not found there (its scores are then not this version's)."""
    from honing.registry.actions import evaluated_paths

    pinned = f"{version.name}@{version.version}"
    targets = {str(Path(version.run_dir).resolve()), str(Path(version.model_path).resolve())}
    inputs = [e for e in record.get("inputs") or [] if isinstance(e, dict) and str(e.get("role")).startswith("model_")]
    for entry in inputs:
        if entry.get("registry") == pinned:
            return entry["role"].removeprefix("model_")
    for entry in inputs:
        if evaluated_paths(record, entry) & targets:
            return entry["role"].removeprefix("model_")
    models = results.get("models") or []
    return models[0].get("name") if len(models) == 1 else None


def diff(registry: Registry, a: Version, b: Version) -> dict[str, Any]:
    sa, sb = scores_of(registry, a), scores_of(registry, b)
    return {
        "a": a.ref, "b": b.ref,
        "weights": {"a": a.weights_sha256, "b": b.weights_sha256, "same": a.weights_sha256 == b.weights_sha256},
        "config": _changed(config_of(a), config_of(b)),
        "data": _changed(data_of(a), data_of(b)),
        "metrics": _changed(metrics_of(a), metrics_of(b)),
        "scores": [{"key": key, "a": sa.get(key), "b": sb.get(key)} for key in sorted(set(sa) | set(sb))],
    }
