"""honing.workbench.runner: the streaming driver of the data commands. Counts balance, kept records
keep their order and bytes for any worker count, removed and rejected records land in their side
files, and run.json records it all; a bad record with on_bad_record=fail writes no output."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from honing.config import StrictModel
from honing.errors import DataError
from honing.workbench.runner import LengthHistogram, Outcome, length_bin, stream_filter


class FilterConfig(StrictModel):
    input: str
    run_dir: str | None = None
    workers: int | None = 1
    chunk_size: int = 2
    on_bad_record: Literal["fail", "skip"] = "skip"


class DropShort:
    """Keeps records whose text has at least 3 characters; a line that is not JSON is rejected."""

    def process(self, file, line, payload):
        try:
            record = json.loads(payload)
        except (TypeError, json.JSONDecodeError):
            return Outcome("rejected", reason="not JSON")
        text = record.get("text", "")
        if len(text) < 3:
            return Outcome("removed", reason="too_short", detail={"chars": len(text)})
        return Outcome("kept", line=payload.rstrip("\n"), length=len(text))


LINES = ['{"text": "hello"}', '{"text": "no"}', "not json", '{"text": "fine  day", "k": 1}', '{"text": ""}',
         '{"text": "abcdefgh"}', '{"text": "xyz"}']


def _input(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_balance_and_outputs_are_in_order(tmp_path, workers):
    cfg = FilterConfig(input=str(_input(tmp_path)), run_dir=str(tmp_path / "run"), workers=workers)
    output = tmp_path / "out.jsonl"
    result = stream_filter("demo", cfg, DropShort(), output=str(output), write_removed=True)
    counts = result["counts"]
    assert counts == {"in": 7, "kept": 4, "removed": 2, "rejected": 1, "removed_by": {"too_short": 2}}
    assert counts["in"] == counts["kept"] + counts["removed"] + counts["rejected"]
    assert output.read_text(encoding="utf-8").splitlines() == [LINES[0], LINES[3], LINES[5], LINES[6]]
    removed = [json.loads(line) for line in (tmp_path / "run" / "removed.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["detail"], r["record"]) for r in removed] == [
        (2, "too_short", {"chars": 2}, {"text": "no"}), (5, "too_short", {"chars": 0}, {"text": ""})]
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["record"]) for r in rejects] == [(3, "not JSON", "not json")]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "completed" and record["counts"] == counts and record["workers"] == workers
    assert record["outputs"]["output"]["records"] == 4
    assert record["length_histogram"]["min"] == 3 and record["length_histogram"]["max"] == 9
    assert record["inputs"]


def test_a_bad_record_with_fail_stops_at_its_line_and_writes_no_output(tmp_path):
    cfg = FilterConfig(input=str(_input(tmp_path)), run_dir=str(tmp_path / "run"), on_bad_record="fail")
    output = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=r"in\.jsonl:3: not JSON"):
        stream_filter("demo", cfg, DropShort(), output=str(output), write_removed=True)
    assert not output.exists()
    assert not (tmp_path / "run" / "removed.jsonl").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_a_missing_input_is_a_data_error_before_any_run_directory(tmp_path):
    cfg = FilterConfig(input=str(tmp_path / "missing.jsonl"), run_dir=str(tmp_path / "run"))
    with pytest.raises(DataError, match="does not exist"):
        stream_filter("demo", cfg, DropShort(), output=str(tmp_path / "o.jsonl"), write_removed=False)
    assert not (tmp_path / "run").exists()


def test_length_bins_are_powers_of_two():
    assert [length_bin(n) for n in (0, 1, 2, 3, 4, 7, 8, 1000)] == ["0", "1-1", "2-3", "2-3", "4-7", "4-7", "8-15",
                                                                    "512-1023"]
    histogram = LengthHistogram()
    for n in (5, 6, 1, 20):
        histogram.add(n)
    assert histogram.as_dict() == {"unit": "characters", "min": 1, "max": 20, "mean": 8.0,
                                   "bins": [{"range": "1-1", "count": 1}, {"range": "4-7", "count": 2},
                                            {"range": "16-31", "count": 1}]}
    assert LengthHistogram().as_dict()["mean"] == 0.0
