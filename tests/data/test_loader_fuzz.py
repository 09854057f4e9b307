"""Fuzz every data and config loader with random bytes, random JSON, truncated files and wrong types.

Whatever a file holds, a loader either returns records or raises a HoningError whose message
names the file (and its line, where the message points at one); never another exception.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from honing.config.inference import GenerateConfig, InspectConfig  # noqa: E402
from honing.config.loader import load_config  # noqa: E402
from honing.config.training import SFTConfig  # noqa: E402
from honing.config.workbench import DataCleanConfig  # noqa: E402
from honing.data.loading import load_dataset_file, load_sourced, read_records  # noqa: E402
from honing.data.prompts import read_prompts  # noqa: E402
from honing.errors import HoningError  # noqa: E402
from honing.workbench.io import iter_items, parse_payload  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SUFFIXES = [".jsonl", ".json", ".csv", ".txt"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Records shaped like the real formats, with wrong types in their fields: a role that is a list,
# content that is a number, a prompt that is a list of strings.
roles = st.sampled_from(["system", "user", "assistant", "human", "gpt", "chatgpt"]) | json_values
message = st.dictionaries(st.sampled_from(["role", "content", "from", "value"]), roles | st.text(max_size=10), max_size=3)
messages = st.lists(message | json_values, max_size=4)
field_values = st.text(max_size=15) | messages | json_values
records = st.dictionaries(
    st.sampled_from(["text", "instruction", "input", "output", "system", "messages", "conversations", "prompt",
                     "chosen", "rejected", "other"]),
    field_values, max_size=4,
) | json_values

def _consume(loader: Callable[[Path], Any], path: Path) -> None:
    result = loader(path)
    if hasattr(result, "__next__"):
        for item in result:
            if loader is iter_items:
                try:
                    parse_payload(item[2])
                except ValueError:  # RecordError: the worker's reason, given file:line by the caller
                    pass


def _check(loader: Callable[[Path], Any], path: Path) -> None:
    try:
        _consume(loader, path)
    except HoningError as err:
        message = str(err)
        assert str(path) in message, f"{loader.__name__}: the message does not name the file: {message}"
        line = re.search(re.escape(str(path)) + r":(\d+)", message)
        if line:
            assert int(line.group(1)) >= 1, message
        assert "\n" not in message.strip(), f"not one line: {message}"


LOADERS: list[Callable[[Path], Any]] = [
    lambda path: read_records(path),
    lambda path: load_dataset_file(path),
    lambda path: load_sourced(path, on_bad_record="skip"),
    iter_items,
    read_prompts,
]
LOADER_IDS = ["read_records", "load_dataset_file", "load_sourced_skip", "workbench_iter_items", "read_prompts"]
for loader, name in zip(LOADERS, LOADER_IDS):
    loader.__name__ = name


def _write(folder: str, suffix: str, data: bytes) -> Path:
    path = Path(folder) / f"data{suffix}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from(SUFFIXES), bom=st.booleans())
def test_random_bytes(loader, data, suffix, bom):
    with tempfile.TemporaryDirectory() as folder:
        _check(loader, _write(folder, suffix, (b"\xef\xbb\xbf" if bom else b"") + data))


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@SETTINGS
@given(rows=st.lists(records, max_size=5), suffix=st.sampled_from([".jsonl", ".json"]), cut=st.integers(0, 400),
       whole=st.booleans())
def test_random_json_whole_and_truncated(loader, rows, suffix, cut, whole):
    text = "\n".join(json.dumps(row) for row in rows) if suffix == ".jsonl" else json.dumps(rows, indent=1)
    data = text.encode()
    with tempfile.TemporaryDirectory() as folder:
        _check(loader, _write(folder, suffix, data if whole else data[:cut]))


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@SETTINGS
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "instruction", "output", "messages", "prompt"]),
                                     st.text(max_size=15) | json_values.map(json.dumps), max_size=3), max_size=4),
       cut=st.integers(0, 300))
def test_random_csv(loader, rows, cut):
    import csv
    import io

    buffer = io.StringIO()
    keys = sorted({key for row in rows for key in row}) or ["text"]
    writer = csv.DictWriter(buffer, keys)
    writer.writeheader()
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        _check(loader, _write(folder, ".csv", buffer.getvalue().encode()[:cut or None]))


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"text": st.text(max_size=20), "n": st.integers(0, 9)}), min_size=1, max_size=5),
       cut=st.integers(0, 2000), whole=st.booleans())
def test_parquet_whole_and_truncated(loader, rows, cut, whole):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        if not whole:
            path.write_bytes(path.read_bytes()[:cut])
        _check(loader, path)


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
def test_directory_and_missing_file(loader, tmp_path):
    _check(loader, tmp_path / "missing.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    _check(loader, tmp_path / "folder.jsonl")


# --------------------------------------------------------------------------- config files

CONFIGS = [InspectConfig, SFTConfig, GenerateConfig, DataCleanConfig]
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["model", "data", "train", "output", "path", "lr", "dir", "train_on", "input", "x"]),
        inner, max_size=3),
    max_leaves=10,
)


def _check_config(cls, path: Path) -> None:
    try:
        load_config(cls, path)
    except HoningError as err:
        message = str(err)
        assert str(path) in message, message


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
@SETTINGS
@given(data=st.binary(max_size=200), bom=st.booleans())
def test_config_random_bytes(cls, data, bom):
    with tempfile.TemporaryDirectory() as folder:
        _check_config(cls, _write(folder, ".yaml", (b"\xef\xbb\xbf" if bom else b"") + data))


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
@SETTINGS
@given(value=yaml_values, cut=st.integers(0, 200), whole=st.booleans())
def test_config_random_yaml_and_wrong_types(cls, value, cut, whole):
    import yaml

    text = yaml.safe_dump(value, sort_keys=False).encode()
    with tempfile.TemporaryDirectory() as folder:
        _check_config(cls, _write(folder, ".yml", text if whole else text[:cut]))


def test_config_with_a_bom_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfdata:\n  train: x.jsonl\n")
    assert load_config(InspectConfig, path).data.train == "x.jsonl"


def test_jsonl_with_a_bom_loads(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"instruction": "a", "output": "b"}\n')
    records, fmt, _ = load_dataset_file(path)
    assert fmt == "instruction" and len(records) == 1
    assert [line for _, line, _ in iter_items(path)] == [1] and parse_payload(next(iter_items(path))[2])["output"] == "b"



FOUND = [  # found by the fuzz test: a role that is not a string crashed the format check and prompt_of
    '{"messages": [{"role": "system", "content": "s"}, {"role": []}]}',
    '{"messages": [{"role": ["user"], "content": "a"}, {"role": "assistant", "content": "b"}]}',
    '{"conversations": [{"from": {"a": 1}, "value": "a"}, {"from": "gpt", "value": "b"}]}',
    '{"prompt": [{"role": ["user"], "content": "a"}], "chosen": "a", "rejected": "b"}',
]


@pytest.mark.parametrize("loader", [load_dataset_file, read_prompts], ids=["load_dataset_file", "read_prompts"])
@pytest.mark.parametrize("line", FOUND, ids=["role-list-chat", "role-list-first", "role-dict-sharegpt", "role-list-prompt"])
def test_a_role_of_the_wrong_type_is_a_one_line_error(loader, line, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(HoningError, match=re.escape(f"{path}:1: ")):
        loader(path)


@pytest.mark.parametrize("data", [b'{"text": "caf\xe9"}\n', b"\x00\x01\xff\xfe\n"], ids=["latin1", "binary"])
def test_bytes_that_are_not_utf8_name_file_and_line(data, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"prompt": "fine", "text": "fine"}\n' + data)
    for loader in (read_records, load_dataset_file, read_prompts):
        with pytest.raises(HoningError, match=re.escape(f"{path}:2: not UTF-8 text")):
            _consume(loader, path)
    items = list(iter_items(path))
    with pytest.raises(ValueError, match="not UTF-8 text"):  # the workbench rejects it at its file:line
        parse_payload(items[1][2])
    assert items[1][:2] == (str(path), 2)
