"""`honing monitor` and `honing monitor export`: the request log `honing serve` writes, read back.

    monitor   read the window of the log ─▶ per version: traffic, latency, errors, refusals, feedback
              (honing.serve.monitor) ─▶ drift of its prompts from its training data, found through its run
              records (honing.serve.drift) ─▶ shadow=true: its gate tasks asked of the server again
              (honing.serve.shadow) ─▶ report.md, report.html, monitor.json
    export    read the feedback of the window and the requests it is about ─▶ SFT records and preference
              pairs (honing.serve.feedback) ─▶ sft.jsonl, preferences.jsonl, skipped.jsonl and run.json, whose
              inputs name the log, so lineage reaches it from a model trained on the export
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from honing.config.monitor import MonitorConfig, MonitorExportConfig, parse_since
from honing.errors import HoningError
from honing.ui import console


def read_log(path: str, since: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """(requests since the window's start, all feedback, that start as an epoch second)."""
    from honing.serve.log import connect, read_feedback, read_requests

    start = parse_since(since, time.time()) if since else None
    conn = connect(path, create=False)
    try:
        return read_requests(conn, start), read_feedback(conn), start
    finally:
        conn.close()


def _output_dir(output: str | None, stage: str, what: str) -> Path:
    from honing.runs import default_run_dir

    directory = Path(output) if output else default_run_dir(stage)
    if directory.exists() and not directory.is_dir():
        raise HoningError(f"{directory} is a file; give a directory for {what} (-o DIR)")
    return directory


# --------------------------------------------------------------------------- the report


def _latest_registered(versions: dict[str, dict[str, Any]]) -> str | None:
    """The registry-served version (NAME@V) that answered last."""
    from honing.serve.drift import REGISTERED

    registered = [(s["last"], v) for v, s in versions.items() if REGISTERED.fullmatch(v)]
    return max(registered)[1] if registered else None


def _shadow(cfg: MonitorConfig, versions: dict[str, dict[str, Any]], output: Path) -> None:
    from honing.serve.shadow import run_shadow

    version = _latest_registered(versions)
    if version is None:
        first = next(iter(versions))
        versions[first]["shadow"] = {"version": first, "endpoint": cfg.endpoint, "endpoint_model": cfg.endpoint_model,
                                     "unavailable": "no version in this window is a registered one (NAME@V); the "
                                                    "shadow evaluation re-runs a registered version's gate tasks"}
        return
    endpoint_model = cfg.endpoint_model or versions[version].get("model") or version.partition("@")[0]
    console.print(f"shadow evaluation of {version} through {cfg.endpoint} (model {endpoint_model})")
    versions[version]["shadow"] = run_shadow(version, registry=cfg.registry, endpoint=cfg.endpoint,
                                             endpoint_model=endpoint_model, api_key_env=cfg.api_key_env, output=output,
                                             max_examples=cfg.shadow_examples)


def monitor(cfg: MonitorConfig) -> dict[str, Any]:
    """Write the report; returns its directory, its files and the summary of every version."""
    from honing.registry.store import now
    from honing.serve.drift import drift_of
    from honing.serve.monitor import select, summaries, when
    from honing.serve.monitor_report import write_monitor_report

    output = _output_dir(cfg.output, "monitor", "the report")
    requests, feedback, start = read_log(cfg.log, cfg.since)
    by_version, given = select(requests, feedback, cfg.model)
    versions = summaries(by_version, given, confidence=cfg.confidence)
    for version, rows in by_version.items():
        versions[version]["drift"] = drift_of(version, rows, training_data=cfg.training_data, registry=cfg.registry,
                                              top=cfg.top_ngrams, min_count=cfg.min_ngram_count)
    if cfg.shadow and versions:
        _shadow(cfg, versions, output)
    times = [r["created"] for rows in by_version.values() for r in rows]
    results = {"title": "honing monitor", "created": now(), "log": str(cfg.log), "model": cfg.model,
               "confidence": cfg.confidence,
               "window": {"since": when(start), "first": when(min(times)) if times else None,
                          "last": when(max(times)) if times else None},
               "versions": versions}
    paths = write_monitor_report(results, output)
    _print_summary(versions, paths)
    return {"output": str(output), "versions": list(versions), **{k: str(v) for k, v in paths.items()}}


def _print_summary(versions: dict[str, dict[str, Any]], paths: dict[str, Path]) -> None:
    from honing.serve.monitor_report import pct_interval, secs

    if not versions:
        console.print("[yellow]no request in this window matches the filter[/]")
    for version, s in versions.items():
        drift = s.get("drift") or {}
        shift = (f"PSI {drift['length']['psi']:.3f}, JS {drift['topic']['js_divergence']:.3f}" if "length" in drift
                 else "drift: " + (drift.get("unavailable") or "n/a"))
        console.print(f"{version}: {s['requests']} requests, {s['errors']['count']} errors, latency p50 "
                      f"{secs(s['latency_s']['p50'])} p95 {secs(s['latency_s']['p95'])}, refusals "
                      f"{pct_interval(s['refusals']['rate'])}, {s['feedback']['rows']} feedback; {shift}",
                      markup=False, soft_wrap=True)
    console.print(f"report: {paths['html']} and {paths['markdown']}", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------- the export


def _log_input(run: Any, log: str, requests: dict[str, Any], feedback: list[dict[str, Any]]) -> None:
    """The log as an input: its path and the rows read (a live database has no fixed hash, so none is recorded)."""
    run.record["inputs"].append({"role": "request_log", "path": str(log), "sha256": None,
                                 "requests": sorted(requests), "feedback": [row["id"] for row in feedback]})
    run.save()


def export(cfg: MonitorExportConfig) -> dict[str, Any]:
    """Write sft.jsonl, preferences.jsonl and skipped.jsonl into the run directory; returns it and the counts."""
    from honing.io import write_jsonl_atomic
    from honing.runs import Run
    from honing.serve.feedback import export_feedback
    from honing.serve.log import connect, read_feedback, read_requests_by_id

    run_dir = _output_dir(cfg.run_dir, "monitor-export", "the export")
    if (run_dir / "run.json").exists():
        raise HoningError(f"{run_dir} already holds an export (run.json); give a new directory (-o DIR): a run "
                          "directory is never overwritten")
    start = parse_since(cfg.since, time.time()) if cfg.since else None
    conn = connect(cfg.log, create=False)
    try:
        feedback = [row for row in read_feedback(conn) if start is None or row["created"] >= start]
        requests = read_requests_by_id(conn, {row["request_id"] for row in feedback})
    finally:
        conn.close()
    exported = export_feedback(requests, feedback, cfg.model)
    run = Run.create("monitor-export", cfg, run_dir)
    _log_input(run, cfg.log, requests, feedback)
    files = {"sft": exported.sft, "preferences": exported.preferences, "skipped": exported.skipped}
    for role, records in files.items():
        run.add_output(role, write_jsonl_atomic(run.dir / f"{role}.jsonl", records))
    counts = {"feedback": len(feedback), **exported.counts()}
    run.set("export", counts)
    run.finish("completed", metrics={k: counts[k] for k in ("sft", "preferences", "skipped_rows", "feedback")})
    _print_export(run.dir, counts)
    return {"run_dir": str(run.dir), **counts}


def _print_export(run_dir: Path, counts: dict[str, Any]) -> None:
    sources = ", ".join(f"{n} from {source}" for source, n in counts["preferences_by_source"].items()) or "none"
    console.print(f"exported {counts['sft']} SFT records and {counts['preferences']} preference pairs ({sources}) "
                  f"from {counts['feedback']} feedback rows → {run_dir}", markup=False, soft_wrap=True)
    for code, n in counts["skipped"].items():
        console.print(f"  skipped {n}: {counts['reasons'][code]}", markup=False, soft_wrap=True)
    if counts["outside_filter"]:
        console.print(f"  {counts['outside_filter']} feedback rows are on other models (model filter)", markup=False)


run = monitor
