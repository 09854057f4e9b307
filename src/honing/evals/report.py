"""The evaluation report: `report.md` and one self-contained `report.html` with inline SVG charts
(drawn by `honing.evals.charts`).

Both files are rendered from one list of blocks (headings, paragraphs, tables and, in HTML
only, charts), so the two never disagree. `results` is the dict `honing eval` builds:
`models`, `tasks`, `scores` (model → task → metric → {mean, low, high, n}) and `differences`
against the baseline; `gate`, `examples`, `throughput`, `judge`, `confusion` and `curves` are
optional.

Numbers: a metric whose values all lie in [0, 1] reads as a percentage with one decimal
("51.7% [38.3, 65.0]"), differences as percentage points; losses, perplexities, BLEU-like scores
and anything outside [0, 1] read as plain numbers with four significant digits.
Example texts longer than `EXAMPLE_CHARS` are cut, and the cut says how much was dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from honing.errors import HoningError
from honing.io import write_text_atomic
from honing.evals.charts import CURVES, confusion_table, curve_chart, curve_points, esc, finite, interval_chart

EXAMPLE_CHARS = 400
_PLAIN_WORDS = {"loss", "perplexity", "ppl", "bleu", "chrf", "ter"}


class Block(NamedTuple):
    """One piece of the report. kind: h1 | h2 | h3 | p | table | html (raw markup, HTML only)."""

    kind: str
    content: Any  # text; (header, rows) for a table; markup for html
    cls: str = ""


# ── public ──────────────────────────────────────────────────────────────────────────────────


def load_curves(run_dir: str | Path) -> list[dict]:
    """The metric records of a training run (`<run_dir>/metrics.jsonl`); [] when it has none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise HoningError(f"{path}:{number}: not valid JSON ({err.msg}); fix or delete that line") from None
        if not isinstance(record, dict) or "step" not in record:
            raise HoningError(f"{path}:{number}: expected a JSON object with a 'step' key; fix or delete that line")
        records.append(record)
    return records


def render_markdown(results: dict) -> str:
    return blocks_markdown(_blocks(results, charts=False))


def render_html(results: dict) -> str:
    return blocks_html(_blocks(results, charts=True), results.get("title") or "honing eval")


def blocks_markdown(blocks: list[Block]) -> str:
    """Markdown of a list of blocks (charts, which are HTML only, are left out). Other reports
    (`honing redteam`) build their own blocks and render them here, so every report reads alike."""
    parts = (_markdown_block(block) for block in blocks)
    return "\n\n".join(part for part in parts if part) + "\n"


def blocks_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page (inline CSS and SVG) of a list of blocks."""
    body = "\n".join(_html_block(block) for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def write_reports(results: dict, directory: str | Path) -> dict[str, Path]:
    """Write `report.md` and `report.html` into `directory`, each atomically; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = {"markdown": ("report.md", render_markdown(results)), "html": ("report.html", render_html(results))}
    return {kind: write_text_atomic(directory / name, text) for kind, (name, text) in texts.items()}


# ── numbers ─────────────────────────────────────────────────────────────────────────────────


def _num(value: Any, spec: str = ".3g") -> str:
    value = finite(value)
    return "n/a" if value is None else format(value, spec)


class _Numbers:
    """Formats a metric's values: percentages for [0, 1] scores, plain numbers for the rest."""

    def __init__(self, results: dict):
        self.out_of_range = {
            metric
            for by_task in (results.get("scores") or {}).values()
            for by_metric in (by_task or {}).values()
            for metric, interval in (by_metric or {}).items()
            if any(v is not None and not -1e-9 <= v <= 1 + 1e-9 for v in _triple(interval))
        }

    def plain(self, metric: str) -> bool:
        name = metric.lower()
        words = set(re.split(r"[^a-z0-9]+", name))
        return metric in self.out_of_range or "loss" in name or "perplexity" in name or bool(words & _PLAIN_WORDS)

    def value(self, metric: str, value: Any) -> str:
        value = finite(value)
        if value is None:
            return "n/a"
        return f"{value:.4g}" if self.plain(metric) else f"{value * 100:.1f}%"

    def interval(self, metric: str, interval: dict | None) -> str:
        mean, low, high = _triple(interval)
        if mean is None:
            return "n/a"
        if low is None or high is None:
            return self.value(metric, mean)
        if self.plain(metric):
            return f"{mean:.4g} [{low:.4g}, {high:.4g}]"
        return f"{mean * 100:.1f}% [{low * 100:.1f}, {high * 100:.1f}]"

    def diff(self, metric: str, record: dict) -> str:
        diff, low, high = (finite(record.get(key)) for key in ("diff", "low", "high"))
        if diff is None:
            return "n/a"
        spec, scale, unit = (".4g", 1, "") if self.plain(metric) else (".1f", 100, " pts")
        text = f"{diff * scale:+{spec}}{unit}"
        if low is not None and high is not None:
            text += f" [{low * scale:+{spec}}, {high * scale:+{spec}}]"
            text += " ▲" if low > 0 else " ▼" if high < 0 else ""
        return text


def _triple(interval: dict | None) -> tuple[float | None, float | None, float | None]:
    interval = interval or {}
    return finite(interval.get("mean")), finite(interval.get("low")), finite(interval.get("high"))


# ── content, shared by both formats ─────────────────────────────────────────────────────────


def _blocks(results: dict, charts: bool) -> list[Block]:
    numbers = _Numbers(results)
    meta = [f"created {results['created']}" if results.get("created") else "",
            f"run directory {results['run_dir']}" if results.get("run_dir") else ""]
    blocks = [Block("h1", results.get("title") or "honing eval"), Block("p", " · ".join(filter(None, meta)), "meta")]
    blocks += _models_blocks(results)
    for task in results.get("tasks") or []:
        blocks += _task_blocks(results, task, numbers, charts)
    for section in (_differences_blocks, _gate_blocks):
        blocks += section(results, numbers)
    blocks += _throughput_blocks(results) + _judge_blocks(results)
    blocks += _curve_blocks(results, charts) + _example_blocks(results)
    return blocks


def _model_names(results: dict) -> list[str]:
    return [str(model.get("name")) for model in results.get("models") or []]


def _ordered(keys, preferred: list[str]) -> list[str]:
    keys = list(keys)
    return [key for key in preferred if key in keys] + [key for key in keys if key not in preferred]


def _score(results: dict, model: str, task: str, metric: str) -> dict | None:
    return (((results.get("scores") or {}).get(model) or {}).get(task) or {}).get(metric)


def _models_blocks(results: dict) -> list[Block]:
    rows = [[str(m.get("name")), str(m.get("role") or "—"), str(m.get("source") or "—"), str(m.get("adapter") or "—")]
            for m in results.get("models") or []]
    return [Block("h2", "Models"), Block("table", (["model", "role", "source", "adapter"], rows))]


def _task_blocks(results: dict, task: dict, numbers: _Numbers, charts: bool) -> list[Block]:
    name = str(task.get("name"))
    models = _model_names(results)
    metrics = list(task.get("metrics") or sorted(
        {m for model in models for m in ((results.get("scores") or {}).get(model) or {}).get(name) or {}}))
    primary = task.get("primary") or (metrics[0] if metrics else None)
    facts = [task.get("kind"), f"n = {task['n']}" if task.get("n") is not None else None,
             f"primary metric: {primary}" if primary else None, "regression set" if task.get("regression") else None]
    blocks = [Block("h2", f"Task: {name}")]
    if task.get("description"):
        blocks.append(Block("p", str(task["description"])))
    blocks.append(Block("p", " · ".join(str(fact) for fact in facts if fact), "meta"))
    header = ["model"] + [f"{metric} (primary)" if metric == primary else metric for metric in metrics]
    rows = [[model] + [numbers.interval(metric, _score(results, model, name, metric)) for metric in metrics]
            for model in models]
    blocks.append(Block("table", (header, rows)))
    blocks += _category_blocks(results, name, models, numbers)
    if charts and primary:
        blocks.append(Block("html", _interval_svg(results, name, primary, numbers)))
    if charts:
        confusion = results.get("confusion") or {}
        for model in _ordered(confusion, models):
            if (confusion.get(model) or {}).get(name):
                blocks += [Block("h3", f"Confusion matrix: {model} (rows gold, columns predicted)"),
                           Block("html", confusion_table(confusion[model][name]))]
    return blocks


def _category_blocks(results: dict, task: str, models: list[str], numbers: _Numbers) -> list[Block]:
    """The primary metric per example category (when the examples have one), with each candidate's paired difference."""
    by_category = (results.get("categories") or {}).get(task)
    if not by_category:
        return []
    metric, scores, differences = by_category["metric"], by_category.get("scores") or {}, by_category.get("differences") or {}
    shown = [m for m in models if m in scores]
    candidates = [m for m in models if m in differences]
    header = ["category", "n"] + shown + [f"{m} − base" for m in candidates]
    rows = [[name, str(n)] + [numbers.interval(metric, scores[m].get(name)) for m in shown]
            + [numbers.diff(metric, _as_diff(differences[m].get(name))) for m in candidates]
            for name, n in (by_category.get("n") or {}).items()]
    return [Block("p", f"{metric} by category", "meta"), Block("table", (header, rows))]


def _as_diff(interval: dict | None) -> dict:
    interval = interval or {}
    return {"diff": interval.get("mean"), "low": interval.get("low"), "high": interval.get("high")}


def _interval_svg(results: dict, task: str, metric: str, numbers: _Numbers) -> str:
    """One row per model: the primary metric's mean as a dot (and bar, for rates) with its interval."""
    rows = [(model, _triple(_score(results, model, task, metric))) for model in _model_names(results)]
    return interval_chart(rows, f"{task}: {metric} by model", plain=numbers.plain(metric),
                          value_text=lambda mean: numbers.value(metric, mean))


def _differences_blocks(results: dict, numbers: _Numbers) -> list[Block]:
    records = results.get("differences") or []
    if not records:
        return []
    rows = [[str(r.get("model")), str(r.get("baseline")), str(r.get("task")), str(r.get("metric")),
             numbers.diff(str(r.get("metric")), r)] for r in records]
    return [Block("h2", "Differences against the baseline"),
            Block("p", "Candidate minus baseline, paired bootstrap interval; ▲/▼ where the interval excludes 0.", "meta"),
            Block("table", (["model", "baseline", "task", "metric", "difference"], rows))]


def _gate_blocks(results: dict, numbers: _Numbers) -> list[Block]:
    gate = results.get("gate")
    if not gate:
        return []
    passed = bool(gate.get("passed"))
    rows = [["✓ pass" if c.get("passed") else "✗ FAIL", str(c.get("model")), str(c.get("task")), str(c.get("metric")),
             str(c.get("kind")), numbers.value(str(c.get("metric")), c.get("value")),
             numbers.value(str(c.get("metric")), c.get("limit")), str(c.get("message") or "")]
            for c in gate.get("checks") or []]
    blocks = [Block("h2", f"Gate: {'PASSED' if passed else 'FAILED'}", "pass" if passed else "fail")]
    if rows:
        header = ["result", "model", "task", "metric", "check", "value", "limit", "message"]
        blocks.append(Block("table", (header, rows)))
    return blocks


def _throughput_blocks(results: dict) -> list[Block]:
    throughput = results.get("throughput") or {}
    rows = [[model, task, _num(t.get("examples_per_s")), _num(t.get("tokens_per_s")),
             _num(t.get("seconds"), ".1f"), str(t.get("cached", "n/a"))]
            for model in _ordered(throughput, _model_names(results))
            for task, t in (throughput.get(model) or {}).items()]
    if not rows:
        return []
    header = ["model", "task", "examples/s", "tokens/s", "seconds", "cached"]
    return [Block("h2", "Throughput"), Block("table", (header, rows))]


def _judge_blocks(results: dict) -> list[Block]:
    judge = results.get("judge")
    if not judge:
        return []
    return [Block("h2", "Judge"), Block("p", f"{judge.get('name')} ({judge.get('kind') or 'unknown kind'})")]


def _curve_blocks(results: dict, charts: bool) -> list[Block]:
    curves = results.get("curves") or {}
    if not any(curves.values()):
        return []
    blocks = [Block("h2", "Training curves")]
    for model in _ordered(curves, _model_names(results)):
        records = curves.get(model) or []
        if not records:
            continue
        lasts = [f"last {label} {_num(points[-1][1], '.4g')} at step {points[-1][0]:g}"
                 for key, label, _, _ in CURVES if (points := curve_points(records, key))]
        blocks += [Block("h3", model), Block("p", "; ".join([f"metric records: {len(records)}"] + lasts), "meta")]
        if charts:
            blocks.append(Block("html", curve_chart(model, records)))
    return blocks


def _example_blocks(results: dict) -> list[Block]:
    examples = results.get("examples") or {}
    blocks = [Block("h2", "Examples where models disagree")]
    if not any(examples.values()):
        return blocks + [Block("p", "None recorded.", "meta")]
    task_order = [str(task.get("name")) for task in results.get("tasks") or []]
    for task in _ordered(examples, task_order):
        blocks.append(Block("h3", task))
        if not examples[task]:
            blocks.append(Block("p", "No disagreements.", "meta"))
        for example in examples[task] or []:
            outputs, scores = example.get("outputs") or {}, example.get("scores") or {}
            rows = [["prompt", clip(example.get("prompt")), ""], ["reference", clip(example.get("reference")), ""]]
            rows += [[model, clip(outputs.get(model)), _num(scores.get(model))]
                     for model in _ordered(set(outputs) | set(scores), _model_names(results))]
            blocks.append(Block("table", ([f"example {example.get('id', '?')}", "text", "score"], rows), "examples"))
    return blocks


def clip(value: Any, limit: int = EXAMPLE_CHARS) -> str:
    if value is None:
        return ""
    text = " / ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= limit else f"{text[:limit].rstrip()}… [+{len(text) - limit} chars]"


# ── Markdown and HTML ───────────────────────────────────────────────────────────────────────


def _markdown_block(block: Block) -> str:
    if block.kind in ("h1", "h2", "h3"):
        return "#" * int(block.kind[1]) + " " + " ".join(str(block.content).split()).replace("<", "\\<")
    if block.kind == "p":
        return str(block.content).replace("<", "\\<")
    if block.kind == "table":
        header, rows = block.content
        return "\n".join([_markdown_row(header), "|" + "---|" * len(header)] + [_markdown_row(row) for row in rows])
    return ""  # charts are HTML only


def _markdown_row(cells: list[str]) -> str:
    """Cells on one line; `|` and `<` escaped so that outputs show as written, not as markup."""
    clean = (str(cell).replace("\r\n", "\n").replace("|", "\\|").replace("<", "\\<").replace("\n", " ↵ ")
             for cell in cells)
    return "| " + " | ".join(clean) + " |"


def _html_block(block: Block) -> str:
    cls = f' class="{block.cls}"' if block.cls else ""
    if block.kind == "table":
        header, rows = block.content
        head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if block.kind == "html":
        return block.content
    return f"<{block.kind}{cls}>{esc(block.content)}</{block.kind}>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;background:#f9fafb;margin:0}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin-bottom:4px}
h2{margin-top:2em;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:8px 0;background:#fff}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
td{font-variant-numeric:tabular-nums}
table.examples td{white-space:pre-wrap;max-width:680px}
table.confusion td{text-align:right;min-width:3em}
.meta{color:#6b7280}
.pass{color:#047857}
.fail{color:#b91c1c}
svg{display:block;max-width:100%;height:auto;margin:8px 0;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#374151}
"""
