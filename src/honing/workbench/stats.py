"""`honing data stats`: what a data file holds, computed in one streaming pass.

Counts per format, a length histogram in characters (power-of-two bins) and, with `tokenizer`,
in tokens; the share of exact duplicates (normalised-text hash, as dedup's exact rule); PII
finds by type; and the distribution of one field's values. Written to <run_dir>/stats.json and
run.json, and printed.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from honing.config.workbench import DataStatsConfig
from honing.data.clean import joined_text
from honing.data.dedup import exact_hash
from honing.data.formats import RecordError, detect_format
from honing.data.pii import PII_TYPES, find_pii
from honing.errors import DataError
from honing.io import write_json_atomic
from honing.ui import console
from honing.workbench.clean import TokenCounter
from honing.workbench.io import iter_items, parse_payload
from honing.workbench.pipeline import run_step
from honing.workbench.runner import LengthHistogram, failed, start_run

OTHER = "(other values)"
MAX_DISTINCT = 10_000  # beyond this many distinct values of `field`, the rest are counted as OTHER


class StatsStep:
    def __init__(self, field: str | None, pii: bool, count_tokens: TokenCounter | None) -> None:
        self.field, self.pii, self.count_tokens = field, pii, count_tokens

    def process(self, file: str, line: int, payload: Any) -> tuple[Any, ...]:
        try:
            record = parse_payload(payload)
            fmt = detect_format(record)
        except (RecordError, DataError) as err:
            return ("rejected", str(err))
        text = joined_text(record)
        found = dict(Counter(m.type for m in find_pii(text, PII_TYPES))) if self.pii else {}
        value = None
        if self.field is not None:
            raw = record.get(self.field, "(missing)")
            value = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
        tokens = self.count_tokens(text) if self.count_tokens else None
        return ("ok", fmt, len(text), exact_hash(text), found, value, tokens)


def run(cfg: DataStatsConfig) -> dict[str, Any]:
    """Describe cfg.input; see the module docstring."""
    run_record = start_run("stats", cfg, {"input": cfg.input})
    step = StatsStep(cfg.field, cfg.pii, TokenCounter(cfg.tokenizer) if cfg.tokenizer else None)
    chars, tokens = LengthHistogram(), LengthHistogram()
    formats: Counter[str] = Counter()
    found: Counter[str] = Counter()
    values: Counter[str] = Counter()
    seen: set[bytes] = set()
    stats: dict[str, Any] = {"records": 0, "rejected": 0, "exact_duplicates": 0, "records_with_pii": 0}
    first_errors: list[str] = []
    try:
        for (file, line, _), result in run_step(step, iter_items(cfg.input), workers=cfg.workers, chunk_size=cfg.chunk_size):
            if result[0] == "rejected":
                if cfg.on_bad_record == "fail":
                    raise DataError(f"{file}:{line}: {result[1]} (on_bad_record=skip counts such records instead)")
                stats["rejected"] += 1
                if len(first_errors) < 10:
                    first_errors.append(f"{file}:{line}: {result[1]}")
                continue
            _, fmt, length, digest, pii, value, token_count = result
            stats["records"] += 1
            formats[fmt] += 1
            chars.add(length)
            if token_count is not None:
                tokens.add(token_count)
            if digest in seen:
                stats["exact_duplicates"] += 1
            else:
                seen.add(digest)
            if pii:
                found.update(pii)
                stats["records_with_pii"] += 1
            if value is not None:
                values[value if value in values or len(values) < MAX_DISTINCT else OTHER] += 1
    except BaseException as err:
        failed(run_record, err)
        raise
    stats["formats"] = dict(sorted(formats.items()))
    stats["duplicate_share"] = round(stats["exact_duplicates"] / stats["records"], 4) if stats["records"] else 0.0
    stats["length_chars"] = chars.as_dict()
    if cfg.tokenizer:
        stats["length_tokens"] = {**tokens.as_dict(), "unit": "tokens"}
    if cfg.pii:
        stats["pii_found"] = dict(sorted(found.items()))
    if cfg.field:
        stats["field"] = {"name": cfg.field, "distinct": len(values), "top": values.most_common(cfg.top_values)}
    stats["first_errors"] = first_errors
    write_json_atomic(run_record.dir / "stats.json", stats)
    run_record.set("counts", {"in": stats["records"] + stats["rejected"], "kept": stats["records"], "removed": 0,
                              "rejected": stats["rejected"], "removed_by": {}})
    run_record.set("stats", stats)
    run_record.set("length_histogram", stats["length_chars"])
    run_record.finish("completed")
    _print(stats, run_record.dir)
    return {"run_dir": str(run_record.dir), "stats": stats}


def _print(stats: dict[str, Any], run_dir: Any) -> None:
    console.print(f"[bold]data stats[/bold] → {run_dir}/stats.json")
    console.print(f"  records {stats['records']} ({', '.join(f'{k} {v}' for k, v in stats['formats'].items())}), rejected {stats['rejected']}")
    console.print(f"  exact duplicates {stats['exact_duplicates']} ({100 * stats['duplicate_share']:.1f}%)")
    if "pii_found" in stats:
        console.print(f"  PII: {stats['records_with_pii']} records; " + (", ".join(f"{k} {v}" for k, v in stats["pii_found"].items()) or "none"))
    for key in ("length_chars", "length_tokens"):
        if key in stats:
            hist = stats[key]
            console.print(f"  length in {hist['unit']}: min {hist['min']}, mean {hist['mean']}, max {hist['max']}")
            top = max((b["count"] for b in hist["bins"]), default=1) or 1
            for b in hist["bins"]:
                console.print(f"    {b['range']:>13} {'█' * round(30 * b['count'] / top)} {b['count']}")
    if "field" in stats:
        console.print(f"  {stats['field']['name']}: " + ", ".join(f"{v} {n}" for v, n in stats["field"]["top"]))
