"""`honing data card`: a Markdown data card written only from run directories.

Everything on the card is read from the runs' run.json files (the run directories of earlier
`honing data` commands, in the order they were applied): the sources and their sha256, each
step with its parameters and its counts (removals by rule, type or duplicate kind), PII finds,
the splits and their sizes, and the length histogram of the last step that recorded one. Nothing
is recomputed or typed by hand, so the card cannot drift from what was done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from honing.config.workbench import DataCardConfig
from honing.errors import DataError
from honing.runs import RUN_FILE
from honing.ui import console
from honing.workbench.io import AtomicOutputs

BAR = 30


def load_runs(paths: list[str]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        record_path = Path(path) / RUN_FILE
        if not record_path.is_file():
            raise DataError(f"{path} is not a run directory (no {RUN_FILE})")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if not str(record.get("stage", "")).startswith("data-"):
            raise DataError(f"{path} is a {record.get('stage')} run, not a honing data command's")
        if record.get("status") != "completed":
            raise DataError(f"{path}: the run did not complete (status {record.get('status')}); a card describes finished work")
        runs.append({**record, "dir": str(path)})
    return runs


def render(title: str, runs: list[dict[str, Any]]) -> str:
    lines = [f"# {title}", "", f"Written by `honing data card` from {len(runs)} run record(s); every number below is read from them.", ""]
    return "\n".join(lines + sections(runs)).rstrip() + "\n"


def sections(runs: list[dict[str, Any]]) -> list[str]:
    """The card's Markdown lines below its title (`## Sources`, `## Steps`, ...), as `honing audit` embeds them."""
    return _sources(runs) + _steps(runs) + _pii(runs) + _splits(runs) + _histogram(runs)


def _sources(runs: list[dict[str, Any]]) -> list[str]:
    # A source is an input that no *earlier* step wrote (a step that changes nothing writes a file
    # with its own input's hash; that input is still a source).
    rows, produced = [], set()
    for run in runs:
        rows += [(i["path"], i["sha256"], i["role"]) for i in run.get("inputs", []) if i.get("sha256") not in produced]
        produced |= {out["sha256"] for out in _outputs(run)}
    lines = ["## Sources", "", "| file | role | sha256 |", "| --- | --- | --- |"]
    seen = set()
    for path, digest, role in rows:
        if (path, digest) not in seen:
            seen.add((path, digest))
            lines.append(f"| `{path}` | {role} | `{digest}` |")
    return lines + [""]


def _steps(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Steps", ""]
    for number, run in enumerate(runs, start=1):
        command = run.get("command_name") or run["stage"].removeprefix("data-")
        counts = run.get("counts", {})
        lines += [f"### {number}. `honing data {command}` — run `{run['run_id']}`", ""]
        lines.append(
            f"Records in: {counts.get('in', 0)}; kept: {counts.get('kept', counts.get('valid', 0))}; "
            f"removed: {counts.get('removed', 0)}; rejected: {counts.get('rejected', counts.get('invalid', 0))}."
        )
        removed_by = counts.get("removed_by") or {}
        if removed_by:
            lines += ["", "| removed by | records |", "| --- | --- |"]
            lines += [f"| {reason} | {n} |" for reason, n in removed_by.items()]
        lines += ["", "<details><summary>parameters</summary>", "", "```json",
                  json.dumps(_parameters(run), indent=2, sort_keys=True), "```", "", "</details>", ""]
        outputs = _outputs(run)
        if outputs:
            lines += ["| output | records | sha256 |", "| --- | --- | --- |"]
            lines += [f"| `{o['path']}` | {o['records']} | `{o['sha256']}` |" for o in outputs]
            lines.append("")
    return lines


def _parameters(run: dict[str, Any]) -> dict[str, Any]:
    params = dict(run.get("parameters", {}))
    for key in ("workers", "chunk_size", "run_dir"):  # how it ran, not what it did
        params.pop(key, None)
    if "dedup" in run:
        params["dedup_lsh"] = run["dedup"]
    return params


def _outputs(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in run.get("outputs", {}).values() if isinstance(o, dict) and "sha256" in o]


def _pii(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for run in runs:
        found = run.get("counts", {}).get("found") or run.get("stats", {}).get("pii_found")
        if found:
            action = run.get("parameters", {}).get("pii", {}).get("action", "counted")
            lines += [f"PII found by `{run['run_id']}` (action: {action}):", "", "| type | finds |", "| --- | --- |"]
            lines += [f"| {kind} | {n} |" for kind, n in found.items()] + [""]
    return (["## Personal data", ""] + lines) if lines else []


def _splits(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for run in runs:
        counts = run.get("counts", {})
        sizes = counts.get("splits")
        if isinstance(sizes, dict) and sizes:
            lines += [f"From `{run['run_id']}`:", "", "| split | records |", "| --- | --- |"]
            lines += [f"| {name} | {n['kept'] if isinstance(n, dict) else n} |" for name, n in sizes.items()] + [""]
    return (["## Splits", ""] + lines) if lines else []


def _histogram(runs: list[dict[str, Any]]) -> list[str]:
    for run in reversed(runs):
        hist = run.get("length_histogram")
        if hist and hist.get("bins"):
            top = max(b["count"] for b in hist["bins"]) or 1
            lines = [f"## Lengths ({hist['unit']}, output of `{run['run_id']}`)", "",
                     f"min {hist['min']}, mean {hist['mean']}, max {hist['max']}", "", "```"]
            lines += [f"{b['range']:>13} {'█' * round(BAR * b['count'] / top)} {b['count']}" for b in hist["bins"]]
            return lines + ["```", ""]
    return []


def run(cfg: DataCardConfig) -> dict[str, Any]:
    """Write the card of cfg.runs to cfg.output."""
    runs = load_runs(cfg.runs)
    text = render(cfg.title, runs)
    with AtomicOutputs() as outs:
        outs.open("card", cfg.output).handle.write(text)
    console.print(f"[bold]data card[/bold]: {len(runs)} steps → {cfg.output}")
    return {"output": cfg.output, "steps": len(runs)}
