"""Data-layer fixtures: one small dataset per record format, and writers for every file type."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import pytest

RECORDS: dict[str, list[dict[str, Any]]] = {
    "text": [
        {"text": "the quick brown fox jumps over the lazy dog"},
        {"text": "hello world, how are you today?\nfine thanks"},
        {"text": "customer support tickets about billing"},
    ],
    "instruction": [
        {"instruction": "Say hello.", "input": "", "output": "Hello!", "system": None},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be brief."},
        {"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": None},
    ],
    "chat": [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "How are you?"},
                {"role": "assistant", "content": "Fine, thanks."},
            ]
        },
        {"messages": [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]},
    ],
    "sharegpt": [
        {
            "conversations": [
                {"from": "system", "value": "You help with billing."},
                {"from": "human", "value": "Where is my invoice?"},
                {"from": "gpt", "value": "In your account page."},
                {"from": "human", "value": "Thanks"},
                {"from": "gpt", "value": "You are welcome."},
            ]
        },
        {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]},
    ],
    "preference_strings": [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ],
    "preference_messages": [
        {
            "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Rate my poem."}],
            "chosen": [{"role": "assistant", "content": "It has lovely imagery."}],
            "rejected": [{"role": "assistant", "content": "Bad."}],
        },
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
            "rejected": [{"role": "assistant", "content": "What."}],
        },
    ],
}
EXPECTED_FORMAT = {
    "text": "text",
    "instruction": "instruction",
    "chat": "chat",
    "sharegpt": "sharegpt",
    "preference_strings": "preference",
    "preference_messages": "preference",
}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_as(kind: str, folder: Path, records: list[dict[str, Any]]) -> Path:
    """Write records as `kind` under folder; returns the path to load."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        return write_jsonl(folder / "data.jsonl", records)
    if kind == "json":
        path = folder / "data.json"
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
        return path
    if kind == "csv":
        path = folder / "data.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            for record in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in record.items()})
        return path
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "data.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
        return path
    if kind == "txt":
        path = folder / "data.txt"
        path.write_text("\n\n".join(r["text"] for r in records) + "\n", encoding="utf-8")
        return path
    if kind == "saved_dataset":
        import datasets

        path = folder / "saved"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
        return path
    if kind == "directory":
        path = folder / "dir"
        write_as("jsonl", path, records[:1])
        write_as("json", path / "sub", records[1:])
        return path
    raise ValueError(kind)


@pytest.fixture()
def write_data() -> Callable[[str, Path, list[dict[str, Any]]], Path]:
    return write_as


@pytest.fixture()
def write_lines():
    """Write raw lines (for broken JSON) to a .jsonl file."""

    def write(path: Path, lines: list[str]) -> Path:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture()
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", RECORDS["chat"] * 5)


@pytest.fixture()
def data_records() -> dict[str, list[dict[str, Any]]]:
    return RECORDS


@pytest.fixture()
def expected_format() -> dict[str, str]:
    return EXPECTED_FORMAT
