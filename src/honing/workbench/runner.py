"""What every data command shares: the run record, counting, the length histogram, and the
streaming driver of the record-by-record commands (clean, pii, convert).

Counts in run.json (`counts`) always balance: in = kept + removed + rejected, with `removed_by`
giving the removals per rule, type or duplicate kind. Outputs are listed with their sha256 and
record counts, so `honing data card` and any later stage can walk back to the raw files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from honing.config import StrictModel
from honing.data.loading import Unreadable
from honing.errors import DataError
from honing.runs import Run, default_run_dir, file_sha256
from honing.ui import console
from honing.workbench.io import AtomicFile, AtomicOutputs, Item, dumps, iter_items
from honing.workbench.pipeline import resolve_workers, run_step


class Outcome(NamedTuple):
    """What a step did to one record (returned from a worker)."""

    kind: str
    """kept, removed or rejected."""
    line: str | None = None
    """The output JSONL line of a kept record."""
    reason: str | None = None
    """Rule, type or error that removed or rejected the record."""
    length: int = 0
    """Characters of text in the kept record (for the length histogram)."""
    found: dict[str, int] | None = None
    """Finds per type (pii)."""
    detail: Any = None
    """Extra facts written beside a removed record, or findings (pii report)."""


# --------------------------------------------------------------------------- histogram


def length_bin(length: int) -> str:
    """Power-of-two bins, so a histogram streams without knowing the range: 0, 1-1, 2-3, 4-7, ..."""
    if length <= 0:
        return "0"
    low = 1 << (length.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


class LengthHistogram:
    def __init__(self) -> None:
        self.bins: Counter[str] = Counter()
        self.total = 0
        self.count = 0
        self.low: int | None = None
        self.high = 0

    def add(self, length: int) -> None:
        self.bins[length_bin(length)] += 1
        self.total += length
        self.count += 1
        self.low = length if self.low is None else min(self.low, length)
        self.high = max(self.high, length)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.bins.items(), key=lambda kv: int(kv[0].split("-")[0]))
        return {
            "unit": "characters",
            "bins": [{"range": name, "count": count} for name, count in ordered],
            "min": self.low or 0,
            "max": self.high,
            "mean": round(self.total / self.count, 1) if self.count else 0.0,
        }


# --------------------------------------------------------------------------- the run record


def start_run(command: str, cfg: StrictModel, inputs: dict[str, str | Path]) -> Run:
    """The run directory of a data command, with every input and its sha256."""
    for path in inputs.values():
        if not Path(path).exists():
            raise DataError(f"{path} does not exist")
    run_dir = getattr(cfg, "run_dir", None) or default_run_dir(f"data-{command}")
    run = Run.create(f"data-{command}", cfg, run_dir)
    run.record["command_name"] = command
    run.record["parameters"] = cfg.model_dump(mode="json")
    if hasattr(cfg, "workers"):
        run.record["workers"] = resolve_workers(cfg.workers)
    for role, path in inputs.items():
        run.add_input(role, path)
    return run


def record_outputs(run: Run, files: dict[str, AtomicFile]) -> None:
    """List committed files with their sha256 and line counts."""
    for role, file in files.items():
        run.record["outputs"][role] = {"path": str(file.path), "sha256": file_sha256(file.path), "records": file.lines}


def failed(run: Run, error: BaseException) -> None:
    run.record["error"] = str(error) or type(error).__name__
    run.finish("failed")


def print_counts(command: str, counts: dict[str, Any], run: Run) -> None:
    removed = ", ".join(f"{name} {n}" for name, n in sorted(counts.get("removed_by", {}).items())) or "none"
    console.print(
        f"[bold]data {command}[/bold]: {counts.get('in', 0)} in, {counts.get('kept', 0)} kept, "
        f"{counts.get('removed', 0)} removed ({removed}), {counts.get('rejected', 0)} rejected → {run.dir}"
    )


# --------------------------------------------------------------------------- record-by-record commands


def stream_filter(
    command: str,
    cfg: Any,
    step: Any,
    *,
    output: str | None,
    write_removed: bool,
    findings: bool = False,
    extra: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run `step` over every record of cfg.input: kept records to `output`, removed ones (with
    their reason) to <run_dir>/removed.jsonl, rejects to <run_dir>/rejects.jsonl."""
    run = start_run(command, cfg, {"input": cfg.input})
    counts: dict[str, Any] = {"in": 0, "kept": 0, "removed": 0, "rejected": 0, "removed_by": Counter(), "found": Counter(), "records_with_finds": 0}
    histogram = LengthHistogram()
    try:
        with AtomicOutputs() as outs:
            out = outs.open("output", output) if output else None
            removed = outs.open("removed", run.dir / "removed.jsonl") if write_removed else None
            rejects = outs.open("rejects", run.dir / "rejects.jsonl") if cfg.on_bad_record == "skip" else None
            found_file = outs.open("findings", run.dir / "findings.jsonl") if findings else None
            items = iter_items(cfg.input)
            for (file, line, payload), outcome in run_step(step, items, workers=cfg.workers, chunk_size=cfg.chunk_size):
                _tally(outcome, (file, line, payload), counts, cfg, out, removed, rejects, found_file, histogram)
        record_outputs(run, outs.files)
    except BaseException as err:
        failed(run, err)
        raise
    counts["removed_by"] = dict(sorted(counts["removed_by"].items()))
    counts["found"] = dict(sorted(counts["found"].items()))
    if not counts["found"]:
        del counts["found"], counts["records_with_finds"]
    run.set("counts", counts)
    run.set("length_histogram", histogram.as_dict())
    if extra:
        extra(run.record)
    run.finish("completed")
    print_counts(command, counts, run)
    return {"run_dir": str(run.dir), "counts": counts, "outputs": run.record["outputs"]}


def _tally(outcome: Outcome, item: Item, counts: dict[str, Any], cfg: Any, out: AtomicFile | None,
           removed: AtomicFile | None, rejects: AtomicFile | None, found_file: AtomicFile | None,
           histogram: LengthHistogram) -> None:
    file, line, payload = item
    counts["in"] += 1
    if outcome.found:
        counts["found"].update(outcome.found)
        counts["records_with_finds"] += 1
    if outcome.kind == "rejected":
        reject_or_stop(cfg, item, outcome.reason, rejects)
        counts["rejected"] += 1
        return
    if found_file is not None and outcome.detail:
        for finding in outcome.detail:
            found_file.write(dumps({"file": file, "line": line, **finding}))
    if outcome.kind == "removed":
        counts["removed"] += 1
        counts["removed_by"][outcome.reason] += 1
        if removed is not None:
            entry = {"file": file, "line": line, "reason": outcome.reason}
            if outcome.detail and found_file is None:
                entry["detail"] = outcome.detail
            removed.write(dumps({**entry, "record": _record(payload)}))
        return
    counts["kept"] += 1
    histogram.add(outcome.length)
    if out is not None:
        out.write(outcome.line)


def reject_or_stop(cfg: Any, item: Item, reason: str, rejects: AtomicFile | None) -> None:
    """A bad record: with on_bad_record=fail, stop at its file:line (no output is written); with
    skip, write it to rejects.jsonl (the caller counts it)."""
    file, line, payload = item
    if cfg.on_bad_record == "fail":
        raise DataError(f"{file}:{line}: {reason} (on_bad_record=skip writes such records to rejects.jsonl instead)")
    if rejects is not None:
        rejects.write(dumps({"file": file, "line": line, "reason": reason, "record": _record(payload)}))


def _record(payload: Any) -> Any:
    """The record as JSON for a side file; a line that is not JSON (or not UTF-8) stays its text."""
    if isinstance(payload, Unreadable):
        return payload.text.rstrip("\r\n")
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        return payload.rstrip("\r\n")
