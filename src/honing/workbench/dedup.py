"""`honing data dedup`: exact and MinHash near-duplicate removal, across splits and against
evaluation files.

Workers compute each record's fingerprint (normalised-text hash and MinHash signature,
honing.data.dedup.fingerprint); the main process inserts them into one LSH index in input
order, so the result does not depend on the number of workers. Order of work:

1. every `against` file is indexed (decontamination set);
2. the splits are read, training split first; each record is checked against the
   decontamination set (hit: reason `contamination`), then added to the split index: a hit on a
   record of the same split is `exact` or `near`; a hit on another split's record is
   `cross_split` and removes the later (evaluation-side) record.

Memory grows with the number of kept records (about 1.3 KB each at the defaults: see
`honing.data.dedup`), not with their text.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from honing.config.workbench import DataDedupConfig
from honing.data.dedup import Deduplicator, DupResult, fingerprint, record_dedup_text
from honing.data.formats import RecordError
from honing.errors import DataError
from honing.workbench.io import AtomicOutputs, as_line, dumps, iter_items, parse_payload
from honing.workbench.pipeline import run_step
from honing.workbench.runner import LengthHistogram, failed, print_counts, record_outputs, reject_or_stop, start_run


class FingerprintStep:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def process(self, file: str, line: int, payload: Any) -> tuple[Any, ...]:
        try:
            record = parse_payload(payload)
        except RecordError as err:
            return ("rejected", str(err))
        text = record_dedup_text(record, self.cfg.fields)
        found = fingerprint(text, self.cfg)
        return ("ok", found.exact_hash, found.signature, len(text))


def split_inputs(cfg: DataDedupConfig) -> dict[str, str]:
    """{split: file}, training split first; a single file is the split "train"."""
    if isinstance(cfg.input, str):
        return {"train": cfg.input}
    ordered = dict(sorted(cfg.input.items(), key=lambda kv: kv[0] != cfg.train_split))
    return ordered


def run(cfg: DataDedupConfig) -> dict[str, Any]:
    """Deduplicate cfg.input into cfg.output; see the module docstring."""
    splits = split_inputs(cfg)
    inputs = {f"input:{name}": path for name, path in splits.items()}
    inputs.update({f"against:{i}": path for i, path in enumerate(cfg.against)})
    run_record = start_run("dedup", cfg, inputs)
    step = FingerprintStep(cfg.dedup)
    index = Deduplicator(cfg.dedup)
    counts: dict[str, Any] = {"in": 0, "kept": 0, "removed": 0, "rejected": 0, "removed_by": Counter(), "splits": {}}
    histogram = LengthHistogram()
    try:
        contamination = _index_against(cfg, step)
        with AtomicOutputs() as outs:
            removed = outs.open("removed", run_record.dir / "removed.jsonl") if cfg.write_removed else None
            rejects = outs.open("rejects", run_record.dir / "rejects.jsonl") if cfg.on_bad_record == "skip" else None
            for name, path in splits.items():
                target = Path(cfg.output) / f"{name}.jsonl" if isinstance(cfg.input, dict) else Path(cfg.output)
                out = outs.open(f"output:{name}" if isinstance(cfg.input, dict) else "output", target)
                split_counts = counts["splits"][name] = Counter()
                for (file, line, payload), result in run_step(step, iter_items(path), workers=cfg.workers, chunk_size=cfg.chunk_size):
                    split_counts["in"] += 1
                    if result[0] == "rejected":
                        reject_or_stop(cfg, (file, line, payload), result[1], rejects)
                        split_counts["rejected"] += 1
                        continue
                    _, exact_hash, signature, length = result
                    reason, hit = _duplicate(f"{file}:{line}", name, exact_hash, signature, index, contamination)
                    if hit is None:
                        split_counts["kept"] += 1
                        histogram.add(length)
                        out.write(as_line(payload))
                        continue
                    split_counts["removed"] += 1
                    counts["removed_by"][reason] += 1
                    if removed is not None:
                        removed.write(dumps({
                            "file": file, "line": line, "reason": reason, "split": name, "duplicate_of": hit.of,
                            "duplicate_of_split": hit.of_group, "similarity": round(hit.similarity, 4),
                            "record": parse_payload(payload),
                        }))
        record_outputs(run_record, outs.files)
    except BaseException as err:
        failed(run_record, err)
        raise
    for split_counts in counts["splits"].values():
        for key in ("in", "kept", "removed", "rejected"):
            split_counts.setdefault(key, 0)
            counts[key] += split_counts[key]
    counts["splits"] = {name: dict(c) for name, c in counts["splits"].items()}
    counts["removed_by"] = dict(sorted(counts["removed_by"].items()))
    run_record.set("counts", counts)
    run_record.set("dedup", index.params())
    run_record.set("length_histogram", histogram.as_dict())
    run_record.finish("completed")
    print_counts("dedup", counts, run_record)
    return {"run_dir": str(run_record.dir), "counts": counts, "outputs": run_record.record["outputs"]}


def _index_against(cfg: DataDedupConfig, step: FingerprintStep) -> Deduplicator | None:
    """The decontamination index of every `against` file (their bad records fail: they are references)."""
    if not cfg.against:
        return None
    index = Deduplicator(cfg.dedup)
    for path in cfg.against:
        for (file, line, _), result in run_step(step, iter_items(path), workers=cfg.workers, chunk_size=cfg.chunk_size):
            if result[0] == "rejected":
                raise DataError(f"{file}:{line}: {result[1]} (in an evaluation file given as against)")
            index.add_signature(f"{file}:{line}", result[1], result[2], group="against")
    return index


def _duplicate(key: str, split: str, exact_hash: Any, signature: Any, index: Deduplicator,
               contamination: Deduplicator | None) -> tuple[str | None, DupResult | None]:
    """(reason, hit) when the record is to be removed, else (None, None); kept records are indexed."""
    if contamination is not None:
        hit = contamination.check_signature(exact_hash, signature)
        if hit.is_duplicate:
            return "contamination", hit
    hit = index.add_signature(key, exact_hash, signature, group=split)
    if not hit.is_duplicate:
        return None, None
    return ("cross_split" if hit.of_group != split else hit.kind), hit
