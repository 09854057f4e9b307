"""`honing data split`: deterministic train/validation/test files by ratios, optionally stratified.

Two passes over the input, so memory is a few bytes per record whatever their size:

1. workers parse every record (and read `stratify_by`); the main process keeps one small
   integer per record (its stratum);
2. each stratum's records are shuffled with a generator seeded by `seed` and cut by the ratios
   (exact sizes, largest remainders); the second pass streams every record to its split's file.

The same input and seed give the same files, for any number of workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from honing.config.workbench import DataSplitConfig
from honing.data.formats import RecordError
from honing.errors import DataError
from honing.workbench.io import AtomicOutputs, as_line, dumps, iter_items, parse_payload
from honing.workbench.pipeline import run_step
from honing.workbench.runner import failed, print_counts, record_outputs, start_run

MISSING = "(missing)"
REJECTED = -1


class StratumStep:
    def __init__(self, field: str | None) -> None:
        self.field = field

    def process(self, file: str, line: int, payload: Any) -> tuple[str, str]:
        try:
            record = parse_payload(payload)
        except RecordError as err:
            return ("rejected", str(err))
        if self.field is None:
            return ("ok", "")
        value = record.get(self.field, MISSING)
        return ("ok", value if isinstance(value, str) else json.dumps(value, sort_keys=True))


def allot(total: int, weights: list[float]) -> list[int]:
    """`total` items shared by `weights` (normalised): floors, then the largest remainders (ties: first)."""
    shares = np.asarray(weights, dtype=float) / sum(weights) * total
    sizes = np.floor(shares).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - sizes[i]), i))
    for i in order[: total - int(sizes.sum())]:
        sizes[i] += 1
    return [int(size) for size in sizes]


def assign(strata: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """The split index of every record (REJECTED stays), stratum by stratum."""
    assignment = np.full(len(strata), REJECTED, dtype=np.int8)
    rng = np.random.default_rng(seed)
    for stratum in np.unique(strata[strata >= 0]):
        members = np.flatnonzero(strata == stratum)
        members = members[rng.permutation(len(members))]
        start = 0
        for split, size in enumerate(allot(len(members), ratios)):
            assignment[members[start : start + size]] = split
            start += size
    return assignment


def run(cfg: DataSplitConfig) -> dict[str, Any]:
    """Split cfg.input into cfg.output/<split>.jsonl; see the module docstring."""
    run_record = start_run("split", cfg, {"input": cfg.input})
    names = list(cfg.ratios)
    try:
        strata, labels, rejects = _read_strata(cfg)
        assignment = assign(strata, [cfg.ratios[name] for name in names], cfg.seed)
        with AtomicOutputs() as outs:
            files = [outs.open(f"output:{name}", Path(cfg.output) / f"{name}.jsonl") for name in names]
            reject_file = outs.open("rejects", run_record.dir / "rejects.jsonl") if cfg.on_bad_record == "skip" else None
            for index, (file, line, payload) in enumerate(iter_items(cfg.input)):
                split = assignment[index]
                if split == REJECTED:
                    reject_file.write(dumps({"file": file, "line": line, "reason": rejects[index], "record": as_line(payload)}))
                else:
                    files[split].write(as_line(payload))
        record_outputs(run_record, outs.files)
    except BaseException as err:
        failed(run_record, err)
        raise
    sizes = {name: int((assignment == i).sum()) for i, name in enumerate(names)}
    counts: dict[str, Any] = {"in": len(assignment), "kept": sum(sizes.values()), "removed": 0,
                              "rejected": len(rejects), "removed_by": {}, "splits": sizes}
    if cfg.stratify_by:
        counts["strata"] = {
            labels[s]: {name: int(((strata == s) & (assignment == i)).sum()) for i, name in enumerate(names)}
            for s in range(len(labels))
        }
    run_record.set("counts", counts)
    run_record.finish("completed")
    print_counts("split", counts, run_record)
    return {"run_dir": str(run_record.dir), "counts": counts, "outputs": run_record.record["outputs"]}


def _read_strata(cfg: DataSplitConfig) -> tuple[np.ndarray, list[str], dict[int, str]]:
    """(stratum index per record, REJECTED for bad ones; stratum names; reasons of rejects by index)."""
    codes: dict[str, int] = {}
    strata: list[int] = []
    rejects: dict[int, str] = {}
    step = StratumStep(cfg.stratify_by)
    for (file, line, _), (status, value) in run_step(step, iter_items(cfg.input), workers=cfg.workers, chunk_size=cfg.chunk_size):
        if status == "rejected":
            if cfg.on_bad_record == "fail":
                raise DataError(f"{file}:{line}: {value} (on_bad_record=skip writes such records to rejects.jsonl instead)")
            rejects[len(strata)] = value
            strata.append(REJECTED)
            continue
        strata.append(codes.setdefault(value, len(codes)))
    return np.asarray(strata, dtype=np.int32), list(codes), rejects
