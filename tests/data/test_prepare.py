"""prepare_data: split, tokenise, reject, count, cache."""

from __future__ import annotations

import json
import random

import pytest

from honing.config import DataConfig
from honing.data.cache import path_sha256
from honing.data.prepare import prepare_data
from honing.data.split import split_records
from honing.errors import DataError


def test_split_is_deterministic_and_independent_of_global_rngs():
    records = list(range(100))
    first = split_records(records, 0.1, seed=3)
    random.seed(12345)
    import torch

    torch.manual_seed(999)
    assert split_records(records, 0.1, seed=3) == first
    train, validation = first
    assert len(validation) == 10 and sorted(train + validation) == records
    assert split_records(records, 0.1, seed=4) != first


def test_split_keeps_at_least_one_of_each():
    assert [len(part) for part in split_records([1, 2], 0.01, 0)] == [1, 1]
    assert [len(part) for part in split_records([1, 2, 3], 0.99, 0)] == [1, 2]
    assert split_records([1], 0.5, 0) == ([1], [])
    assert split_records([1, 2, 3], 0.0, 0) == ([1, 2, 3], [])


def config(path, tmp_path, **overrides) -> DataConfig:
    return DataConfig(**{"train": str(path), "cache_dir": str(tmp_path / "cache"), "max_length": 256, **overrides})


def test_sft_prepare_reports_stats_and_inputs(chat_file, tmp_path, tokenizer):
    data = prepare_data(config(chat_file, tmp_path, validation_split=0.2), tokenizer, purpose="sft")
    stats = data.stats
    assert data.format == "chat" and stats["format"] == "chat"
    assert (stats["records"], stats["rejected"], stats["truncated"]) == (10, 0, 0)
    assert (stats["train_examples"], stats["validation_examples"]) == (8, 2)
    assert stats["tokens"] == sum(len(e.input_ids) for e in data.train)
    assert stats["target_tokens"] == sum(e.target_tokens for e in data.train)
    assert 0 < stats["masked_share"] < 1 and stats["validation"] == "split" and not stats["validation_empty"]
    assert stats["cache_hit"] is False
    assert data.inputs == [{"role": "train", "path": str(chat_file), "sha256": path_sha256(chat_file)}]


def test_second_prepare_hits_the_cache_and_a_changed_max_length_misses(chat_file, tmp_path, tokenizer):
    cfg = config(chat_file, tmp_path)
    first = prepare_data(cfg, tokenizer, purpose="sft")
    second = prepare_data(cfg, tokenizer, purpose="sft")
    assert (first.stats["cache_hit"], second.stats["cache_hit"]) == (False, True)
    assert second.train == first.train and second.validation == first.validation
    assert {k: v for k, v in second.stats.items() if k != "cache_hit"} == {k: v for k, v in first.stats.items() if k != "cache_hit"}

    changed = prepare_data(config(chat_file, tmp_path, max_length=200), tokenizer, purpose="sft")
    assert changed.stats["cache_hit"] is False
    tokenizer.chat_template = tokenizer.chat_template.replace("helpful AI assistant", "helpful assistant")
    assert prepare_data(cfg, tokenizer, purpose="sft").stats["cache_hit"] is False
    # No temporary files are left behind by the atomic writes.
    assert all(p.suffix == ".npz" for p in (tmp_path / "cache").iterdir())


def test_cache_location_from_environment(chat_file, tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "env-cache"))
    prepare_data(DataConfig(train=str(chat_file)), tokenizer, purpose="sft")
    assert list((tmp_path / "env-cache").glob("*.npz"))


def test_validation_file_and_directory_hashes(tmp_path, tokenizer, write_data, data_records):
    train = write_data("directory", tmp_path / "train", data_records["chat"] * 2)
    validation = write_data("jsonl", tmp_path / "val", data_records["chat"])
    data = prepare_data(config(train, tmp_path, validation=str(validation)), tokenizer, purpose="sft")
    assert (data.stats["train_examples"], data.stats["validation_examples"], data.stats["validation"]) == (4, 2, "file")
    assert [entry["role"] for entry in data.inputs] == ["train", "validation"]
    assert data.inputs[0]["sha256"] == path_sha256(train) != path_sha256(validation)


def test_no_validation_is_said(chat_file, tmp_path, tokenizer):
    data = prepare_data(config(chat_file, tmp_path, validation_split=0.0), tokenizer, purpose="sft")
    assert data.validation == [] and data.stats["validation_empty"] and data.stats["validation"] == "none"


@pytest.mark.parametrize("kind,needs", [("text", "honing pretrain"), ("preference_strings", "dpo")])
def test_sft_refuses_text_and_preference_data(kind, needs, tmp_path, tokenizer, write_data, data_records):
    path = write_data("jsonl", tmp_path, data_records[kind])
    with pytest.raises(DataError, match=rf"sft needs instruction .* chat .* sharegpt .*{needs}"):
        prepare_data(config(path, tmp_path), tokenizer, purpose="sft")


def test_pretrain_chunks_text(tmp_path, tokenizer, write_data, data_records):
    path = write_data("txt", tmp_path, data_records["text"] * 4)
    data = prepare_data(config(path, tmp_path, max_length=8, validation_split=0.25), tokenizer, purpose="pretrain")
    assert data.format == "text" and data.stats["validation_examples"] > 0
    assert all(len(e.input_ids) <= 8 and e.labels == e.input_ids for e in data.train)
    assert data.stats["target_tokens"] == sum(len(e.input_ids) - 1 for e in data.train)


def long_prompt_file(tmp_path):
    long = {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    long_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 400}]}
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [short, long, long_answer, short]) + "\n")
    return path


def test_prompt_longer_than_the_context_fails_with_file_and_line(tmp_path, tokenizer):
    path = long_prompt_file(tmp_path)
    with pytest.raises(DataError, match=r"train\.jsonl:2: prompt is \d+ tokens, longer than data.max_length=256; raise max_length"):
        prepare_data(config(path, tmp_path, validation_split=0.0), tokenizer, purpose="sft")


def test_skip_rejects_long_prompts_and_counts_truncation(tmp_path, tokenizer):
    path = long_prompt_file(tmp_path)
    data = prepare_data(config(path, tmp_path, validation_split=0.0, on_bad_record="skip"), tokenizer, purpose="sft")
    assert [(r.line, r.reason.split(",")[0].split(" is ")[0]) for r in data.rejects] == [(2, "prompt")]
    assert data.stats["rejected"] == 1 and data.stats["truncated"] == 1 and data.stats["train_examples"] == 3
    assert data.stats["records"] == 4
    # Rejects survive the cache.
    again = prepare_data(config(path, tmp_path, validation_split=0.0, on_bad_record="skip"), tokenizer, purpose="sft")
    assert again.stats["cache_hit"] and again.rejects == data.rejects


def test_missing_train_file(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"missing\.jsonl does not exist"):
        prepare_data(config(tmp_path / "missing.jsonl", tmp_path), tokenizer, purpose="sft")
