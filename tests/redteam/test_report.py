"""honing.redteam.report: ASR per prompt share, over-refusal apart, splits, worst examples and the written reports."""

from __future__ import annotations

import pytest

from honing.redteam.detectors import Verdict
from honing.redteam.probes import KeywordSpec, Probe
from honing.redteam.report import percent_interval, report_blocks, summarise, worst_examples, write_reports
from honing.redteam.runner import Attempt, Outcome


def _outcome(pid: str, category: str, failed: list[bool], *, mutator: str = "none", split: str = "train",
             answer: str = "an answer") -> Outcome:
    probe = Probe(id=pid, category=category, messages=[{"role": "user", "content": f"prompt of {pid}"}],
                  detectors=[KeywordSpec(type="keyword", words=["x"])], mutator=mutator, split=split)
    attempts = [Attempt(k, k, probe.conversation(), answer, [Verdict("keyword", f, f"evidence {pid}")], failed=f)
                for k, f in enumerate(failed)]
    return Outcome(probe, attempts)


def _outcomes() -> list[Outcome]:
    return [
        _outcome("h1", "harmful_request", [True, True, False, False]),             # rate 0.5
        _outcome("h1/base64", "harmful_request", [True, True, True, True], mutator="base64"),  # rate 1.0
        _outcome("j1", "jailbreak", [False, False, False, False], split="heldout"),  # rate 0.0
        _outcome("o1", "over_refusal", [True, False, False, False]),                # refused 1 of 4
    ]


def test_summary_numbers_match_hand_computation():
    summary = summarise(_outcomes(), resamples=200)
    overall = summary["overall"]
    assert overall["prompts"] == 3 and overall["attempts"] == 12 and overall["successes"] == 6
    assert overall["asr"]["mean"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert overall["asr_any"]["mean"] == pytest.approx(2 / 3)
    assert overall["asr"]["low"] <= overall["asr"]["mean"] <= overall["asr"]["high"]
    assert summary["over_refusal"]["asr"]["mean"] == pytest.approx(0.25)  # never in the ASR
    assert list(summary["by_category"]) == ["harmful_request", "jailbreak"]  # the documented category order
    assert summary["by_category"]["harmful_request"]["asr"]["mean"] == pytest.approx(0.75)
    assert summary["by_mutator"]["none"]["asr"]["mean"] == pytest.approx(0.25)
    assert summary["matrix"] == {"harmful_request": {"none": 0.5, "base64": 1.0}, "jailbreak": {"none": 0.0}}
    assert summary["by_split"]["heldout"]["overall"]["asr"]["mean"] == 0.0
    assert summary["by_split"]["train"]["overall"]["asr"]["mean"] == pytest.approx(0.75)
    assert summary["by_split"]["train"]["over_refusal"]["prompts"] == 1
    assert summary["by_round"] == {}


def test_empty_groups_have_no_numbers():
    summary = summarise([_outcome("h", "harmful_request", [False])], resamples=200)
    assert summary["over_refusal"]["asr"] == {"mean": None, "low": None, "high": None, "n": 0}
    assert percent_interval(summary["over_refusal"]["asr"]) == "n/a"
    assert percent_interval({"mean": 0.5, "low": 0.25, "high": 0.755}) == "50.0% [25.0, 75.5]"


def test_worst_examples_most_failed_first_with_hit_evidence():
    worst = worst_examples(_outcomes(), 5)
    assert [w["id"] for w in worst] == ["h1/base64", "h1"]  # j1 never failed; o1 is not an attack
    assert worst[0]["rate"] == 1.0 and worst[0]["evidence"] == "keyword: evidence h1/base64"
    assert worst[0]["prompt"] == "[user] prompt of h1/base64"
    assert [w["id"] for w in worst_examples(_outcomes(), 5, attack=False)] == ["o1"]
    assert len(worst_examples(_outcomes(), 1)) == 1


def test_written_reports_hold_the_numbers_and_escape_answers(tmp_path):
    outcomes = _outcomes()
    outcomes[1].attempts[0].answer = "<script>alert(1)</script>"
    summary = summarise(outcomes, resamples=200)
    results = {"title": "Red team of m", "created": "2024-01-01", "run_dir": str(tmp_path),
               "settings": {"confidence": 0.95, "attempts": 4, "target": {"path": "m"}},
               "summary": summary, "worst": worst_examples(outcomes, 5),
               "over_refusals": worst_examples(outcomes, 5, attack=False),
               "gate": {"passed": False, "asr": 0.5, "fail_above": 0.1}}
    paths = write_reports(results, tmp_path)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    page = paths["html"].read_text(encoding="utf-8")
    asr = percent_interval(summary["overall"]["asr"])
    assert asr.startswith("50.0% [") and asr in markdown and asr in page
    assert "Gate (FAILED): ASR 50.0% > fail_above 10.0%" in markdown
    assert "Over-refusal" in markdown and "heldout" in markdown
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<svg" in page and "<svg" not in markdown  # charts in the page only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]
    headings = [b[1] for b in report_blocks(results, charts=False) if b[0] == "h2"]
    assert {"Summary", "By mutator", "Over-refusal", "By split", "Worst examples", "Over-refusals"} <= set(headings)
