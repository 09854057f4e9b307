"""`honing data mix`: several datasets combined by weights or counts, with provenance.

Two passes, a few bytes per record in memory:

1. workers parse every source record (and fingerprint it when `against` files are given); a
   record that duplicates an evaluation record is excluded before sampling (reason
   `contamination`, written to <run_dir>/removed.jsonl);
2. each source contributes its count (counts, or `total` shared by the weights with largest
   remainders): a seeded sample without replacement, or every record repeated plus a sample
   when the source is smaller than its share (`repeated` in run.json says so). The sources are
   interleaved in a seeded random order and each record gains `_source: <name>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from honing.config.workbench import DataMixConfig
from honing.data.dedup import Deduplicator
from honing.errors import DataError
from honing.workbench.dedup import FingerprintStep, _index_against
from honing.workbench.io import AtomicOutputs, dumps, iter_items, parse_payload
from honing.workbench.pipeline import run_step
from honing.workbench.runner import LengthHistogram, failed, print_counts, record_outputs, reject_or_stop, start_run
from honing.workbench.split import allot


def run(cfg: DataMixConfig) -> dict[str, Any]:
    """Mix cfg.sources into cfg.output; see the module docstring."""
    inputs = {f"source:{name}": path for name, path in cfg.sources.items()}
    inputs.update({f"against:{i}": path for i, path in enumerate(cfg.against)})
    run_record = start_run("mix", cfg, inputs)
    rng = np.random.default_rng(cfg.seed)
    names = list(cfg.sources)
    per_source: dict[str, dict[str, Any]] = {}
    histogram = LengthHistogram()
    try:
        with AtomicOutputs() as outs:
            removed = outs.open("removed", run_record.dir / "removed.jsonl")
            rejects = outs.open("rejects", run_record.dir / "rejects.jsonl") if cfg.on_bad_record == "skip" else None
            contamination = _index_against(cfg, FingerprintStep(cfg.dedup)) if cfg.against else None
            eligible = {name: _scan(cfg, name, contamination, per_source, removed, rejects) for name in names}
            wanted = _wanted(cfg, names, eligible)
            chosen = {name: _choose(rng, eligible[name], wanted[name], name, per_source) for name in names}
            order = np.repeat(np.arange(len(names)), [wanted[name] for name in names])
            rng.shuffle(order)
            out = outs.open("output", cfg.output)
            streams = [_selected(cfg.sources[name], chosen[name]) for name in names]
            for source in order:
                record = next(streams[source])
                if cfg.add_source:
                    record["_source"] = names[source]
                histogram.add(sum(len(v) for v in record.values() if isinstance(v, str)))
                out.write(dumps(record))
        record_outputs(run_record, outs.files)
    except BaseException as err:
        failed(run_record, err)
        raise
    counts: dict[str, Any] = {
        "in": sum(s["records"] for s in per_source.values()),
        "kept": int(len(order)),
        "removed": sum(s["contaminated"] for s in per_source.values()),
        "rejected": sum(s["rejected"] for s in per_source.values()),
        "removed_by": {"contamination": sum(s["contaminated"] for s in per_source.values())} if cfg.against else {},
        "sources": per_source,
    }
    run_record.set("counts", counts)
    run_record.set("length_histogram", histogram.as_dict())
    run_record.finish("completed")
    print_counts("mix", counts, run_record)
    return {"run_dir": str(run_record.dir), "counts": counts, "outputs": run_record.record["outputs"]}


def _scan(cfg: DataMixConfig, name: str, contamination: Deduplicator | None, per_source: dict[str, Any],
          removed: Any, rejects: Any) -> np.ndarray:
    """Indices of the source's records that may be sampled."""
    stats = per_source[name] = {"records": 0, "rejected": 0, "contaminated": 0}
    keep: list[int] = []
    step = FingerprintStep(cfg.dedup)
    for index, ((file, line, payload), result) in enumerate(
        run_step(step, iter_items(cfg.sources[name]), workers=cfg.workers, chunk_size=cfg.chunk_size)
    ):
        stats["records"] += 1
        if result[0] == "rejected":
            reject_or_stop(cfg, (file, line, payload), result[1], rejects)
            stats["rejected"] += 1
            continue
        if contamination is not None:
            hit = contamination.check_signature(result[1], result[2])
            if hit.is_duplicate:
                stats["contaminated"] += 1
                removed.write(dumps({"file": file, "line": line, "reason": "contamination", "source": name,
                                     "duplicate_of": hit.of, "similarity": round(hit.similarity, 4),
                                     "record": parse_payload(payload)}))
                continue
        keep.append(index)
    return np.asarray(keep, dtype=np.int64)


def _wanted(cfg: DataMixConfig, names: list[str], eligible: dict[str, np.ndarray]) -> dict[str, int]:
    if cfg.counts is not None:
        return {name: cfg.counts[name] for name in names}
    total = cfg.total if cfg.total is not None else sum(len(eligible[name]) for name in names)
    return dict(zip(names, allot(total, [cfg.weights[name] for name in names])))


def _choose(rng: np.random.Generator, eligible: np.ndarray, wanted: int, name: str, per_source: dict[str, Any]) -> np.ndarray:
    """Sorted record indices (with repeats when upsampling) to take from one source."""
    stats = per_source[name]
    stats["taken"], stats["repeated"] = wanted, max(0, wanted - len(eligible))
    if wanted and not len(eligible):
        raise DataError(f"source {name!r} has no usable records but {wanted} were asked for")
    copies, rest = divmod(wanted, len(eligible)) if len(eligible) else (0, 0)
    picked = np.concatenate([np.tile(eligible, copies), rng.choice(eligible, rest, replace=False) if rest else eligible[:0]])
    return np.sort(picked)


def _selected(path: str, indices: np.ndarray) -> Iterator[dict[str, Any]]:
    """The records at `indices` (sorted, repeats allowed), read in one pass."""
    position = 0
    for index, (_, _, payload) in enumerate(iter_items(path)):
        while position < len(indices) and indices[position] == index:
            yield parse_payload(payload)
            position += 1
        if position == len(indices):
            return
