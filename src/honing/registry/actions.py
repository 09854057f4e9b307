"""What the registry does, over its database: register a run's model, attach the evaluations and
red-team scans of it, move aliases (promote through the gate, roll back, reject), and diff two
versions. The CLI (`honing registry ...`) and pipelines call these; none of them recomputes a
number, they copy what the runs recorded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from honing.errors import HoningError
from honing.registry.refs import ALIAS, NAME
from honing.registry.store import PRODUCTION, Registry, Version

MODEL_OUTPUTS = ("model", "adapter", "reward_model")
"""The outputs a run can register, in the order a run directory loads them."""
ATTACHABLE = {"eval": "eval", "redteam": "redteam"}
_EVAL_KEEP = ("models", "tasks", "scores", "differences", "gate", "bootstrap", "throughput")
_REDTEAM_KEEP = ("target", "settings", "summary", "gate", "throughput")


# --------------------------------------------------------------------------- registering


def run_directory(path: str | Path) -> Path:
    """The run directory of `path`: the directory itself, or the run that holds it (an adapter/ or model/)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HoningError(f"{path} does not exist; give a run directory (the folder holding run.json)")
    if not path.is_dir():
        raise HoningError(f"{path} is a file; give a run directory (the folder holding run.json)")
    for candidate in (path, path.parent):
        if (candidate / "run.json").is_file():
            return candidate.resolve()
    raise HoningError(f"{path} is not a honing run directory (no run.json); register the run that trained the model")


def read_record(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HoningError(f"{run_dir / 'run.json'}: not a readable run record ({err})") from None
    if not isinstance(record, dict):
        raise HoningError(f"{run_dir / 'run.json'}: not a run record (a JSON object)")
    return record


def model_output(run_dir: Path, record: dict[str, Any]) -> tuple[str, Path]:
    """(kind, directory) of the model a finished run saved."""
    status = record.get("status")
    if status not in ("completed", "early_stopped"):
        raise HoningError(f"{run_dir} did not finish (status {status!r}); only a finished run can be registered")
    outputs = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
    for kind in MODEL_OUTPUTS:
        entry = outputs.get(kind)
        text = entry.get("path") if isinstance(entry, dict) else entry
        recorded = Path(text) if isinstance(text, str) and text else None
        # The run's own folder first: a run directory that was copied or moved still names its old paths.
        for path in (run_dir / kind, recorded):
            if path is not None and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
                return kind, path.resolve()
    raise HoningError(f"{run_dir} has no model output (model/, adapter/ or reward_model/); it is a "
                      f"{record.get('stage') or 'non-training'} run — register the run that trained the model")


def prepare(run_dir: str | Path, *, search: list[Path] | None = None) -> dict[str, Any]:
    """Everything a new version holds, read from the run directory (nothing is written)."""
    from honing.models.source import weight_files, weights_sha256

    run_dir = run_directory(run_dir)
    record = read_record(run_dir)
    kind, model_path = model_output(run_dir, record)
    files = weight_files(model_path)
    if not files:
        raise HoningError(f"{model_path} holds no weights (*.safetensors or *.bin)")
    digest = weights_sha256(files)
    hashes = record.get("output_sha256")
    saved = hashes.get(kind) if isinstance(hashes, dict) else None
    if saved and saved != digest:
        raise HoningError(f"the weights in {model_path} are not the ones the run saved (sha256 {digest[:12]}… ≠ "
                          f"{saved[:12]}… in run.json); they were changed after training, so this run cannot vouch "
                          "for them")
    config = run_dir / "config.yaml"
    entry = {"run_dir": str(run_dir), "run_id": record.get("run_id"), "stage": record.get("stage"),
             "model_path": str(model_path), "kind": kind, "weights_sha256": digest, "record": record,
             "config": config.read_text(encoding="utf-8") if config.is_file() else None}
    roots = [run_dir.parent, *(search or [])]
    entry["attachments"] = [attachment(d) for d in find_evaluations(entry, roots)]
    return entry


def register(registry: Registry, run_dir: str | Path, name: str, *, reason: str | None = None,
             alias: str | None = None, actor: str | None = None) -> Version:
    """A new version of `name` from a finished training run, with its evaluations and red-team scans."""
    check_name(name)
    entry = prepare(run_dir)
    version = registry.add_version(name, entry, actor=actor, reason=reason)
    if alias:
        set_alias(registry, name, alias, version.version, reason=reason or "set on register", actor=actor)
        version = registry.get(name, version.version)
    return version


def check_name(name: str) -> None:
    """A name registry:NAME@V can spell (ASCII letters, digits, '.', '_', '-')."""
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        raise HoningError(f"model name {name!r}: use ASCII letters, digits, '.', '_' and '-', starting with a letter "
                          "or digit (no '@', ':', '/' or spaces)")


# --------------------------------------------------------------------------- attachments


def attachment(run_dir: str | Path) -> dict[str, Any]:
    """An evaluation or red-team run, as the registry keeps it: its record and its results' summary."""
    run_dir = Path(run_dir).resolve()
    record = read_record(run_dir)
    kind = ATTACHABLE.get(record.get("stage"))
    if kind is None:
        raise HoningError(f"{run_dir} is a {record.get('stage')!r} run; attach an eval or redteam run")
    results = None
    path = run_dir / "results.json"
    if path.is_file():
        try:
            full = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HoningError(f"{path}: not readable JSON ({err})") from None
        keep = _EVAL_KEEP if kind == "eval" else _REDTEAM_KEEP
        results = {key: full[key] for key in keep if key in full}
    return {"kind": kind, "run_dir": str(run_dir), "run_id": record.get("run_id"), "record": record, "results": results}


def attach_to_registered(run_dir: str | Path) -> list[str]:
    """Attach a finished eval or redteam run to every registered version it evaluated (its inputs carry
    `registry: NAME@V` when a model was named registry:...); the versions attached to."""
    from honing.registry.store import default_path

    record = read_record(Path(run_dir))
    pinned = sorted({entry["registry"] for entry in _evaluated_inputs(record)
                     if isinstance(entry.get("registry"), str) and re.fullmatch(rf"{NAME}@\d+", entry["registry"])})
    if not pinned:
        return []
    found = attachment(run_dir)
    with Registry(default_path(), create=False) as registry:
        for ref in pinned:
            name, _, number = ref.partition("@")
            registry.attach(name, int(number), found)
    return pinned


def find_evaluations(entry: dict[str, Any], roots: list[Path]) -> list[Path]:
    """Finished eval and redteam runs under `roots` that evaluated this model (by path or registry reference)."""
    targets = {str(Path(entry["run_dir"]).resolve()), str(Path(entry["model_path"]).resolve())}
    found = []
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        if not root.is_dir():
            continue
        for record_path in sorted(root.glob("*/run.json")):
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if record.get("stage") in ATTACHABLE and record.get("status") == "completed" and \
                    _evaluated(record, targets):
                found.append(record_path.parent)
    return found


def _evaluated_inputs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The inputs of an eval or redteam record that are models under evaluation (not an attacker or a judge)."""
    inputs = record.get("inputs") if isinstance(record.get("inputs"), list) else []
    return [entry for entry in inputs if isinstance(entry, dict)
            and (str(entry.get("role", "")).startswith("model_") or entry.get("role") == "target")]


def evaluated_paths(record: dict[str, Any], entry: dict[str, Any]) -> set[str]:
    """The local paths a model input names, resolved where the run ran (its recorded cwd)."""
    where = Path(record["cwd"]) if isinstance(record.get("cwd"), str) else Path.cwd()
    found = set()
    for key in ("adapter", "path", "base"):
        value = entry.get(key)
        if isinstance(value, str) and value and not value.startswith(("registry:", "http:", "https:")):
            path = Path(value).expanduser()
            found.add(str((path if path.is_absolute() else where / path).resolve()))
    return found


def _evaluated(record: dict[str, Any], targets: set[str]) -> bool:
    return any(evaluated_paths(record, entry) & targets for entry in _evaluated_inputs(record))


# --------------------------------------------------------------------------- aliases


def set_alias(registry: Registry, name: str, alias: str, version: int, *, reason: str | None,
              actor: str | None = None) -> None:
    """Point a plain alias (candidate, staging, your own) at a version; production moves only by promote/rollback."""
    if alias == PRODUCTION:
        raise HoningError("production moves only through the gate: honing registry promote NAME VERSION "
                          "(or honing registry rollback NAME)")
    if not re.fullmatch(ALIAS, alias or "") or alias.isdigit():
        raise HoningError(f"alias {alias!r}: use ASCII letters, digits, '-' and '_', and not only digits")
    target = registry.get(name, version)
    _usable(target)
    registry.move_alias(name, alias, target.version, action="alias", reason=reason, actor=actor)


def promote(registry: Registry, name: str, version: int | str, *, gate: Callable[[Version, Version | None],
            dict[str, Any]] | None, reason: str | None = None, actor: str | None = None) -> dict[str, Any]:
    """Move production to `version` when `gate(candidate, production)` passes; on a failed gate, reject the
    candidate and leave production where it was. gate=None promotes without one (recorded as such).
    Returns {"promoted": bool, "version", "previous", "gate"}."""
    candidate = registry.get(name, version)
    _usable(candidate)
    production = registry.alias_target(name, PRODUCTION)
    if production is not None and production.version == candidate.version:
        raise HoningError(f"{name} v{candidate.version} is already production")
    verdict = gate(candidate, production) if gate is not None else None
    before = production.version if production else None
    if verdict is not None and not verdict["passed"]:
        reject(registry, name, candidate.version, reason=f"gate failed: {verdict.get('summary', '')}".strip(": "),
               actor=actor, details={"gate": verdict})
        return {"promoted": False, "version": candidate.version, "previous": before, "gate": verdict}
    why = reason or ("gate passed" if verdict is not None else "promoted without a gate")
    details = {"gate": verdict} if verdict is not None else {"gate": "skipped"}
    registry.move_alias(name, PRODUCTION, candidate.version, action="promote", reason=why, actor=actor,
                        expect=before, details=details)
    return {"promoted": True, "version": candidate.version, "previous": before, "gate": verdict}


def production_version(registry: Registry, name: str) -> Version | None:
    """The version production points at, None before the first promotion (or for a new name)."""
    return registry.alias_target(name, PRODUCTION) if name in registry.names() else None


def production_stack(registry: Registry, name: str) -> list[int]:
    """The versions production has been on, each move a push and each rollback a pop: the way back."""
    stack: list[int] = []
    for event in registry.history(name):
        if event["alias"] != PRODUCTION:
            continue
        if event["action"] == "promote":
            stack.append(event["version"])
        elif event["action"] == "rollback":
            while stack and stack[-1] != event["version"]:
                stack.pop()
        elif event["action"] == "unalias":
            stack = [v for v in stack if v != event["from_version"]]
    return stack


def rollback(registry: Registry, name: str, *, reason: str, actor: str | None = None) -> dict[str, Any]:
    """Move production back to the version it was on before the current one (skipping rejected versions)."""
    current = registry.alias_target(name, PRODUCTION)
    if current is None:
        raise HoningError(f"{name} has no production version to roll back")
    earlier = [v for v in production_stack(registry, name)[:-1]
               if v != current.version and registry.get(name, v).status != "rejected"]
    if not earlier:
        raise HoningError(f"{name} v{current.version} is the first production version; there is nothing to roll back "
                          "to (promote another version instead)")
    target = earlier[-1]
    registry.move_alias(name, PRODUCTION, target, action="rollback", reason=reason, actor=actor,
                        expect=current.version, details={"from": current.version})
    return {"version": target, "previous": current.version}


def reject(registry: Registry, name: str, version: int | str, *, reason: str, actor: str | None = None,
           details: dict[str, Any] | None = None) -> Version:
    """Mark a version rejected (it keeps its record; it loses its aliases). Production cannot be rejected."""
    target = registry.get(name, version)
    if target.status == "rejected":
        raise HoningError(f"{name} v{target.version} is already rejected")
    registry.set_status(name, target.version, "rejected", action="reject", reason=reason, actor=actor, details=details)
    return registry.get(name, target.version)


def _usable(version: Version) -> None:
    if version.status == "rejected":
        raise HoningError(f"{version.name} v{version.version} was rejected; register a new version instead")
    missing = version.missing()
    if missing:
        raise HoningError(f"{version.name} v{version.version} cannot be used: {', '.join(missing)} no longer exist")
