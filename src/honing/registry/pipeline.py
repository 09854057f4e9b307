"""`honing pipeline`: named steps run in order through the stage registry, resumable like make.

    plan      every step's command, and every ${steps.<step>.<output>} reference checked, before anything runs
    key       a step's identity: its command, its fully resolved config and the sha256 of every file it reads
    run       each step in its own run directory <pipeline dir>/<step>-<key[:10]> (-2, -3, ... when a finished run
              already holds that name); a step whose key matches the state and whose outputs still exist is
              skipped; --from STEP forces it and every later one
    state     <pipeline dir>/state.json (written atomically after every change) and log.jsonl (one line per event)

A finished run's directory is never moved or reused: a rerun (a change, --from STEP, or a config back at an earlier
key) gets a fresh directory, so the old run stays where the registry (or a later step's record) points. A step that
crashed or was interrupted is recorded as such, never as done: the next run starts again from it, and its directory
is moved aside to <dir>.attempt-<n>. A gate step writes to the registry only after its evaluation finished
(`register_through_gate`), so a crash before leaves it untouched; it is recorded as done before MLflow is mirrored.
A pipeline with registry.path sets HONING_REGISTRY to it while it runs, so steps, references and gates share one
registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.config.base import StrictModel
from honing.config.loader import dump_config, load_config
from honing.config.pipeline import PipelineConfig, PipelineStepConfig
from honing.config.registry import RegistryGateConfig
from honing.config.stages import GROUPS, STAGES, Stage
from honing.errors import ConfigError, HoningError
from honing.io import append_jsonl, write_json_atomic
from honing.registry.store import default_path, now
from honing.runs import tree_sha256
from honing.ui import console

STATE_FILE = "state.json"
LOG_FILE = "log.jsonl"
REFERENCE = re.compile(r"\$\{steps\.([^.}]*)\.([^}]*)\}")
STEP_DIR = "@pipeline-step-dir@"
"""Stands for the step's run directory while its key is computed (the directory's name holds the key)."""
NOT_IN_PIPELINES = {"chat": "interactive", "label": "interactive", "pipeline": "a pipeline cannot run a pipeline",
                    "serve": "a server runs until stopped, so the steps after it would never run"}
GATE_OUTPUTS = ("run_dir", "version", "promoted", "previous", "eval_run", "report")
_TRAINED = ("adapter", "model", "rejects")
KNOWN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "sft": _TRAINED, "pretrain": _TRAINED, "dpo": (*_TRAINED, "reference_logps"),
    "reward": ("reward_model", "rejects"), "rl": (*_TRAINED, "value_head", "samples"),
    "eval": ("results", "markdown", "html"), "redteam": ("results", "failures", "markdown", "html"),
    "constitute": ("sft", "preferences", "ai_preferences"), "merge": ("model", "output"),
    "data clean": ("output", "removed", "rejects"), "data pii": ("output", "removed", "rejects", "findings"),
    "data dedup": ("output", "removed", "rejects"), "data convert": ("output", "rejects"),
    "monitor export": ("sft", "preferences", "skipped"),
}
"""What each command can record in run.json "outputs" (checked before anything runs; any other command's
references are checked when the step it names has run). Every step also has run_dir."""
_DIRECTORY_OUTPUT = {"data split"}
_FINISHED_RUN = ("completed", "early_stopped")


@dataclass
class Step:
    """A planned step: its settings and the stage that runs it (None for a gate)."""

    settings: PipelineStepConfig
    stage: Stage | None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def command(self) -> str:
        return self.settings.command or "gate"


# --------------------------------------------------------------------------- plan


def plan(cfg: PipelineConfig) -> list[Step]:
    """Every step's stage, and every reference checked against the steps before it (ConfigError, one line)."""
    names = [settings.name for settings in cfg.steps]
    steps: list[Step] = []
    for settings in cfg.steps:
        step = Step(settings, None if settings.gate is not None else _stage(settings))
        if settings.gate is not None:
            _check_gate_name(settings)
        for where, text in _strings(settings):
            for ref_step, key in REFERENCE.findall(text):
                _check_reference(steps, names, step, where, ref_step, key)
        steps.append(step)
    return steps


def _check_gate_name(settings: PipelineStepConfig) -> None:
    from honing.registry.actions import check_name

    try:
        check_name(settings.gate.name)
    except HoningError as err:
        raise ConfigError(f"steps.{settings.name}.gate.name: {err}") from None


def _stage(settings: PipelineStepConfig) -> Stage:
    words = settings.command.split()
    table, name = (GROUPS[words[0]], words[1]) if len(words) == 2 and words[0] in GROUPS else (STAGES, " ".join(words))
    stage = table.get(name)
    if stage is None or len(words) > 2:
        known = [*STAGES, *(f"{group} {n}" for group, stages in GROUPS.items() for n in stages)]
        raise ConfigError(f"steps.{settings.name}.command: unknown command {settings.command!r}; one of: "
                          f"{', '.join(n for n in known if n not in NOT_IN_PIPELINES)}")
    if stage.name in NOT_IN_PIPELINES and not stage.group:
        raise ConfigError(f"steps.{settings.name}.command: {stage.name} cannot be a pipeline step "
                          f"({NOT_IN_PIPELINES[stage.name]})")
    return stage


def _strings(settings: PipelineStepConfig) -> list[tuple[str, str]]:
    """(where, text) of every string of a step that may hold a reference."""
    base = f"steps.{settings.name}"
    if settings.gate is not None:
        return [(f"{base}.gate.candidate", settings.gate.candidate)]
    return [(f"{base}.overrides.{key}", value) for key, value in _override_items(settings)
            if isinstance(value, str)] + [(f"{base}.overrides", json.dumps(value)) for key, value in
                                          _override_items(settings) if not isinstance(value, str)]


def _check_reference(before: list[Step], names: list[str], step: Step, where: str, ref_step: str, key: str) -> None:
    earlier = {s.name: s for s in before}
    text = f"${{steps.{ref_step}.{key}}}"
    if ref_step == step.name:
        raise ConfigError(f"{where}: {text} refers to the step itself; a step can name only earlier steps' outputs")
    if ref_step not in earlier:
        later = " (it runs later: move it before this step)" if ref_step in names else ""
        raise ConfigError(f"{where}: {text}: no step {ref_step!r} before {step.name}{later} "
                          f"(earlier steps: {', '.join(earlier) or 'none'})")
    keys = possible_outputs(earlier[ref_step])
    if keys is not None and key not in keys:
        raise ConfigError(f"{where}: {text}: {earlier[ref_step].command} step {ref_step!r} has no output {key!r} "
                          f"(available: {', '.join(keys)})")


def possible_outputs(step: Step) -> tuple[str, ...] | None:
    """The keys ${steps.<step>.<key>} can name, where known before the step runs (None: known after)."""
    if step.stage is None:
        return GATE_OUTPUTS
    known = KNOWN_OUTPUTS.get(step.command)
    return None if known is None else ("run_dir", *known)


# --------------------------------------------------------------------------- a step's config and key


def _override_items(settings: PipelineStepConfig) -> list[tuple[str, Any]]:
    """(dotted key, value) of a step's overrides; a nested mapping is flattened (model: {path: x} -> model.path)."""
    if isinstance(settings.overrides, list):
        items = []
        for text in settings.overrides:
            key, sep, value = text.partition("=")
            if not sep:
                raise ConfigError(f"steps.{settings.name}.overrides: {text!r} is not key=value")
            items.append((key.strip(), value))
        return items
    return list(_flatten(settings.overrides))


def _flatten(mapping: dict[str, Any], prefix: str = ""):
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def resolve(text: str, where: str, done: dict[str, dict[str, Any]]) -> str:
    """`text` with every ${steps.X.key} replaced by that finished step's output."""
    def one(match: re.Match) -> str:
        ref_step, key = match.groups()
        outputs = done[ref_step]["outputs"]
        if key not in outputs:
            raise ConfigError(f"{where}: {match.group(0)}: step {ref_step!r} recorded no output {key!r} "
                              f"(available: {', '.join(outputs)})")
        return str(outputs[key])
    return REFERENCE.sub(one, text)


def step_overrides(step: Step, done: dict[str, dict[str, Any]]) -> list[str]:
    """The step's key=value overrides, references resolved, then the run directory the pipeline gives it."""
    out = []
    for key, value in _override_items(step.settings):
        where = f"steps.{step.name}.overrides.{key}"
        if isinstance(value, str):
            out.append(f"{key}={resolve(value, where, done)}")
        else:  # a number, list or mapping given in YAML: JSON is YAML, and the loader reads it back as typed
            out.append(f"{key}={resolve(json.dumps(value), where, done)}")
    return out


def run_dir_key(stage: Stage) -> str:
    """The config key of a stage's run directory."""
    return "run_dir" if "run_dir" in stage.config.model_fields else "output.dir"


def load_step(step: Step, done: dict[str, dict[str, Any]], step_dir: str) -> StrictModel:
    """The step's validated config, with its run directory (and a data command's output, unless given) in step_dir."""
    stage = step.stage
    overrides = step_overrides(step, done)
    given = {text.partition("=")[0] for text in overrides}
    own = run_dir_key(stage)
    if own in given:
        raise ConfigError(f"steps.{step.name}.overrides.{own}: the pipeline gives each step its run directory "
                          "(<pipeline dir>/<step>-<key>); leave it out")
    defaults = []
    if stage.group == "data" and stage.output == "output" and "output" not in given:
        defaults.append(f"output={step_dir}/{'data' if step.command in _DIRECTORY_OUTPUT else step.name + '.jsonl'}")
    try:
        cfg = load_config(stage.config, step.settings.config, [*defaults, *overrides, f"{own}={step_dir}"])
    except ConfigError as err:
        raise ConfigError(f"step {step.name} ({step.command}): {err}") from None
    return cfg


def step_key(step: Step, cfg: StrictModel, directory: Path) -> tuple[str, dict[str, str]]:
    """(sha256 key, inputs) of a command step: its command, resolved config, the sha256 of the files it reads and
    the version (NAME@V) each registry:NAME@alias it names points at now. inputs: {path: sha256, reference: NAME@V}."""
    from honing.registry.refs import is_ref, pin

    skip = {run_dir_key(step.stage), step.stage.output}
    strings = _strings_of(cfg.model_dump(mode="json"), skip)
    try:
        pins = {text: pin(text) for text in strings if is_ref(text)}
    except HoningError as err:
        raise HoningError(f"step {step.name} ({step.command}): {err}") from None
    excluded = _not_inputs(directory)
    inputs = {path: tree_sha256(path) for path in strings if not is_ref(path) and _is_input(path, excluded)}
    inputs.update(pins)
    return _digest({"command": step.command, "config": dump_config(cfg), "inputs": inputs}), inputs


def _strings_of(value: Any, skip: set[str | None], prefix: str = "") -> list[str]:
    """Every one-line string of a config (not the step's own outputs, not the step's run directory placeholder)."""
    if prefix.rstrip(".") in skip:
        return []
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _strings_of(item, skip, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [p for item in value for p in _strings_of(item, skip, prefix)]
    if isinstance(value, str) and value and STEP_DIR not in value and "\n" not in value and len(value) < 4096:
        return [value]
    return []


def _not_inputs(directory: Path) -> set[Path]:
    """Directories a config string may name but the key never hashes: the filesystem root, the working directory
    and its ancestors, the pipeline's own directory and its ancestors (hashing them would hash the whole disk, or
    the pipeline's own state, which changes every run)."""
    cwd = Path.cwd().resolve()
    return {cwd, *cwd.parents, (own := directory.resolve()), *own.parents}


def _is_input(text: str, excluded: set[Path]) -> bool:
    """`text` names an existing file or directory the step reads (not a URL, not one of `excluded`)."""
    if "://" in text:
        return False
    try:
        path = Path(text).expanduser()
        return path.exists() and path.resolve() not in excluded
    except (OSError, RuntimeError, ValueError):
        return False


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def registry_path(cfg: PipelineConfig) -> Path:
    """The registry the pipeline's gates write to, absolute: registry.path, else HONING_REGISTRY or the default."""
    return (Path(cfg.registry.path) if cfg.registry.path else default_path()).expanduser().resolve()


def gate_settings(cfg: PipelineConfig, step: Step) -> RegistryGateConfig:
    """The registry's gate defaults, with the keys the gate step sets."""
    gate = step.settings.gate
    own = {key: getattr(gate, key) for key in gate.model_fields_set if key in RegistryGateConfig.model_fields}
    return RegistryGateConfig.model_validate({**cfg.registry.gate.model_dump(), **own})


# --------------------------------------------------------------------------- state


class State:
    """state.json of a pipeline directory: per step its key, status, run directory, outputs and result."""

    def __init__(self, directory: Path, name: str):
        self.path = directory / STATE_FILE
        self.log_path = directory / LOG_FILE
        self.data: dict[str, Any] = {"pipeline": name, "steps": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise HoningError(f"{self.path}: not readable JSON ({err}); delete it to run every step again") from None
            if isinstance(loaded, dict) and isinstance(loaded.get("steps"), dict):
                self.data = loaded

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data["steps"].get(name)

    def put(self, name: str, entry: dict[str, Any]) -> None:
        self.data["steps"][name] = entry
        write_json_atomic(self.path, self.data)

    def log(self, **event: Any) -> None:
        append_jsonl(self.log_path, [{"time": now(), **event}])


def finished(entry: dict[str, Any] | None, key: str) -> bool:
    """The state says this step is done with this key, and everything it recorded is still on disk."""
    if not entry or entry.get("status") != "done" or entry.get("key") != key:
        return False
    paths = [entry.get("run_dir"), *(v for k, v in entry.get("outputs", {}).items() if k in entry.get("paths", ()))]
    return all(p is None or Path(p).exists() for p in paths)


# --------------------------------------------------------------------------- run


def pipeline_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.output.dir or Path("runs") / f"pipeline-{cfg.name}")


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the steps in order (skipping finished ones). Returns {"dir", "status", "steps": [...], "gate"?};
    status is completed, gate_failed or interrupted."""
    steps = plan(cfg)
    with _registry_env(cfg):
        return _run_steps(cfg, steps)


@contextmanager
def _registry_env(cfg: PipelineConfig) -> Iterator[None]:
    """HONING_REGISTRY set to registry.path while the pipeline runs (when given), restored after."""
    if not cfg.registry.path:
        yield
        return
    before = os.environ.get("HONING_REGISTRY")
    os.environ["HONING_REGISTRY"] = str(registry_path(cfg))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HONING_REGISTRY", None)
        else:
            os.environ["HONING_REGISTRY"] = before


def _run_steps(cfg: PipelineConfig, steps: list[Step]) -> dict[str, Any]:
    directory = pipeline_dir(cfg)
    for step in steps:  # every command's config validates before anything runs (references stand in as text)
        if step.stage is not None:
            load_step(step, _placeholders(steps), STEP_DIR)
    state = State(directory, cfg.name)
    forced = False
    done: dict[str, dict[str, Any]] = {}
    report: list[dict[str, Any]] = []
    console.print(f"[bold]pipeline {cfg.name}[/bold]: {len(steps)} steps → {directory}")
    for index, step in enumerate(steps, 1):
        forced = forced or step.name == cfg.from_step
        prefix = f"[{index}/{len(steps)}] {step.name} ({step.command})"
        key, inputs = _prepare(cfg, step, done, directory)
        entry = state.get(step.name)
        if not forced and finished(entry, key):
            done[step.name] = entry
            console.print(f"{prefix}: unchanged, skipped (ran {entry.get('finished')}, {entry.get('seconds')} s)")
            state.log(step=step.name, event="skipped", key=key)
            report.append({"name": step.name, "status": "skipped", "run_dir": entry.get("run_dir")})
            stop = _stop_after(cfg, step, entry, report, directory)
            if stop:
                return stop
            continue
        entry = _run_step(cfg, step, key, inputs, done, directory, state, prefix)
        done[step.name] = entry
        report.append({"name": step.name, "status": "ran", "run_dir": entry.get("run_dir"),
                       "seconds": entry.get("seconds")})
        if entry["status"] == "interrupted":
            console.print(f"[yellow]pipeline stopped at {step.name}[/yellow]: rerun the same command to continue")
            return {"dir": str(directory), "status": "interrupted", "steps": report}
        stop = _stop_after(cfg, step, entry, report, directory)
        if stop:
            return stop
    console.print(f"[green]pipeline {cfg.name} done[/green] — state: {state.path}")
    return {"dir": str(directory), "status": "completed", "steps": report}


def _placeholders(steps: list[Step]) -> dict[str, dict[str, Any]]:
    """Stand-in outputs for checking configs before the steps they name have run."""
    return {s.name: {"outputs": _Anything(f"{STEP_DIR}/{s.name}")} for s in steps}


class _Anything(dict):
    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return f"{self.base}/{key}"


def _prepare(cfg: PipelineConfig, step: Step, done: dict[str, dict[str, Any]],
             directory: Path) -> tuple[str, dict[str, str]]:
    """(key, inputs) of a step: its command, its resolved config (a gate: its settings) and the files it reads."""
    if step.stage is None:
        gate = step.settings.gate
        candidate = resolve(gate.candidate, f"steps.{step.name}.gate.candidate", done)
        settings = gate_settings(cfg, step)
        inputs = {candidate: tree_sha256(candidate)} if Path(candidate).exists() else {}
        key = _digest({"command": "gate", "candidate": candidate, "name": gate.name, "reason": gate.reason,
                       "registry": str(registry_path(cfg)), "gate": settings.model_dump(mode="json"),
                       "inputs": inputs})
        return key, inputs
    return step_key(step, load_step(step, done, STEP_DIR), directory)


def _run_step(cfg: PipelineConfig, step: Step, key: str, inputs: dict[str, str], done: dict[str, dict[str, Any]],
              directory: Path, state: State, prefix: str) -> dict[str, Any]:
    step_dir = _fresh_dir(directory / f"{step.name}-{key[:10]}", state)
    entry = {"key": key, "command": step.command, "status": "running", "run_dir": str(step_dir), "inputs": inputs,
             "started": now(), "outputs": {}, "paths": []}
    state.put(step.name, entry)
    state.log(step=step.name, event="started", key=key, run_dir=str(step_dir))
    console.print(f"{prefix}: running → {step_dir}")
    started = time.perf_counter()
    try:
        if step.stage is None:
            candidate = resolve(step.settings.gate.candidate, f"steps.{step.name}.gate.candidate", done)
            result, outputs, paths = _run_gate(cfg, step, candidate, step_dir)
        else:
            run_cfg = load_step(step, done, str(step_dir))
            result = step.stage.run(run_cfg)
            outputs, paths = _outputs(step_dir, result)
    except KeyboardInterrupt:
        _close(state, step, entry, "interrupted", started, "Ctrl-C")
        raise
    except BaseException as err:
        _close(state, step, entry, "failed", started, str(err) or type(err).__name__)
        state.log(step=step.name, event="failed", error=str(err))
        console.print(f"{prefix}: [red]failed[/red] after {entry['seconds']} s")
        if isinstance(err, HoningError):
            raise type(err)(f"step {step.name} ({step.command}): {err} — fix it and run the pipeline again; the "
                            "finished steps are skipped") from None
        raise
    result = _json_safe(result)
    if isinstance(result, dict) and result.get("status") == "interrupted":
        return _close(state, step, {**entry, "result": result}, "interrupted", started, "Ctrl-C")
    entry = {**entry, "outputs": outputs, "paths": paths, "result": result}
    _close(state, step, entry, "done", started)
    state.log(step=step.name, event="finished", seconds=entry["seconds"])
    console.print(f"{prefix}: done in {entry['seconds']} s")
    if step.stage is None and cfg.registry.mlflow_uri:
        _mirror(cfg, step, state)
    return entry


def _mirror(cfg: PipelineConfig, step: Step, state: State) -> None:
    """MLflow brought up to date after a gate step was recorded as done: a failure is a warning, not a failed step
    (the registry change is saved; `honing registry mirror` retries)."""
    from honing.registry.mirror import mirror_model
    from honing.registry.store import Registry

    name = step.settings.gate.name
    try:
        with Registry(registry_path(cfg)) as registry:
            mirror_model(registry, name, cfg.registry.mlflow_uri)
    except Exception as err:  # noqa: BLE001 — any failure of the mirror leaves the registry as it is
        message = str(err) or type(err).__name__
        state.log(step=step.name, event="mirror_failed", error=message)
        console.print(f"[yellow]warning: {message} (the registry change is saved; run `honing registry mirror "
                      f"{name}` to retry)[/yellow]")


def _run_gate(cfg: PipelineConfig, step: Step, candidate: str, step_dir: Path):
    from honing.registry.gate import register_through_gate
    from honing.registry.store import Registry

    settings = gate_settings(cfg, step)
    gate = step.settings.gate
    with Registry(registry_path(cfg)) as registry:
        outcome = register_through_gate(registry, candidate, gate.name, settings, eval_dir=step_dir,
                                        reason=gate.reason or f"pipeline {cfg.name}, step {step.name}")
    verdict = outcome["gate"]
    eval_run = verdict["eval_run"]
    outputs = {"run_dir": eval_run, "version": outcome["version"], "promoted": outcome["promoted"],
               "previous": outcome["previous"], "eval_run": eval_run, "report": str(Path(eval_run) / "report.md")}
    verb = "promoted to production" if outcome["promoted"] else "registered as rejected"
    console.print(f"gate: {gate.name} v{outcome['version']} {verb} ({verdict['summary']}); report: {outputs['report']}")
    return {**outcome, "name": gate.name}, outputs, ["run_dir", "eval_run", "report"]


def _outputs(step_dir: Path, result: Any) -> tuple[dict[str, Any], list[str]]:
    """What ${steps.<step>.<key>} names: run_dir and every output its run.json lists."""
    outputs: dict[str, Any] = {}
    run_dir = Path(result["run_dir"]) if isinstance(result, dict) and result.get("run_dir") else step_dir
    record_path = run_dir / "run.json"
    if record_path.is_file():
        outputs["run_dir"] = str(run_dir)
        record = json.loads(record_path.read_text(encoding="utf-8"))
        for role, value in (record.get("outputs") or {}).items():
            outputs[role] = value["path"] if isinstance(value, dict) else value
    if isinstance(result, dict) and isinstance(result.get("output"), str):
        outputs.setdefault("output", result["output"])
    return outputs, list(outputs)


def _stop_after(cfg: PipelineConfig, step: Step, entry: dict[str, Any], report: list[dict[str, Any]],
                directory: Path) -> dict[str, Any] | None:
    """The pipeline's result when this step's gate failed (a gate step, eval --gate, redteam fail_above)."""
    result = entry.get("result") or {}
    gate = result.get("gate") if isinstance(result, dict) else None
    if not gate or gate.get("passed", True):
        return None
    where = entry["outputs"].get("report") or entry.get("run_dir")
    if step.stage is None:
        message = (f"gate failed: {result.get('name')} v{result.get('version')} registered as rejected "
                   f"({gate.get('summary')}); production stays on "
                   f"{'v' + str(result['previous']) if result.get('previous') else 'no version'}; report: {where}")
    else:
        message = f"gate failed at step {step.name} ({step.command}); nothing after it ran; report: {where}"
    console.print(f"[red]{message}[/red]")
    return {"dir": str(directory), "status": "gate_failed", "steps": report, "gate": {**gate, "passed": False},
            "failed_step": step.name, "message": message,
            **({"rejected": {"name": result.get("name"), "version": result.get("version"), "report": where}}
               if step.stage is None else {})}


def _close(state: State, step: Step, entry: dict[str, Any], status: str, started: float,
           error: str | None = None) -> dict[str, Any]:
    entry.update(status=status, finished=now(), seconds=round(time.perf_counter() - started, 1))
    if error:
        entry["error"] = error
    state.put(step.name, entry)
    return entry


def _fresh_dir(base: Path, state: State) -> Path:
    """The step's run directory: `base`, or base-2, base-3, ... when a finished run holds the name (a finished run
    is never moved or reused: a registered version or a later step may point at it). A directory an unfinished
    attempt left is moved aside."""
    step_dir, n = base, 1
    while _holds_finished_run(step_dir, state):
        n += 1
        step_dir = base.with_name(f"{base.name}-{n}")
    _move_aside(step_dir)
    return step_dir


def _holds_finished_run(step_dir: Path, state: State) -> bool:
    """Its run.json says completed or early_stopped, or the state records a finished step there."""
    if any(entry.get("status") == "done" and entry.get("run_dir") == str(step_dir)
           for entry in state.data["steps"].values()):
        return True
    try:
        record = json.loads((step_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and record.get("status") in _FINISHED_RUN


def _move_aside(step_dir: Path) -> None:
    """A run directory left by a crashed or interrupted attempt goes to <dir>.attempt-<n>."""
    if not step_dir.exists():
        return
    n = 1
    while step_dir.with_name(f"{step_dir.name}.attempt-{n}").exists():
        n += 1
    step_dir.rename(step_dir.with_name(f"{step_dir.name}.attempt-{n}"))
    console.print(f"an earlier attempt's {step_dir} moved to {step_dir.name}.attempt-{n}")


def _json_safe(value: Any) -> Any:
    """What a stage returned, as state.json can hold it (a Path or other object as its str)."""
    return json.loads(json.dumps(value, default=str))
