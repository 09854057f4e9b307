"""The promotion gate: `honing eval --gate` of a candidate version against the current production
version (or, before there is one, against the base model the candidate was trained from) on the
gate's tasks (by default the general-capability suite, as regression tasks).

The evaluation is an ordinary eval run (its own run directory, report and record), attached to the
candidate in the registry whatever its verdict, so the evidence of every promotion and every
rejection stays with the version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.config.evaluation import EvalConfig, EvalModelConfig, GateConfig
from honing.config.output import OutputConfig
from honing.config.registry import RegistryGateConfig
from honing.errors import HoningError
from honing.registry.store import Registry, Version


def base_of(record: dict[str, Any]) -> EvalModelConfig:
    """The model a run was trained from, as an eval model: its parent run, else its recorded base model."""
    parent = record.get("parent") or {}
    if parent.get("dir") and Path(parent["dir"]).is_dir():
        return EvalModelConfig(name="trained-from", role="base", path=parent["dir"])
    for entry in record.get("inputs") or []:
        if isinstance(entry, dict) and entry.get("role") == "base_model":
            if entry.get("kind") == "embedded":
                return EvalModelConfig(name="trained-from", role="base")
            if entry.get("path") and Path(entry["path"]).exists():
                return EvalModelConfig(name="trained-from", role="base", path=entry["path"])
    return EvalModelConfig(name="trained-from", role="base")


def gate_config(candidate_dir: str, label: str, record: dict[str, Any], production: Version | None,
                gate: RegistryGateConfig, run_dir: str | Path | None) -> EvalConfig:
    base = (EvalModelConfig(name=f"production-v{production.version}", role="base", path=production.run_dir)
            if production is not None else base_of(record))
    return EvalConfig(
        models=[base, EvalModelConfig(name=label, role="candidate", path=candidate_dir)],
        tasks=gate.tasks, batch_size=gate.batch_size, cache=gate.cache,
        gate=GateConfig(enabled=True, regression_tolerance=gate.regression_tolerance),
        output=OutputConfig(dir=str(run_dir) if run_dir else None))


def evaluate(candidate_dir: str, label: str, record: dict[str, Any], production: Version | None,
             gate: RegistryGateConfig, *, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the gate's evaluation (writes only its own eval run) and return the verdict:
    {"passed", "summary", "eval_run", "against", "checks"}."""
    from honing.config.stages import STAGES

    if production is not None and Path(production.run_dir).resolve() == Path(candidate_dir).resolve():
        raise HoningError(f"the candidate {candidate_dir} is production v{production.version} itself; a gate needs "
                          "another model to compare")
    result = STAGES["eval"].run(gate_config(candidate_dir, label, record, production, gate, run_dir))
    checks = (result.get("gate") or {}).get("checks") or []
    failed = [f"{c['task']} {c['kind']}: {c['message']}" for c in checks if not c["passed"]]
    against = f"production v{production.version}" if production else "the model it was trained from"
    if not checks:  # fail closed: a gate that checked nothing passes nothing
        failed = ["the gate checked nothing (no regression task could be compared, no min: threshold)"]
    return {"passed": not failed, "eval_run": result["run_dir"], "against": against,
            "summary": "; ".join(failed) if failed else f"no regression against {against}", "checks": checks}


def run_gate(registry: Registry, candidate: Version, production: Version | None, gate: RegistryGateConfig, *,
             run_dir: str | Path | None = None) -> dict[str, Any]:
    """The gate of a registered version; its eval run is attached to the version whatever the verdict."""
    from honing.registry.actions import attachment

    verdict = evaluate(candidate.run_dir, f"candidate-v{candidate.version}", candidate.record, production, gate,
                       run_dir=run_dir)
    registry.attach(candidate.name, candidate.version, attachment(verdict["eval_run"]))
    return verdict


def register_through_gate(registry: Registry, run_dir: str | Path, name: str, gate: RegistryGateConfig, *,
                          eval_dir: str | Path | None = None, reason: str | None = None,
                          actor: str | None = None) -> dict[str, Any]:
    """A pipeline's gate: evaluate a finished run against production, then, in one transaction, register it and
    promote it (pass) or register it as rejected with the report (fail; production stays where it was). Nothing
    is written to the registry until the evaluation has finished, so a crash or Ctrl-C during it leaves the
    registry untouched.
    Returns {"version", "promoted", "previous", "gate"}."""
    from honing.registry.actions import attachment, check_name, prepare, production_version

    check_name(name)
    entry = prepare(run_dir)
    production = production_version(registry, name)
    verdict = evaluate(entry["run_dir"], "candidate", entry["record"], production, gate, run_dir=eval_dir)
    before = production.version if production else None
    entry["attachments"] = [*entry["attachments"], attachment(verdict["eval_run"])]
    if not verdict["passed"]:
        version = registry.add_version(name, entry, actor=actor, reason=reason, status="rejected",
                                       rejection=f"gate failed: {verdict['summary']}", details={"gate": verdict})
        return {"version": version.version, "promoted": False, "previous": before, "gate": verdict}
    version = registry.add_version(name, entry, actor=actor, reason=reason, details={"gate": verdict},
                                   promote_over=before)
    return {"version": version.version, "promoted": True, "previous": before, "gate": verdict}
