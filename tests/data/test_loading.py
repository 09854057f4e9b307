"""Reading every file type in every format, with exact file:line for bad records."""

from __future__ import annotations

import json

import pytest

from honing.data.formats import normalize
from honing.data.loading import load_dataset_file, read_records, write_rejects
from honing.errors import DataError

KINDS = ["text", "instruction", "chat", "sharegpt", "preference_strings", "preference_messages"]
FILE_TYPES = ["jsonl", "json", "csv", "parquet", "txt", "saved_dataset", "directory"]
# A .txt file holds plain text only.
COMBINATIONS = [(kind, ft) for kind in KINDS for ft in FILE_TYPES if ft != "txt" or kind == "text"]


@pytest.mark.parametrize("kind,file_type", COMBINATIONS)
def test_every_format_loads_from_every_file_type(kind, file_type, tmp_path, write_data, data_records, expected_format):
    originals = data_records[kind]
    path = write_data(file_type, tmp_path, originals)

    records, fmt, rejects = load_dataset_file(path)

    assert fmt == expected_format[kind]
    assert rejects == []
    assert records == [normalize(r, fmt) for r in originals]


def test_line_numbers_per_file_type(tmp_path, write_data, data_records):
    records = data_records["instruction"]
    lines = {
        "jsonl": [1, 2, 3],
        "json": [2, 8, 14],  # indent=2: each object starts on its own line
        "csv": [2, 3, 4],
        "parquet": [1, 2, 3],
        "saved_dataset": [1, 2, 3],
    }
    for file_type, expected in lines.items():
        path = write_data(file_type, tmp_path / file_type, records)
        assert [line for _, line, _ in read_records(path)] == expected, file_type


def test_txt_paragraphs_with_first_line_numbers(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\nstill first\n\n\nsecond doc\n\nthird\n", encoding="utf-8")
    got = list(read_records(path))
    assert [(line, rec["text"]) for _, line, rec in got] == [(1, "first doc\nstill first"), (5, "second doc"), (7, "third")]


def test_directory_is_read_in_sorted_order_recursively(tmp_path, write_data, data_records):
    path = write_data("directory", tmp_path, data_records["chat"])
    files = [file for file, _, _ in read_records(path)]
    assert files == [str(path / "data.jsonl"), str(path / "sub" / "data.json")]


def test_text_field_renames_the_document_field(tmp_path, write_data):
    path = write_data("jsonl", tmp_path, [{"body": "a document", "id": 1}])
    records, fmt, _ = load_dataset_file(path, "text", text_field="body")
    assert (records, fmt) == ([{"text": "a document"}], "text")


def test_csv_with_quoted_newlines_keeps_physical_lines(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text\n"two\nlines"\nnext\n', encoding="utf-8")
    assert [(line, rec["text"]) for _, line, rec in read_records(path)] == [(2, "two\nlines"), (4, "next")]


# --------------------------------------------------------------------------- bad records

GOOD = {"instruction": "Say hi", "output": "hi"}


@pytest.fixture()
def bad_file(tmp_path, write_lines):
    return write_lines(
        tmp_path / "file.jsonl",
        [
            json.dumps(GOOD),
            "",  # blank lines are skipped but still count as lines
            '{"instruction": "broken", ',
            json.dumps({"instruction": "no output here"}),
            json.dumps(GOOD),
        ],
    )


def test_fail_stops_at_the_first_bad_record_with_file_and_line(bad_file):
    with pytest.raises(DataError, match=r"file\.jsonl:3: not valid JSON"):
        load_dataset_file(bad_file)


def test_fail_on_a_missing_field_names_line_and_field(tmp_path, write_lines):
    path = write_lines(tmp_path / "file.jsonl", [json.dumps(GOOD), json.dumps(GOOD), json.dumps({"instruction": "x"})])
    with pytest.raises(DataError, match=r"file\.jsonl:3: missing field 'output'"):
        load_dataset_file(path)


def test_skip_collects_rejects_with_lines_and_keeps_the_good(bad_file, tmp_path):
    records, fmt, rejects = load_dataset_file(bad_file, on_bad_record="skip")
    assert fmt == "instruction"
    assert len(records) == 2
    assert [(r.line, r.file) for r in rejects] == [(3, str(bad_file)), (4, str(bad_file))]
    assert "not valid JSON" in rejects[0].reason
    assert "missing field 'output'" in rejects[1].reason
    assert rejects[1].record == {"instruction": "no output here"}

    write_rejects(rejects, tmp_path / "rejects.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [row["line"] for row in rows] == [3, 4]


def test_records_must_match_the_detected_format(tmp_path, write_lines):
    path = write_lines(tmp_path / "mixed.jsonl", [json.dumps(GOOD), json.dumps({"text": "plain"})])
    with pytest.raises(DataError, match=r"mixed\.jsonl:2: missing field 'instruction' \(instruction format\)"):
        load_dataset_file(path)


def test_a_record_that_is_not_an_object(tmp_path, write_lines):
    path = write_lines(tmp_path / "list.jsonl", [json.dumps(GOOD), "[1, 2]"])
    with pytest.raises(DataError, match=r"list\.jsonl:2: a record must be a JSON object, not list"):
        load_dataset_file(path)


def test_everything_rejected_is_an_error(tmp_path, write_lines):
    path = write_lines(tmp_path / "bad.jsonl", ["{", json.dumps({"nothing": "known"})])
    with pytest.raises(DataError, match="all 2 records were rejected"):
        load_dataset_file(path, on_bad_record="skip")


def test_unknown_format_lists_the_known_ones(tmp_path, write_lines):
    path = write_lines(tmp_path / "odd.jsonl", [json.dumps({"question": "?", "answer": "!"})])
    with pytest.raises(DataError, match=r"odd\.jsonl:1: unknown record format \(keys: answer, question\); known formats: text"):
        load_dataset_file(path)


# --------------------------------------------------------------------------- unreadable inputs


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        load_dataset_file(tmp_path / "nope.jsonl")


def test_unknown_extension_names_the_allowed_ones(tmp_path):
    path = tmp_path / "data.xml"
    path.write_text("<x/>")
    with pytest.raises(DataError, match=r"unsupported file type \.xml; use one of \.jsonl, \.json, \.csv, \.parquet, \.txt"):
        load_dataset_file(path)


@pytest.mark.parametrize("name,content", [("empty.jsonl", "\n\n"), ("empty.json", "[]"), ("empty.txt", "")])
def test_empty_dataset(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="the dataset is empty"):
        load_dataset_file(path)


def test_empty_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="the dataset is empty"):
        load_dataset_file(tmp_path / "d")


def test_invalid_json_file_reports_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: not valid JSON"):
        load_dataset_file(path)
