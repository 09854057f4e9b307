"""`honing inspect`: counts, histogram, trained share and a marked example, from the tokenizer alone."""

from __future__ import annotations

import io
import json
import sys
import types

import pytest
from rich.console import Console

from honing.config import DataConfig, InspectConfig
from honing.errors import DataError
from honing.stages import inspect as inspect_stage


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, color_system=None), out


def test_inspect_reports_counts_histogram_and_marks_trained_tokens(tmp_path, tokenizer, write_data, data_records):
    path = write_data("jsonl", tmp_path, data_records["chat"] * 3)
    with path.open("a") as handle:
        handle.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    cfg = InspectConfig(data=DataConfig(train=str(path), max_length=256), example=1)
    console, out = plain_console()

    stats = inspect_stage.inspect_data(cfg, tokenizer, console=console)

    assert (stats["format"], stats["records"], stats["rejected"], stats["examples"]) == ("chat", 6, 1, 6)
    assert stats["rejects"][0]["where"] == f"{path}:7"
    assert sum(b["count"] for b in stats["histogram"]) == 6 and len(stats["histogram"]) <= 10
    assert 0 < stats["trained_share"] < 1 and stats["trained_share"] + stats["masked_share"] == pytest.approx(1)
    assert stats["example_text"] == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nPing<|im_end|>\n<|im_start|>assistant\n⟦Pong<|im_end|>⟧\n"
    )
    printed = out.getvalue()
    for piece in (str(path), "chat", "rejected", "tokens per example", "█", "⟦Pong<|im_end|>⟧", f"{path}:7"):
        assert piece in printed, piece
    assert "\x1b[" not in printed  # no colour codes when the console is not a terminal


def test_inspect_text_and_truncation(tmp_path, tokenizer, write_data, data_records):
    path = write_data("txt", tmp_path, data_records["text"])
    cfg = InspectConfig(data=DataConfig(train=str(path), max_length=8))
    stats = inspect_stage.inspect_data(cfg, tokenizer, console=plain_console()[0])
    assert stats["format"] == "text" and stats["records"] == 3 and stats["examples"] > 3
    assert stats["trained_share"] == 1.0 and stats["length_max"] <= 8

    chat = tmp_path / "long.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 100}]}) + "\n")
    stats = inspect_stage.inspect_data(InspectConfig(data=DataConfig(train=str(chat), max_length=64)), tokenizer, console=plain_console()[0])
    assert stats["truncated"] == 1 and stats["length_max"] == 64


def test_inspect_example_out_of_range(tmp_path, tokenizer, write_data, data_records):
    path = write_data("jsonl", tmp_path, data_records["instruction"])
    cfg = InspectConfig(data=DataConfig(train=str(path)), example=9)
    with pytest.raises(DataError, match="example=9 does not exist"):
        inspect_stage.inspect_data(cfg, tokenizer, console=plain_console()[0])


def test_run_loads_only_the_tokenizer(tmp_path, tokenizer, write_data, data_records, monkeypatch):
    calls = []
    fake = types.ModuleType("honing.models.load")
    fake.load_tokenizer = lambda model_cfg: calls.append(model_cfg) or tokenizer
    fake.load_model = lambda *a, **k: pytest.fail("inspect must not load model weights")
    monkeypatch.setitem(sys.modules, "honing.models.load", fake)
    path = write_data("jsonl", tmp_path, data_records["preference_strings"])
    cfg = InspectConfig(data=DataConfig(train=str(path)))
    monkeypatch.setattr(inspect_stage, "Console", lambda: plain_console()[0], raising=False)

    stats = inspect_stage.inspect_data(cfg, tokenizer, console=plain_console()[0])
    assert stats["format"] == "preference" and "⟦Paris.<|im_end|>⟧" in stats["example_text"]
    assert inspect_stage.run(cfg)["records"] == 2 and calls == [cfg.model]


def test_histogram_bins_cover_every_length():
    bins = inspect_stage.histogram([1, 5, 9, 100, 100, 37])
    assert len(bins) <= 10 and sum(b["count"] for b in bins) == 6
    assert bins[0]["low"] == 1 and bins[-1]["low"] <= 100 <= bins[-1]["high"]
    assert inspect_stage.histogram([7, 7]) == [{"low": 7, "high": 7, "count": 2}]
