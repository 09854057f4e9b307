"""honing.evals.charts: the SVGs parse as XML, every text is escaped, bars are proportional to values."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from honing.evals.charts import confusion_table, curve_chart, curve_points, finite, interval_chart

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # raises on anything not well-formed


def _all(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.tag.removeprefix(SVG) == tag]


def test_interval_chart_is_well_formed_and_escapes_names():
    hostile = '<script>alert("x")</script> & co'
    svg = interval_chart([(hostile, (0.5, 0.4, 0.6)), ("base", (0.25, 0.2, 0.3))], 'rates <of> "models"')
    root = _parse(svg)
    assert "<script>" not in svg
    texts = [t.text for t in _all(root, "text")]
    assert hostile[:21] + "…" in texts  # long names are cut, and come back unescaped from the parser
    assert root.get("aria-label") == 'rates <of> "models"'
    assert "50.0%" in texts and "25.0%" in texts


def test_interval_chart_bars_are_proportional_to_rates():
    svg = interval_chart([("a", (0.8, None, None)), ("b", (0.2, None, None)), ("c", (None, None, None))], "r")
    root = _parse(svg)
    widths = [float(r.get("width")) for r in _all(root, "rect")]
    assert len(widths) == 2  # no bar for a missing value
    assert widths[0] / widths[1] == pytest.approx(4.0, rel=1e-3)
    assert "n/a" in [t.text for t in _all(root, "text")]


def test_interval_chart_interval_line_spans_low_to_high():
    root = _parse(interval_chart([("a", (0.5, 0.25, 0.75))], "r"))
    full = float(_all(_parse(interval_chart([("a", (1.0, None, None))], "r")), "rect")[0].get("width"))
    left = float(_all(root, "rect")[0].get("x"))
    lines = [e for e in _all(root, "line") if e.get("stroke-width") == "2" and e.get("y1") == e.get("y2")]
    assert len(lines) == 1
    assert float(lines[0].get("x1")) == pytest.approx(left + 0.25 * full, abs=0.1)
    assert float(lines[0].get("x2")) == pytest.approx(left + 0.75 * full, abs=0.1)


def test_curve_points_keep_finite_numbers_in_step_order():
    records = [{"step": 2, "loss": 1.0}, {"step": 1, "loss": 2.0}, {"step": 3, "loss": float("nan")},
               {"step": 4, "loss": True}, {"step": 5}, {"step": 6, "loss": "1.0"}]
    assert curve_points(records, "loss") == [(1.0, 2.0), (2.0, 1.0)]
    assert finite(True) is None and finite(float("inf")) is None and finite(3) == 3.0


def test_curve_chart_draws_both_series_and_escapes_the_model_name():
    records = [{"step": s, "loss": 3.0 - s * 0.5} for s in range(1, 5)] + [{"step": 4, "val_loss": 1.5},
                                                                         {"step": 2, "val_loss": 2.5}]
    svg = curve_chart("m<&>", records)
    root = _parse(svg)
    assert root.get("aria-label") == "training curves of m<&>"
    polylines = [p for p in _all(root, "polyline") if p.get("stroke-width") == "1.8"]
    assert len(polylines) == 2
    assert len(polylines[0].get("points").split()) == 4 and len(polylines[1].get("points").split()) == 2
    # SVG y grows downwards: a falling loss runs down the page
    ys = [float(p.split(",")[1]) for p in polylines[0].get("points").split()]
    assert ys == sorted(ys) and ys[0] < ys[-1]
    assert curve_chart("m", [{"step": 1}]).startswith("<p")


def test_confusion_table_counts_shading_and_escaping():
    html = confusion_table({"a<b": {"a<b": 4, "x": 1}, "x": {"x": 2}})
    root = _parse(html)
    head = [th.text for th in root.find("thead").iter("th")]
    assert head == ["gold \\ predicted", "a<b", "x"]
    cells = [[td.text for td in tr.iter("td")] for tr in root.find("tbody").iter("tr")]
    assert cells == [["4", "1"], ["0", "2"]]
    styles = [td.get("style") for td in root.iter("td")]
    assert "rgba(37,99,235,1.00)" in styles[0] and "rgba(37,99,235,0.25)" in styles[1]
