"""`honing monitor`'s numbers: the request log, per model version, read as the server wrote it.

    select     the requests of the window (since) and model filter, and the feedback given on them
    summarise  per version: traffic over time, latency p50/p95/p99, time to first token p50/p95, tokens/s,
               errors by status and type, finish reasons, refusal rate of the answers (honing's red-team
               refusal detector), feedback volume

A version is the log's `model_version` ("support-bot@3" for a registry-served model, else the path), so two
versions served under one name are reported apart. Times are UTC. Every value is JSON-ready: `monitor.json`
holds exactly what the report shows.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from typing import Any

BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400)
"""Traffic bin widths in seconds: the finest that keeps a version's chart to MAX_BINS bins."""
MAX_BINS = 48


def version_of(row: dict[str, Any]) -> str:
    """The version a logged request was answered by (its served name when the log has no version)."""
    return row.get("model_version") or row.get("model") or "unknown"


def matches(row: dict[str, Any], model: str | None) -> bool:
    """The row is of `model`: its served name or its exact version (None: every row)."""
    return model is None or model in (row.get("model"), row.get("model_version"))


def when(seconds: float | None) -> str | None:
    """An epoch second as UTC ISO text."""
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="seconds")


def select(requests: list[dict[str, Any]], feedback: list[dict[str, Any]],
           model: str | None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(requests by version, feedback by version): the model filter applied, feedback joined to its request."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    version_of_request: dict[str, str] = {}
    for row in requests:
        if matches(row, model):
            by_version.setdefault(version_of(row), []).append(row)
            version_of_request[row["id"]] = version_of(row)
    given: dict[str, list[dict[str, Any]]] = {version: [] for version in by_version}
    for row in feedback:
        version = version_of_request.get(row["request_id"])
        if version is not None:
            given[version].append(row)
    return by_version, given


# --------------------------------------------------------------------------- one version


def summarise(rows: list[dict[str, Any]], feedback: list[dict[str, Any]], *, axis: tuple[float, float],
              confidence: float) -> dict[str, Any]:
    """Every number of one version's section; `axis` is the (first, last) time shared by all versions' charts."""
    answered = [r for r in rows if r["status"] == 200]
    return {
        "model": _most_common(r.get("model") for r in rows),
        "requests": len(rows), "answered": len(answered), "streamed": sum(bool(r.get("stream")) for r in rows),
        "first": when(min(r["created"] for r in rows)), "last": when(max(r["created"] for r in rows)),
        "traffic": traffic(rows, *axis),
        "latency_s": percentiles([r.get("latency_s") for r in answered], (50, 95, 99)),
        "first_token_s": percentiles([r.get("first_token_s") for r in answered], (50, 95)),
        "tokens_per_s": tokens_per_second(answered),
        "tokens": {"prompt_mean": _mean([r["prompt_tokens"] for r in answered]),
                   "completion_mean": _mean([r["completion_tokens"] for r in answered]),
                   "prompt_total": sum(r["prompt_tokens"] for r in answered),
                   "completion_total": sum(r["completion_tokens"] for r in answered)},
        "errors": errors(rows, confidence),
        "finish_reasons": dict(Counter(str(c.get("finish_reason")) for r in answered for c in r.get("choices") or [])
                               or Counter(str(r.get("finish_reason")) for r in answered)),
        "refusals": refusals(answered, confidence),
        "feedback": feedback_volume(feedback, len(answered)),
    }


def _most_common(values) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentiles(values: list[float | None], points: tuple[int, ...]) -> dict[str, Any]:
    """{"n", "p50", "p95", ...} of the known values (linear interpolation between order statistics)."""
    import numpy as np

    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    out: dict[str, Any] = {"n": len(known)}
    for point in points:
        out[f"p{point}"] = float(np.percentile(known, point)) if known else None
    return out


def tokens_per_second(answered: list[dict[str, Any]]) -> dict[str, Any]:
    """Output speed: per request completion tokens ÷ latency (the median, and all tokens ÷ all seconds), and,
    where the time to first token is known, decoding speed (tokens after the first ÷ the time after it)."""
    import numpy as np

    timed = [r for r in answered if (r.get("latency_s") or 0) > 0 and r["completion_tokens"] > 0]
    speeds = [r["completion_tokens"] / r["latency_s"] for r in timed]
    decoded = [(r["completion_tokens"] - 1) / (r["latency_s"] - r["first_token_s"]) for r in timed
               if r.get("first_token_s") is not None and r["completion_tokens"] > 1 and r["latency_s"] > r["first_token_s"]]
    seconds = sum(r["latency_s"] for r in timed)
    return {"n": len(timed), "median": float(np.median(speeds)) if speeds else None,
            "overall": sum(r["completion_tokens"] for r in timed) / seconds if seconds else None,
            "decode_median": float(np.median(decoded)) if decoded else None, "decode_n": len(decoded)}


def traffic(rows: list[dict[str, Any]], first: float, last: float) -> dict[str, Any]:
    """Requests (and refused ones: status ≠ 200) per time bin, bins aligned to UTC multiples of their width."""
    width = next((b for b in BUCKETS if (last - first) / b < MAX_BINS), BUCKETS[-1])
    start = math.floor(first / width) * width
    bins = max(1, math.floor((last - start) / width) + 1)
    counts, failed = [0] * bins, [0] * bins
    for row in rows:
        index = min(bins - 1, max(0, int((row["created"] - start) // width)))
        counts[index] += 1
        failed[index] += row["status"] != 200
    return {"bucket_s": width, "start": when(start), "start_s": start, "counts": counts, "errors": failed}


def rate(hits: int, total: int, confidence: float) -> dict[str, Any]:
    """A share with its bootstrap interval (honing.evals.stats, as every rate honing reports)."""
    from honing.evals.stats import bootstrap_mean

    if not total:
        return {"mean": None, "low": None, "high": None, "n": 0}
    return bootstrap_mean([1.0] * hits + [0.0] * (total - hits), confidence=confidence).as_dict()


def errors(rows: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """Requests not answered 200, overall and per (status, error type), each with its share of all requests."""
    failed = [r for r in rows if r["status"] != 200]
    kinds = Counter((r["status"], r.get("error") or "") for r in failed)
    return {"count": len(failed), "rate": rate(len(failed), len(rows), confidence),
            "by_kind": [{"status": status, "type": kind, "count": count, "share": count / len(rows)}
                        for (status, kind), count in sorted(kinds.items(), key=lambda item: (-item[1], item[0]))]}


def refusals(answered: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """The share of logged answers that refuse, by `honing.redteam.detectors.find_refusal` (an empty answer
    counts as a refusal); answers the log kept no text of (log.store_text=false) are counted apart."""
    from honing.redteam.detectors import find_refusal

    texts = [c.get("text") for r in answered for c in r.get("choices") or []]
    known = [t for t in texts if isinstance(t, str)]
    refused = [t for t in known if find_refusal(t)[0]]
    without = sum(r.get("choices") is None for r in answered) + len(texts) - len(known)
    return {"answers": len(known), "refused": len(refused), "rate": rate(len(refused), len(known), confidence),
            "without_text": without, "examples": [t[:200] for t in list(dict.fromkeys(refused))[:3]]}


def feedback_volume(feedback: list[dict[str, Any]], answered: int) -> dict[str, Any]:
    """Ratings up and down, corrected answers, choices between answers, comments, and how many requests got any."""
    requests = {row["request_id"] for row in feedback}
    return {"rows": len(feedback), "up": sum(r.get("rating") == "up" for r in feedback),
            "down": sum(r.get("rating") == "down" for r in feedback),
            "corrections": sum(bool(r.get("correction")) for r in feedback),
            "choices": sum(r.get("choice") is not None for r in feedback),
            "comments": sum(bool(r.get("comment")) for r in feedback),
            "requests": len(requests), "share": len(requests) / answered if answered else None}


def summaries(by_version: dict[str, list[dict[str, Any]]], given: dict[str, list[dict[str, Any]]], *,
              confidence: float) -> dict[str, dict[str, Any]]:
    """Version -> its summary (from `select`), versions in the order they were first seen, on one time axis."""
    times = [r["created"] for rows in by_version.values() for r in rows]
    if not times:
        return {}
    axis = (min(times), max(times))
    return {version: summarise(rows, given[version], axis=axis, confidence=confidence)
            for version, rows in by_version.items()}
