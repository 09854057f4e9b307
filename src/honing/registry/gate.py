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
from honing.registry.store import Registry, Version


def base_of(version: Version) -> EvalModelConfig:
    """The model `version` was trained from, as an eval model: its parent run, else its recorded base model."""
    record = version.record
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


def gate_config(candidate: Version, production: Version | None, gate: RegistryGateConfig,
                run_dir: str | Path | None) -> EvalConfig:
    base = (EvalModelConfig(name=f"production-v{production.version}", role="base", path=production.run_dir)
            if production is not None else base_of(candidate))
    return EvalConfig(
        models=[base, EvalModelConfig(name=f"candidate-v{candidate.version}", role="candidate", path=candidate.run_dir)],
        tasks=gate.tasks, batch_size=gate.batch_size, cache=gate.cache,
        gate=GateConfig(enabled=True, regression_tolerance=gate.regression_tolerance),
        output=OutputConfig(dir=str(run_dir) if run_dir else None))


def run_gate(registry: Registry, candidate: Version, production: Version | None, gate: RegistryGateConfig, *,
             run_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate, attach the eval run to the candidate, and return the verdict:
    {"passed", "summary", "eval_run", "against", "checks"}."""
    from honing.config.stages import STAGES
    from honing.registry.actions import attachment

    cfg = gate_config(candidate, production, gate, run_dir)
    result = STAGES["eval"].run(cfg)
    registry.attach(candidate.name, candidate.version, attachment(result["run_dir"]))
    verdict = result.get("gate") or {"passed": True, "checks": []}
    failed = [f"{c['task']} {c['kind']}: {c['message']}" for c in verdict["checks"] if not c["passed"]]
    against = f"production v{production.version}" if production else "the model it was trained from"
    return {"passed": bool(verdict["passed"]), "eval_run": result["run_dir"], "against": against,
            "summary": "; ".join(failed) if failed else f"no regression against {against}",
            "checks": verdict["checks"]}
