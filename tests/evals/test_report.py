"""The evaluation report: Markdown and self-contained HTML from a results dict, and run curves."""

from __future__ import annotations

import copy
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import pytest

from honing.errors import HoningError
from honing.evals.report import load_curves, render_html, render_markdown, write_reports


def interval(mean, low, high, n=60):
    return {"mean": mean, "low": low, "high": high, "n": n}


@pytest.fixture()
def results() -> dict:
    return {
        "title": "honing eval",
        "created": "2026-11-23T10:00:00Z",
        "run_dir": "runs/eval-20261123-100000",
        "models": [
            {"name": "base", "role": "base", "source": "embedded SmolLM2-135M-Instruct", "adapter": None, "run_dir": None},
            {"name": "tuned", "role": "candidate", "source": "embedded SmolLM2-135M-Instruct",
             "adapter": "runs/sft-1/adapter", "run_dir": "runs/sft-1"},
        ],
        "tasks": [
            {"name": "quickstart", "kind": "generation", "metrics": ["exact_match", "token_f1"],
             "primary": "exact_match", "regression": False, "n": 60, "description": "held-out quickstart answers"},
            {"name": "general", "kind": "generation", "metrics": ["exact_match_normalized"],
             "primary": "exact_match_normalized", "regression": True, "n": 40, "description": "general-capability set"},
            {"name": "heldout_lm", "kind": "loglikelihood", "metrics": ["val_loss", "perplexity"],
             "primary": "val_loss", "regression": False, "n": 40, "description": "language-model loss"},
        ],
        "scores": {
            "base": {
                "quickstart": {"exact_match": interval(0.0, 0.0, 0.0), "token_f1": interval(0.123, 0.08, 0.17)},
                "general": {"exact_match_normalized": interval(0.45, 0.3, 0.6, 40)},
                "heldout_lm": {"val_loss": interval(2.3456, 2.2, 2.5, 40), "perplexity": interval(10.44, 9.0, 12.2, 40)},
            },
            "tuned": {
                "quickstart": {"exact_match": interval(0.51667, 0.38333, 0.65), "token_f1": interval(0.8, 0.7, 0.9)},
                "general": {"exact_match_normalized": interval(0.37, 0.22, 0.52, 40)},
                "heldout_lm": {"val_loss": interval(float("nan"), None, None, 40), "perplexity": interval(None, None, None)},
            },
        },
        "differences": [
            {"model": "tuned", "baseline": "base", "task": "quickstart", "metric": "exact_match",
             "diff": 0.51, "low": 0.38, "high": 0.63},
            {"model": "tuned", "baseline": "base", "task": "general", "metric": "exact_match_normalized",
             "diff": -0.08, "low": -0.2, "high": 0.04},
        ],
        "gate": {"passed": False, "checks": [
            {"model": "tuned", "task": "general", "metric": "exact_match_normalized", "kind": "regression",
             "value": -0.08, "limit": -0.05, "passed": False, "message": "dropped 8.0 points (tolerance 5.0)"},
            {"model": "tuned", "task": "quickstart", "metric": "exact_match", "kind": "threshold",
             "value": 0.51667, "limit": 0.4, "passed": True, "message": "51.7% ≥ 40.0%"},
        ]},
        "examples": {
            "quickstart": [
                {"id": "17", "prompt": "What is <b>bold</b> | and & why?\nSecond line", "reference": "Paris",
                 "outputs": {"base": "I don't know " * 100, "tuned": "Paris"}, "scores": {"base": 0.0, "tuned": 1.0}},
            ],
            "general": [],
        },
        "throughput": {"base": {"quickstart": {"examples_per_s": 3.2, "tokens_per_s": 410.0, "seconds": 18.7, "cached": 0}}},
        "judge": {"name": "local:runs/judge", "kind": "local"},
        "confusion": {"tuned": {"quickstart": {"yes": {"yes": 20, "no": 3}, "no": {"no": 30, "maybe": 7}}}},
        "curves": {"tuned": [
            {"step": 1, "time": "2026-11-23T09:00:00Z", "loss": 2.3, "lr": 1e-4},
            {"step": 5, "loss": 1.8, "lr": 1e-4},
            {"step": 5, "val_loss": 1.9, "val_perplexity": 6.7},
            {"step": 10, "loss": 1.2, "lr": 5e-5},
            {"step": 10, "val_loss": 1.5, "val_perplexity": 4.5},
        ]},
    }


def svg_fragments(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


class TagBalance(HTMLParser):
    """Fails on a closing tag that does not match the innermost open one."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "circle", "line", "rect", "polyline", "path"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def assert_well_formed(page: str) -> None:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    for fragment in svg_fragments(page):
        ElementTree.fromstring(fragment)  # each chart is well-formed XML


def test_markdown_has_every_section(results):
    text = render_markdown(results)
    for name in ("base", "tuned", "quickstart", "general", "heldout_lm", "embedded SmolLM2-135M-Instruct"):
        assert name in text
    assert "| tuned | 51.7% [38.3, 65.0] | 80.0% [70.0, 90.0] |" in text
    assert "| base | 2.346 [2.2, 2.5] | 10.44 [9, 12.2] |" in text  # losses and perplexities stay plain
    assert "| tuned | n/a | n/a |" in text  # NaN and None means
    assert "+51.0 pts [+38.0, +63.0] ▲" in text
    assert "-8.0 pts [-20.0, +4.0] |" in text  # interval straddles 0: no marker
    assert "## Gate: FAILED" in text and "dropped 8.0 points (tolerance 5.0)" in text
    assert "| base | quickstart | 3.2 | 410 | 18.7 | 0 |" in text
    assert "local:runs/judge (local)" in text
    assert "last train loss 1.2 at step 10; last validation loss 1.5 at step 10" in text


def test_markdown_examples_are_escaped_and_clipped(results):
    text = render_markdown(results)
    assert "What is \\<b>bold\\</b> \\| and & why? ↵ Second line" in text
    base_row = next(line for line in text.splitlines() if line.startswith("| base | I don't know"))
    assert "… [+" in base_row and len(base_row) < 500
    assert "| tuned | Paris | 1 |" in text
    assert "No disagreements." in text  # the task with an empty list


def test_html_is_self_contained_and_well_formed(results):
    page = render_html(results)
    assert_well_formed(page)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    labels = re.findall(r'<svg[^>]*aria-label="([^"]*)"', page)
    for task in ("quickstart", "general", "heldout_lm"):
        assert any(label.startswith(f"{task}: ") for label in labels)
    assert "training curves of tuned" in labels
    assert "51.7% [38.3, 65.0]" in page and "Gate: FAILED" in page


def test_html_curves_and_confusion(results):
    page = render_html(results)
    curve = next(f for f in svg_fragments(page) if "training curves of tuned" in f)
    root = ElementTree.fromstring(curve)
    polylines = [e for e in root.iter("polyline") if e.get("stroke") != "#6b7280"]
    assert [len(p.get("points").split()) for p in polylines] == [3, 2]  # train loss, validation loss
    texts = {e.text for e in root.iter("text")}
    assert {"train loss", "validation loss", "step"} <= texts
    assert 'class="confusion"' in page and "maybe" in page
    assert "rgba(37,99,235,1.00)" in page  # the largest count is fully shaded


def test_single_point_curve_and_missing_optional_keys(results):
    minimal = copy.deepcopy(results)
    for key in ("gate", "throughput", "judge", "confusion", "examples"):
        del minimal[key]
    minimal["curves"] = {"tuned": [{"step": 3, "loss": 1.0}]}
    page = render_html(minimal)
    assert_well_formed(page)
    curve = next(f for f in svg_fragments(page) if "training curves of tuned" in f)
    assert len(list(ElementTree.fromstring(curve).iter("circle"))) == 1
    text = render_markdown(minimal)
    assert "Gate" not in text and "Throughput" not in text and "Judge" not in text
    assert "None recorded." in text

    del minimal["curves"], minimal["differences"]
    assert "Training curves" not in render_markdown(minimal)
    assert_well_formed(render_html(minimal))
    assert_well_formed(render_html({"models": [], "tasks": [], "scores": {}}))


def test_write_reports_is_atomic(results, tmp_path):
    paths = write_reports(results, tmp_path / "report")
    assert paths == {"markdown": tmp_path / "report" / "report.md", "html": tmp_path / "report" / "report.html"}
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(results)
    assert paths["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.html", "report.md"]


def test_load_curves(tmp_path):
    assert load_curves(tmp_path) == []
    records = [{"step": 1, "loss": 2.5}, {"step": 2, "val_loss": float("nan")}]
    lines = [json.dumps(records[0]), "", json.dumps(records[1])]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_curves(tmp_path)
    assert loaded[0] == records[0] and math.isnan(loaded[1]["val_loss"])

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo\n', encoding="utf-8")
    with pytest.raises(HoningError, match=r"metrics\.jsonl:2: not valid JSON"):
        load_curves(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"loss": 2.5}\n', encoding="utf-8")
    with pytest.raises(HoningError, match=r"metrics\.jsonl:1: .*'step'"):
        load_curves(tmp_path)
