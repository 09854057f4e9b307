"""End to end on the embedded SmolLM2-135M-Instruct GGUF (slow: seconds to half a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from honing.config import ModelConfig, SamplingConfig

pytestmark = pytest.mark.slow


def test_embedded_model_answers(tmp_path):
    from honing.generate import generate
    from honing.models.load import load_model
    from honing.models.source import gguf_model_cache

    loaded = load_model(ModelConfig())  # the first load ever converts into the cache (~20 s); later ones read it
    assert loaded.source["kind"] == "embedded" and len(loaded.source["sha256"]) == 64
    assert loaded.tokenizer.eos_token == loaded.tokenizer.pad_token == "<|im_end|>"
    assert not hasattr(loaded.model.config, "quantization_config")
    assert (gguf_model_cache(Path(loaded.source["path"])) / "config.json").is_file()
    [answer] = generate(loaded.model, loaded.tokenizer, ["What is the capital of France?"],
                        SamplingConfig(max_new_tokens=24, temperature=0.0), progress=False)
    assert "Paris" in answer, answer


def test_embedded_tokenizer_is_cached(tmp_path, monkeypatch):
    from honing.models.load import load_tokenizer

    monkeypatch.setenv("HONING_CACHE", str(tmp_path))
    first = load_tokenizer(ModelConfig())  # converts from the GGUF (~6 s)
    from transformers import AutoTokenizer

    read_from_gguf = []
    original = AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        if kwargs.get("gguf_file"):
            read_from_gguf.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    again = load_tokenizer(ModelConfig())
    assert not read_from_gguf, "the second load must read the cached HF directory, not convert the GGUF again"
    assert again("Hello there")["input_ids"] == first("Hello there")["input_ids"]
    assert again.chat_template == first.chat_template
    assert not list((tmp_path / "tokenizers").glob(".*")), "no temporary leftovers"
