"""The figures of a report: SVG charts (an interval per model, training curves) and the
confusion matrix as a shaded HTML table.

Each returns markup to embed in one self-contained HTML page (no script, no external file);
every text in it is escaped. `honing.evals.report` places them; `interval_chart` is also what
`honing redteam`'s report draws its rates with.
"""

from __future__ import annotations

import html
import math
from typing import Any

COLORS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
CURVES = (("loss", "train loss", "#2563eb", ""), ("val_loss", "validation loss", "#dc2626", "6 4"))
"""The training curves drawn: (metrics.jsonl key, label, colour, SVG dash pattern)."""


def finite(value: Any) -> float | None:
    """The value as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def esc(text: Any) -> str:
    return html.escape(str(text))


def curve_points(records: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) of every record that has a finite `key`, in step order."""
    pairs = ((finite(r.get("step")), finite(r.get(key))) for r in records)
    return sorted((step, value) for step, value in pairs if step is not None and value is not None)


# ── SVG ─────────────────────────────────────────────────────────────────────────────────────


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick positions (1, 2, 2.5, 5 × 10^k apart) inside [low, high]."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.ceil(low / step - 1e-9) * step
    return [float(f"{first + i * step:.12g}") for i in range(int((high - first) / step + 1e-9) + 1)]


def _span(values: list[float], pad: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12:
        spread = abs(low) * 0.1 or 1.0
        return low - spread, high + spread
    return low - pad * (high - low), high + pad * (high - low)


def _svg_open(width: int, height: int, label: str) -> str:
    return (f'<svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">')


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{esc(text)}</text>'


def interval_chart(rows: list[tuple[str, tuple[float | None, float | None, float | None]]], label: str, *,
                   plain: bool = False, value_text: Any = None) -> str:
    """An SVG with one row per (name, (mean, low, high)): a dot at the mean, a bar from 0 for rates
    (plain=False: values in [0, 1] shown as percentages), and the interval as a line with ends."""
    value_text = value_text or (lambda mean: f"{mean:.4g}" if plain else f"{mean * 100:.1f}%")
    values = [v for _, triple in rows for v in triple if v is not None]
    low_end, high_end = _span(values, 0.05) if plain and values else (0.0, 1.0)
    width, left, right, top, row_height = 640, 150, 80, 8, 26
    axis_y = top + row_height * len(rows)
    parts = [_svg_open(width, axis_y + 26, label)]

    def x(value: float) -> float:
        return left + (min(max(value, low_end), high_end) - low_end) / (high_end - low_end) * (width - left - right)

    for tick in _ticks(low_end, high_end):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{axis_y}" stroke="#e5e7eb"/>')
        parts.append(_text(x(tick), axis_y + 16, f"{tick:.4g}" if plain else f"{tick * 100:g}%", "middle"))
    for i, (name, (mean, low, high)) in enumerate(rows):
        y, color = top + row_height * i + row_height / 2, COLORS[i % len(COLORS)]
        parts.append(_text(left - 8, y + 4, name if len(name) <= 22 else name[:21] + "…", "end"))
        if mean is None:
            parts.append(_text(left + 4, y + 4, "n/a"))
            continue
        if not plain:
            parts.append(f'<rect x="{left}" y="{y - 6:.1f}" width="{x(mean) - left:.1f}" height="12" '
                         f'fill="{color}" fill-opacity="0.18"/>')
        if low is not None and high is not None:
            parts.append(f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="2"/>')
            parts += [f'<line x1="{x(v):.1f}" y1="{y - 5:.1f}" x2="{x(v):.1f}" y2="{y + 5:.1f}" stroke="{color}" stroke-width="2"/>'
                      for v in (low, high)]
        parts.append(f'<circle cx="{x(mean):.1f}" cy="{y:.1f}" r="4.5" fill="{color}"/>')
        parts.append(_text(width - right + 8, y + 4, value_text(mean)))
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#6b7280"/>')
    return "".join(parts) + "</svg>"


def curve_chart(model: str, records: list[dict]) -> str:
    """Train and validation loss against step, with axes, ticks and a legend."""
    series = [(label, color, dash, points) for key, label, color, dash in CURVES if (points := curve_points(records, key))]
    if not series:
        return '<p class="meta">No loss values logged.</p>'
    steps = [p[0] for *_, points in series for p in points]
    losses = [p[1] for *_, points in series for p in points]
    (x_low, x_high), (y_low, y_high) = _span(steps, 0.0), _span(losses, 0.05)
    width, height, left, right, top, bottom = 640, 280, 64, 16, 30, 40
    parts = [_svg_open(width, height, f"training curves of {model}")]

    def x(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * (width - left - right)

    def y(loss: float) -> float:
        return top + (y_high - loss) / (y_high - y_low) * (height - top - bottom)

    for tick in _ticks(y_low, y_high):
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - right}" y2="{y(tick):.1f}" stroke="#e5e7eb"/>')
        parts.append(_text(left - 6, y(tick) + 4, f"{tick:.4g}", "end"))
    for tick in (t for t in _ticks(x_low, x_high) if t == int(t)):
        parts.append(_text(x(tick), height - bottom + 16, f"{int(tick)}", "middle"))
    parts.append(f'<polyline fill="none" stroke="#6b7280" points="{left},{top} {left},{height - bottom} '
                 f'{width - right},{height - bottom}"/>')
    parts.append(_text((left + width - right) / 2, height - 6, "step", "middle"))
    for i, (label, color, dash, points) in enumerate(series):
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        if len(points) > 1:
            coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8"{dashes} points="{coords}"/>')
        if len(points) <= 40:
            parts += [f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>' for s, v in points]
        legend_x = left + 8 + 150 * i
        parts.append(f'<line x1="{legend_x}" y1="14" x2="{legend_x + 24}" y2="14" stroke="{color}" stroke-width="2"{dashes}/>')
        parts.append(_text(legend_x + 30, 18, label))
    return "".join(parts) + "</svg>"


# ── the confusion matrix ────────────────────────────────────────────────────────────────────


def confusion_table(matrix: dict) -> str:
    """gold label → predicted label → count, as a table whose cells are shaded by their count."""
    gold = [str(label) for label in matrix]
    labels = list({str(p) for row in matrix.values() for p in (row or {})})
    predicted = [g for g in gold if g in labels] + [p for p in labels if p not in gold]  # gold's order first
    counts = {(str(g), str(p)): finite(c) or 0.0 for g, row in matrix.items() for p, c in (row or {}).items()}
    peak = max(counts.values(), default=0.0) or 1.0
    head = "<th>gold \\ predicted</th>" + "".join(f"<th>{esc(p)}</th>" for p in predicted)
    rows = []
    for g in gold:
        cells = []
        for p in predicted:
            share = counts.get((g, p), 0.0) / peak
            style = f"background:rgba(37,99,235,{share:.2f});color:{'#fff' if share > 0.55 else '#111827'}"
            cells.append(f'<td style="{style}">{counts.get((g, p), 0.0):g}</td>')
        rows.append(f"<tr><th>{esc(g)}</th>{''.join(cells)}</tr>")
    return f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def bar_chart(rows: list[tuple[str, float | None]], label: str, unit: str = "") -> str:
    """An SVG with one horizontal bar per (name, value) from zero, the value written at its end (costs: tokens,
    seconds, minutes)."""
    values = [v for _, v in rows if v is not None]
    high_end = _span([0.0, *values], 0.05)[1] if values and max(values) > 0 else 1.0
    width, left, right, top, row_height = 640, 150, 90, 8, 26
    axis_y = top + row_height * len(rows)
    parts = [_svg_open(width, axis_y + 26, label)]

    def x(value: float) -> float:
        return left + min(max(value, 0.0), high_end) / high_end * (width - left - right)

    for tick in _ticks(0.0, high_end):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{axis_y}" stroke="#e5e7eb"/>')
        parts.append(_text(x(tick), axis_y + 16, f"{tick:.4g}", "middle"))
    for i, (name, value) in enumerate(rows):
        y, color = top + row_height * i + row_height / 2, COLORS[i % len(COLORS)]
        parts.append(_text(left - 8, y + 4, name if len(name) <= 22 else name[:21] + "…", "end"))
        if value is None:
            parts.append(_text(left + 4, y + 4, "n/a"))
            continue
        parts.append(f'<rect x="{left}" y="{y - 7:.1f}" width="{x(value) - left:.1f}" height="14" fill="{color}" '
                     'fill-opacity="0.55"/>')
        parts.append(_text(x(value) + 6, y + 4, f"{value:.4g}{unit}"))
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#6b7280"/>')
    return "".join(parts) + "</svg>"
