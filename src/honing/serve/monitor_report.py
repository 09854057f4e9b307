"""The monitor report: report.md and one self-contained report.html (inline SVG, no script, nothing from a CDN),
both rendered from one list of blocks by `honing.evals.report`, so they never disagree; and monitor.json, every
number they show. `results` is what `honing.stages.monitor` gathers: the window, and per version the summary of
`honing.serve.monitor`, the drift of `honing.serve.drift` and the shadow evaluation of `honing.serve.shadow`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.evals.charts import COLORS, _svg_open, _text, _ticks, finite, interval_chart
from honing.evals.report import Block, blocks_html, blocks_markdown
from honing.io import write_json_atomic, write_text_atomic
from honing.serve.monitor import when

ERROR_COLOR = "#dc2626"


# --------------------------------------------------------------------------- numbers


def secs(value: Any) -> str:
    value = finite(value)
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def pct(value: Any) -> str:
    value = finite(value)
    return "n/a" if value is None else f"{value * 100:.1f}%"


def pct_interval(interval: dict[str, Any] | None) -> str:
    interval = interval or {}
    mean, low, high = (finite(interval.get(k)) for k in ("mean", "low", "high"))
    if mean is None:
        return "n/a"
    return pct(mean) + (f" [{low * 100:.1f}, {high * 100:.1f}]" if low is not None and high is not None else "")


def num(value: Any, spec: str = ".3g") -> str:
    value = finite(value)
    return "n/a" if value is None else format(value, spec)


def score(interval: dict[str, Any] | None) -> str:
    """An eval score as the eval report reads it: a percentage for shares, else four significant digits."""
    interval = interval or {}
    mean, low, high = (finite(interval.get(k)) for k in ("mean", "low", "high"))
    if mean is None:
        return "n/a"
    if all(v is not None and -1e-9 <= v <= 1 + 1e-9 for v in (mean, low, high)):
        return f"{mean * 100:.1f}% [{low * 100:.1f}, {high * 100:.1f}] (n {interval.get('n')})"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}] (n {interval.get('n')})"


def difference(row: dict[str, Any]) -> str:
    """Served minus registered: percentage points for shares, else four significant digits."""
    value = finite(row.get("difference"))
    if value is None:
        return "n/a"
    shares = all(-1e-9 <= (finite((row.get(k) or {}).get("mean")) or 0.0) <= 1 + 1e-9 for k in ("served", "registered"))
    return f"{value * 100:+.1f} pts" if shares else f"{value:+.4g}"


def width_text(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"


# --------------------------------------------------------------------------- a bar chart


def bar_chart(labels: list[str], series: list[tuple[str, list[float], str]], label: str, *, stacked: bool,
              percent: bool = False) -> str:
    """Bars per label: stacked (traffic: answered + refused) or side by side (shares of two samples), with a value
    axis and a legend; every n-th label is written so that they never overlap."""
    totals = [sum(values[i] for _, values, _ in series) if stacked else max(values[i] for _, values, _ in series)
              for i in range(len(labels))]
    top = max(totals, default=0) or 1.0
    width, height, left, right, upper, lower = 640, 240, 52, 12, 28, 44
    plot_w, plot_h = width - left - right, height - upper - lower
    slot = plot_w / max(1, len(labels))
    parts = [_svg_open(width, height, label)]
    for tick in _ticks(0.0, top):
        y = upper + plot_h - tick / top * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(_text(left - 6, y + 4, f"{tick * 100:g}%" if percent else f"{tick:g}", "end"))
    every = max(1, round(len(labels) / 8))
    for i, name in enumerate(labels):
        base, x0 = upper + plot_h, left + slot * i
        bar_w = slot * 0.8 / (1 if stacked else len(series))
        for k, (_, values, color) in enumerate(series):
            h = values[i] / top * plot_h
            x = x0 + slot * 0.1 + (0 if stacked else k * bar_w)
            parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{color}"/>')
            if stacked:
                base -= h
        if i % every == 0:
            parts.append(_text(x0 + slot / 2, upper + plot_h + 16, name, "middle"))
    parts.append(f'<line x1="{left}" y1="{upper + plot_h}" x2="{width - right}" y2="{upper + plot_h}" stroke="#6b7280"/>')
    for k, (name, _, color) in enumerate(series):
        x = left + 8 + 170 * k
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{color}"/>')
        parts.append(_text(x + 18, 18, name))
    return "".join(parts) + "</svg>"


# --------------------------------------------------------------------------- blocks


def report_blocks(results: dict[str, Any], charts: bool) -> list[Block]:
    window = results["window"]
    meta = [f"created {results['created']}", f"log {results['log']}",
            f"from {window.get('since') or window.get('first') or 'the start'} to {window.get('last') or 'now'} (UTC)",
            f"model {results['model']}" if results.get("model") else "every model"]
    blocks = [Block("h1", "honing monitor"), Block("p", " · ".join(meta), "meta")]
    versions = results["versions"]
    if not versions:
        return blocks + [Block("p", "No request in this window matches the filter.")]
    blocks += _overview(versions, charts, results["confidence"])
    for version, summary in versions.items():
        blocks += _version_blocks(version, summary, charts)
    return blocks


def _overview(versions: dict[str, Any], charts: bool, confidence: float) -> list[Block]:
    rows = [[version, str(s.get("model") or "—"), str(s["requests"]), str(s["answered"]),
             f"{s['errors']['count']} ({pct_interval(s['errors']['rate'])})",
             f"{secs(s['latency_s']['p50'])} / {secs(s['latency_s']['p95'])}",
             f"{pct_interval(s['refusals']['rate'])} of {s['refusals']['answers']}", str(s["feedback"]["rows"])]
            for version, s in versions.items()]
    header = ["version", "served as", "requests", "answered", "errors (rate)", "latency p50 / p95", "refusals",
              "feedback"]
    blocks = [Block("h2", "Overview"), Block("table", (header, rows))]
    if charts:
        for key, title in (("errors", "error rate"), ("refusals", "refusal rate")):
            points = [(v, _triple(s[key]["rate"])) for v, s in versions.items()]
            blocks += [Block("p", f"{title} by version ({confidence * 100:g}% bootstrap interval)", "meta"),
                       Block("html", interval_chart(points, f"{title} by version"))]
    return blocks


def _triple(interval: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    return finite(interval.get("mean")), finite(interval.get("low")), finite(interval.get("high"))


def _version_blocks(version: str, s: dict[str, Any], charts: bool) -> list[Block]:
    meta = [f"served as {s.get('model') or '—'}", f"first request {s['first']}", f"last {s['last']}",
            f"{s['streamed']} streamed"]
    blocks = [Block("h2", f"Version {version}"), Block("p", " · ".join(meta), "meta")]
    blocks += _traffic_blocks(version, s["traffic"], charts) + _speed_blocks(s) + _error_blocks(s["errors"])
    blocks += _answer_blocks(s) + _feedback_blocks(s["feedback"])
    if "drift" in s:
        blocks += drift_blocks(s["drift"], charts)
    if "shadow" in s:
        blocks += shadow_blocks(s["shadow"])
    return blocks


def _traffic_blocks(version: str, traffic: dict[str, Any], charts: bool) -> list[Block]:
    width, start = traffic["bucket_s"], traffic["start_s"]
    starts = [start + i * width for i in range(len(traffic["counts"]))]
    blocks = [Block("h3", f"Traffic (requests per {width_text(width)}, UTC)")]
    if charts:
        labels = [(when(t) or "")[11:16] if width < 86400 else (when(t) or "")[:10] for t in starts]
        answered = [c - e for c, e in zip(traffic["counts"], traffic["errors"])]
        series = [("answered", answered, COLORS[0]), ("errors (4xx/5xx)", traffic["errors"], ERROR_COLOR)]
        blocks.append(Block("html", bar_chart(labels, series, f"requests per {width_text(width)} of {version}",
                                              stacked=True)))
    rows = [[when(t) or "", str(c), str(e)] for t, c, e in zip(starts, traffic["counts"], traffic["errors"]) if c]
    return blocks + [Block("table", (["from", "requests", "errors"], rows))]


def _speed_blocks(s: dict[str, Any]) -> list[Block]:
    latency, first, speed = s["latency_s"], s["first_token_s"], s["tokens_per_s"]
    rows = [["latency", str(latency["n"]), secs(latency["p50"]), secs(latency["p95"]), secs(latency["p99"])],
            ["time to first token", str(first["n"]), secs(first["p50"]), secs(first["p95"]), "—"]]
    tokens = s["tokens"]
    text = (f"output speed: median {num(speed['median'])} tokens/s per request (completion tokens ÷ latency), "
            f"{num(speed['overall'])} overall over {speed['n']} requests; decoding after the first token: median "
            f"{num(speed['decode_median'])} tokens/s ({speed['decode_n']} requests). Tokens per answered request: "
            f"{num(tokens['prompt_mean'])} prompt, {num(tokens['completion_mean'])} completion on average.")
    return [Block("h3", "Latency and speed (answered requests)"),
            Block("table", (["measure", "n", "p50", "p95", "p99"], rows)), Block("p", text)]


def _error_blocks(errors: dict[str, Any]) -> list[Block]:
    blocks = [Block("h3", "Errors")]
    if not errors["count"]:
        return blocks + [Block("p", "None: every request was answered 200.", "meta")]
    rows = [[str(e["status"]), e["type"] or "—", str(e["count"]), pct(e["share"])] for e in errors["by_kind"]]
    return blocks + [Block("p", f"{errors['count']} requests not answered 200: {pct_interval(errors['rate'])} of all."),
                     Block("table", (["status", "error type", "count", "share of requests"], rows))]


def _answer_blocks(s: dict[str, Any]) -> list[Block]:
    refusals = s["refusals"]
    text = (f"refusals: {refusals['refused']} of {refusals['answers']} answers, {pct_interval(refusals['rate'])} "
            "(honing's red-team refusal detector on each answer's opening; an empty answer counts as a refusal)")
    if refusals["without_text"]:
        text += f"; {refusals['without_text']} answers have no text in the log (log.store_text=false) and are not counted"
    reasons = [[reason, str(count)] for reason, count in sorted(s["finish_reasons"].items(), key=lambda kv: -kv[1])]
    blocks = [Block("h3", "Answers"), Block("p", text + "."), Block("table", (["finish reason", "answers"], reasons))]
    for example in refusals["examples"]:
        blocks.append(Block("p", f"refused: {example}", "meta"))
    return blocks


def _feedback_blocks(f: dict[str, Any]) -> list[Block]:
    rows = [["rated up", str(f["up"])], ["rated down", str(f["down"])], ["corrected answers", str(f["corrections"])],
            ["choices between answers", str(f["choices"])], ["comments", str(f["comments"])],
            ["requests with feedback", f"{f['requests']} ({pct(f['share'])} of answered)"]]
    return [Block("h3", "Feedback"), Block("table", (["feedback", "count"], rows))]


def drift_blocks(d: dict[str, Any], charts: bool) -> list[Block]:
    blocks = [Block("h3", "Drift of the served prompts from the training data")]
    blocks += [Block("p", f"found through: {step}", "meta") for step in d["trail"]]
    blocks += [Block("p", f"missing: {what}", "fail") for what in d["missing"]]
    blocks += [Block("p", f"read: {note}", "meta") for note in d["notes"]]
    if d.get("unavailable"):
        return blocks + [Block("p", f"No comparison: {d['unavailable']}.")]
    length, topic = d["length"], d["topic"]
    rows = [[side, str(length[side]["n"]), num(length[side]["mean"]), num(length[side]["p50"]), num(length[side]["p95"])]
            for side in ("served", "training")]
    psi = length["psi"]
    reading = "stable" if psi < 0.1 else "a moderate shift" if psi < 0.25 else "a large shift"
    ks = length["ks"]
    blocks += [Block("p", f"Prompt length in {d['length_unit']}: {d['served_prompts']} served prompts, "
                          f"{d['training_prompts']} training prompts."),
               Block("table", (["prompts", "n", "mean", "p50", "p95"], rows)),
               Block("p", f"Kolmogorov–Smirnov D = {ks['statistic']:.3f} (p = {ks['p_value']:.3g}"
                          f"{', the distributions differ' if ks['p_value'] < 0.05 else ''}); population stability "
                          f"index {psi:.3f} over the training deciles ({reading}: < 0.1 stable, 0.1–0.25 moderate, "
                          "> 0.25 large).")]
    bins = length["bins"]
    names = [_bin_name(b) for b in bins]
    if charts:
        series = [("training", [b["training"] for b in bins], COLORS[0]), ("served", [b["served"] for b in bins], COLORS[1])]
        blocks.append(Block("html", bar_chart(names, series, "prompt length, served vs training", stacked=False,
                                              percent=True)))
    blocks.append(Block("table", (["words", "training", "served"],
                                  [[n, pct(b["training"]), pct(b["served"])] for n, b in zip(names, bins)])))
    floor = topic["noise_floor"]
    blocks.append(Block("p", f"Topic, by {topic['method']}: Jensen–Shannon divergence {num(topic['js_divergence'], '.3f')} "
                             f"bits (0 = the same distribution, 1 = no n-gram shared); between two random parts of the "
                             f"training prompts it is {num(floor, '.3f')}, what sampling alone gives."))
    grams = [[g["ngram"], str(g["served"]), str(g["training"]), pct(g["served_share"]), pct(g["training_share"]),
              f"{g['lift']:.1f}×"] for g in topic["over_represented"]]
    if grams:
        blocks += [Block("p", "The n-grams most over-represented in served prompts:", "meta"),
                   Block("table", (["n-gram", "served", "training", "served share", "training share", "ratio"], grams))]
    return blocks


def _bin_name(b: dict[str, Any]) -> str:
    low, high = b["from"], b["to"]
    if low is None:
        return f"< {high:g}"
    return f"≥ {low:g}" if high is None else f"[{low:g}, {high:g})"


def shadow_blocks(sh: dict[str, Any]) -> list[Block]:
    blocks = [Block("h3", "Shadow evaluation: the gate tasks asked of the served model")]
    blocks.append(Block("p", f"endpoint {sh['endpoint']} · model {sh['endpoint_model']}"
                        + (f" · registered evaluation {sh['registered_eval']}" if sh.get("registered_eval") else "")
                        + (f" · this run {sh['eval_run']}" if sh.get("eval_run") else ""), "meta"))
    for task, why in (sh.get("skipped") or {}).items():
        blocks.append(Block("p", f"skipped {task}: {why}", "meta"))
    if sh.get("unavailable"):
        return blocks + [Block("p", f"No comparison: {sh['unavailable']}.")]
    if not sh.get("registered_model"):
        blocks.append(Block("p", "The registered evaluation does not name this version among its models, so there are "
                                 "no registered scores to compare with.", "fail"))
    rows = [[r["task"], r["metric"] + (" (primary)" if r["primary"] else ""), score(r["registered"]),
             score(r["served"]), difference(r), r["verdict"]] for r in sh["rows"]]
    return blocks + [
        Block("p", f"{int(sh['confidence'] * 100)}% bootstrap intervals, as the registered evaluation computed them; "
                   "served lower or higher means the two intervals do not overlap.", "meta"),
        Block("table", (["task", "metric", "registered", "served now", "difference", "verdict"], rows))]


# --------------------------------------------------------------------------- files


def write_monitor_report(results: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """report.md, report.html and monitor.json in `directory`, each written atomically."""
    directory = Path(directory)
    return {"markdown": write_text_atomic(directory / "report.md", blocks_markdown(report_blocks(results, False))),
            "html": write_text_atomic(directory / "report.html",
                                      blocks_html(report_blocks(results, True), "honing monitor")),
            "facts": write_json_atomic(directory / "monitor.json", results)}
