"""`honing registry <verb>`: the thin command-line edge over honing.registry.actions.

Every verb also takes an optional registry config (.yaml) and key=value overrides (path=...,
gate.tasks=..., mlflow_uri=...), as every other command does. Tables go to stdout; progress and
verdicts to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from honing.config.loader import load_config
from honing.config.registry import RegistryConfig
from honing.errors import EXIT_GATE_FAILED, HoningError
from honing.registry.refs import parse_spec

SETTINGS = click.argument("settings", nargs=-1)


def _config(settings: tuple[str, ...]) -> RegistryConfig:
    config = [s for s in settings if s.lower().endswith((".yaml", ".yml")) and "=" not in s]
    overrides = [s for s in settings if "=" in s]
    stray = [s for s in settings if s not in config and s not in overrides]
    if stray or len(config) > 1:
        raise HoningError(f"unexpected argument {(stray or config[1:])[0]!r}: give at most one registry config (.yaml) "
                          "and key=value overrides (see honing registry <verb> --help)")
    return load_config(RegistryConfig, config[0] if config else None, overrides)


def _optional_name(name: str | None, settings: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """An optional NAME before the settings: `list path=x.sqlite` has no name, only a setting."""
    if name is not None and ("=" in name or name.lower().endswith((".yaml", ".yml"))):
        return None, (name, *settings)
    return name, settings


def _open(cfg: RegistryConfig, *, create: bool = False):
    from honing.registry.store import Registry

    return Registry(cfg.path, create=create)


def _mirror(cfg: RegistryConfig, registry, name: str) -> None:
    if cfg.mlflow_uri:
        from honing.registry.mirror import mirror_model

        mirror_model(registry, name, cfg.mlflow_uri)


def _out():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _say(text: str) -> None:
    from honing.ui import console

    console.print(text)


def _version_of(spec: str, registry) -> Any:
    name, which = parse_spec(spec)
    if which is None:
        raise HoningError(f"{spec!r}: say which version, NAME@VERSION or NAME@ALIAS (e.g. {name}@production)")
    return registry.get(name, which)


@click.group(name="registry")
def registry_group() -> None:
    """Model versions, aliases (production, candidate, your own) and their history, in SQLite
    (.honing/registry.sqlite, or HONING_REGISTRY). registry:NAME@V works wherever a model is named."""


@registry_group.command()
@click.argument("run_dir")
@click.option("--name", required=True, help="The model's name (a new name starts at version 1).")
@click.option("--alias", help="Also point this alias (e.g. candidate) at the new version.")
@click.option("--reason", help="Why it is registered (kept in the history).")
@SETTINGS
def register(run_dir: str, name: str, alias: str | None, reason: str | None, settings: tuple[str, ...]) -> None:
    """Register a finished training run's model as a new version, with its weights' hash, its run record,
    and the eval and redteam runs of it found next to it."""
    from honing.registry.actions import register as register_run

    cfg = _config(settings)
    with _open(cfg, create=True) as registry:
        version = register_run(registry, run_dir, name, reason=reason, alias=alias)
        attached = registry.attachments(name, version.version)
        _mirror(cfg, registry, name)
    extra = f", {len(attached)} evaluation/red-team run(s) attached" if attached else ""
    _say(f"[green]registered[/] {name} v{version.version} ({version.kind}, sha256 {version.weights_sha256[:12]}…)"
         f"{extra}; use it as {version.ref}")


@registry_group.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@SETTINGS
def list_versions(name: str | None, as_json: bool, settings: tuple[str, ...]) -> None:
    """Every model (or every version of NAME) with its aliases and status."""
    name, settings = _optional_name(name, settings)
    from rich.table import Table

    cfg = _config(settings)
    with _open(cfg) as registry:
        names = [name] if name else registry.names()
        rows = [(v, registry.attachments(v.name, v.version)) for n in names for v in registry.versions(n)]
    if as_json:
        click.echo(json.dumps([{"name": v.name, "version": v.version, "status": v.status, "aliases": v.aliases,
                                "stage": v.stage, "kind": v.kind, "weights_sha256": v.weights_sha256,
                                "run_dir": v.run_dir, "created": v.created, "created_by": v.created_by,
                                "attachments": len(a), "missing": v.missing()} for v, a in rows], indent=2))
        return
    table = Table("name", "version", "aliases", "status", "stage", "kind", "evals", "created", "by")
    for version, attached in rows:
        status = version.status + (" (files missing)" if version.missing() else "")
        table.add_row(version.name, str(version.version), ", ".join(version.aliases), status, version.stage or "",
                      version.kind, str(len(attached)), version.created[:19], version.created_by)
    _out().print(table)


@registry_group.command()
@click.argument("spec", metavar="NAME@V")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@SETTINGS
def show(spec: str, as_json: bool, settings: tuple[str, ...]) -> None:
    """One version: where it came from, its hashes, metrics, evaluations, red-team scans and history."""
    from honing.registry.diff import data_of, metrics_of, scores_of

    cfg = _config(settings)
    with _open(cfg) as registry:
        version = _version_of(spec, registry)
        attached = registry.attachments(version.name, version.version)
        scores = scores_of(registry, version)
        events = [e for e in registry.history(version.name)
                  if e["version"] == version.version or e["from_version"] == version.version]
    if as_json:
        click.echo(json.dumps({**version.__dict__, "ref": version.ref, "missing": version.missing(), "scores": scores,
                               "attachments": [{k: a[k] for k in ("kind", "run_dir", "run_id", "created", "results")}
                                               for a in attached], "history": events}, indent=2, default=str))
        return
    out = _out()
    out.print(f"[bold]{version.name} v{version.version}[/]  {version.status}"
              + (f"  aliases: {', '.join(version.aliases)}" if version.aliases else ""))
    out.print(f"  {version.kind} from a {version.stage} run ({version.run_id}), registered {version.created} "
              f"by {version.created_by}")
    out.print(f"  weights {version.model_path}\n  sha256  {version.weights_sha256}")
    for gone in version.missing():
        out.print(f"  [yellow]missing: {gone}[/] (answered from the registry's copy of the record)")
    out.print("[bold]inputs[/]")
    for key, sha in data_of(version).items():
        out.print(f"  {key}  {sha or '(no hash)'}")
    metrics = metrics_of(version)
    if metrics:
        out.print("[bold]metrics[/]  " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    if scores:
        out.print("[bold]evaluation[/]")
        for key, score in scores.items():
            out.print(f"  {key}: {_score(score)}  ({score['eval_run']})")
    for scan in (a for a in attached if a["kind"] == "redteam"):
        overall = ((scan.get("results") or {}).get("summary") or {}).get("overall", {}).get("asr") or {}
        out.print(f"[bold]red team[/]  {scan['run_id']}: ASR {_score(overall)}")
    out.print("[bold]history[/]")
    for event in events:
        out.print(f"  {event['at'][:19]}  {_event_text(event)}  by {event['who']}"
                  + (f" — {event['reason']}" if event["reason"] else ""))


@registry_group.command()
@click.argument("a", metavar="NAME@A")
@click.argument("b", metavar="NAME@B")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@SETTINGS
def diff(a: str, b: str, as_json: bool, settings: tuple[str, ...]) -> None:
    """What differs between two versions: config, data hashes, metrics, eval scores with intervals."""
    from honing.registry.diff import diff as diff_versions

    cfg = _config(settings)
    with _open(cfg) as registry:
        result = diff_versions(registry, _version_of(a, registry), _version_of(b, registry))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    out = _out()
    out.print(f"[bold]{result['a']} → {result['b']}[/]  weights "
              + ("identical" if result["weights"]["same"] else "differ"))
    for section in ("config", "data", "metrics"):
        out.print(f"[bold]{section}[/]" + ("" if result[section] else "  (no differences)"))
        for change in result[section]:
            out.print(f"  {change['key']}: {_short(change['a'])} → {_short(change['b'])}")
    out.print("[bold]scores[/]" + ("" if result["scores"] else "  (neither version has an attached evaluation)"))
    for row in result["scores"]:
        out.print(f"  {row['key']}: {_score(row['a'])} → {_score(row['b'])}")


@registry_group.command()
@click.argument("name")
@click.argument("version")
@click.option("--reason", help="Why (kept in the history; default: the gate's verdict).")
@click.option("--no-gate", is_flag=True, help="Promote without running the gate (recorded as such).")
@click.option("--eval-dir", metavar="DIR", help="Run directory of the gate's evaluation (default runs/eval-<time>).")
@SETTINGS
def promote(name: str, version: str, reason: str | None, no_gate: bool, eval_dir: str | None,
            settings: tuple[str, ...]) -> None:
    """Run the gate (the candidate against production on the general-capability suite), then move production to
    VERSION; a failed gate rejects the candidate and leaves production where it was (exit code 3)."""
    from honing.registry.actions import promote as promote_version

    cfg = _config(settings)
    with _open(cfg) as registry:
        gate = None
        if not no_gate:
            from honing.registry.gate import run_gate

            def gate(candidate, production):
                _say(f"gate: {name} v{candidate.version} against "
                     + (f"production v{production.version}" if production else "the model it was trained from"))
                return run_gate(registry, candidate, production, cfg.gate, run_dir=eval_dir)
        outcome = promote_version(registry, name, version, gate=gate, reason=reason)
        _mirror(cfg, registry, name)
    verdict = outcome["gate"]
    if outcome["promoted"]:
        before = f" (was v{outcome['previous']})" if outcome["previous"] else ""
        _say(f"[green]promoted[/] {name} v{outcome['version']} to production{before}"
             + (f"; gate: {verdict['summary']}" if verdict else " without a gate"))
        return
    _say(f"[red]gate failed[/]: {verdict['summary']}; {name} v{outcome['version']} is rejected and production stays on "
         + (f"v{outcome['previous']}" if outcome["previous"] else "nothing") + f" (report: {verdict['eval_run']})")
    sys.exit(EXIT_GATE_FAILED)


@registry_group.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the history).")
@SETTINGS
def rollback(name: str, reason: str, settings: tuple[str, ...]) -> None:
    """Move production back to the version it was on before the current one."""
    from honing.registry.actions import rollback as rollback_production

    cfg = _config(settings)
    with _open(cfg) as registry:
        moved = rollback_production(registry, name, reason=reason)
        _mirror(cfg, registry, name)
    _say(f"[green]rolled back[/] {name} production: v{moved['previous']} → v{moved['version']}")


@registry_group.command()
@click.argument("name")
@click.argument("version")
@click.option("--reason", required=True, help="Why (kept in the history).")
@SETTINGS
def reject(name: str, version: str, reason: str, settings: tuple[str, ...]) -> None:
    """Mark a version rejected: it keeps its record, loses its aliases, and can no longer be promoted or loaded."""
    from honing.registry.actions import reject as reject_version

    cfg = _config(settings)
    with _open(cfg) as registry:
        rejected = reject_version(registry, name, version, reason=reason)
        _mirror(cfg, registry, name)
    _say(f"rejected {name} v{rejected.version}")


@registry_group.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@click.option("--reason", help="Why (kept in the history).")
@SETTINGS
def alias(name: str, alias: str, version: str, reason: str | None, settings: tuple[str, ...]) -> None:
    """Point ALIAS (candidate, staging, your own; not production) at VERSION."""
    from honing.registry.actions import set_alias

    cfg = _config(settings)
    with _open(cfg) as registry:
        target = registry.get(name, version)
        set_alias(registry, name, alias, target.version, reason=reason)
        _mirror(cfg, registry, name)
    _say(f"{name}@{alias} → v{target.version}")


@registry_group.command()
@click.argument("spec", metavar="NAME@V")
@click.argument("run_dir")
@SETTINGS
def attach(spec: str, run_dir: str, settings: tuple[str, ...]) -> None:
    """Attach an eval or redteam run (of this version) to it."""
    from honing.registry.actions import attachment

    cfg = _config(settings)
    with _open(cfg) as registry:
        version = _version_of(spec, registry)
        added = registry.attach(version.name, version.version, attachment(run_dir))
        _mirror(cfg, registry, version.name)
    _say(f"attached {run_dir} to {version.name} v{version.version}" if added else f"{run_dir} was attached already")


@registry_group.command()
@click.argument("name", required=False)
@SETTINGS
def history(name: str | None, settings: tuple[str, ...]) -> None:
    """Every registration and alias move (of NAME, or all), oldest first: who, when, why."""
    name, settings = _optional_name(name, settings)
    cfg = _config(settings)
    with _open(cfg) as registry:
        events = registry.history(name)
    out = _out()
    for event in events:
        out.print(f"{event['at'][:19]}  {event['name']}  {_event_text(event)}  by {event['who']}"
                  + (f" — {event['reason']}" if event["reason"] else ""))


@registry_group.command()
@click.argument("name", required=False)
@SETTINGS
def mirror(name: str | None, settings: tuple[str, ...]) -> None:
    """Bring MLflow (mlflow_uri=...) up to date with every version and alias of NAME, or of every model."""
    name, settings = _optional_name(name, settings)
    from honing.registry.mirror import mirror_all, mirror_model

    cfg = _config(settings)
    if not cfg.mlflow_uri:
        raise HoningError("set mlflow_uri=... (e.g. mlflow_uri=sqlite:///mlflow.db), or mlflow_uri: in a registry config")
    with _open(cfg) as registry:
        done = {name: mirror_model(registry, name, cfg.mlflow_uri)} if name else mirror_all(registry, cfg.mlflow_uri)
    for model, counts in done.items():
        _say(f"{model}: {counts['runs_created']} runs and {counts['versions_created']} model versions created, "
             f"{counts['updated']} updated; aliases {counts['aliases'] or 'none'} → {cfg.mlflow_uri}")


@registry_group.command(name="export")
@click.argument("file")
@SETTINGS
def export(file: str, settings: tuple[str, ...]) -> None:
    """Write the whole registry (versions, records, attachments, aliases, history) to a JSON file."""
    from honing.io import write_json_atomic

    cfg = _config(settings)
    with _open(cfg) as registry:
        dump = registry.dump()
    write_json_atomic(Path(file), dump)
    _say(f"exported {len(dump['versions'])} versions and {len(dump['events'])} events to {file}")


@registry_group.command(name="import")
@click.argument("file")
@SETTINGS
def import_(file: str, settings: tuple[str, ...]) -> None:
    """Restore an export into a new, empty registry (set HONING_REGISTRY or path= to choose where)."""
    from honing.data.loading import read_text

    cfg = _config(settings)
    try:
        dump = json.loads(read_text(Path(file)))
    except json.JSONDecodeError as err:
        raise HoningError(f"{file}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(dump, dict):
        raise HoningError(f"{file}: not a honing registry export (a JSON object)")
    from honing.registry.store import Registry, default_path

    target = Path(cfg.path) if cfg.path else default_path()
    fresh = not target.exists()
    try:
        with Registry(target, create=True) as registry:
            counts = registry.load(dump)
            where = registry.path
    except HoningError:
        if fresh:  # a failed import into a new file leaves no empty registry behind
            for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
                leftover.unlink(missing_ok=True)
        raise
    _say(f"imported {counts.get('versions', 0)} versions and {counts.get('events', 0)} events into {where}")


def _score(score: dict[str, Any] | None) -> str:
    if not score or score.get("mean") is None:
        return "—"
    text = f"{score['mean']:.4g}"
    if score.get("low") is not None and score.get("high") is not None:
        text += f" [{score['low']:.4g}, {score['high']:.4g}]"
    return text


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "…"


def _event_text(event: dict[str, Any]) -> str:
    action, alias = event["action"], event["alias"]
    if alias:
        was = f" (was v{event['from_version']})" if event["from_version"] else ""
        to = f"v{event['version']}" if event["version"] is not None else "removed"
        return f"{action} {alias} → {to}{was}"
    return f"{action} v{event['version']}"
