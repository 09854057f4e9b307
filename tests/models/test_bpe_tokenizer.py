"""The BPE tokenizer trained for models built from scratch, and the scratch model itself."""

from __future__ import annotations

import pytest

from honing.config import ModelConfig, ScratchModelConfig
from honing.models.load import build_scratch_model, default_intermediate_size, load_tokenizer
from honing.models.tokenizer import train_bpe_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Customer support tickets about billing, shipping and returns.",
    "Héllo wörld — naïve café, 東京, emoji 🙂 and tabs\tand  double  spaces.",
] * 30


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(CORPUS, vocab_size=320)


def test_round_trips_any_text(bpe):
    for text in [*CORPUS[:3], "unseen words: zyxwvut 12345 ∑ ¿?", "  leading and trailing  "]:
        ids = bpe(text, add_special_tokens=False)["input_ids"]
        assert bpe.decode(ids) == text


def test_vocab_size_and_special_tokens(bpe):
    assert len(bpe) <= 320
    assert bpe.bos_token == bpe.eos_token == bpe.pad_token == "<|endoftext|>"
    for token in ("<|im_start|>", "<|im_end|>"):
        assert len(bpe(token, add_special_tokens=False)["input_ids"]) == 1
    assert bpe("hello", add_special_tokens=True)["input_ids"] == bpe("hello", add_special_tokens=False)["input_ids"]


def test_chat_template_is_chatml(bpe):
    text = bpe.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_saves_and_loads(bpe, tmp_path):
    bpe.save_pretrained(tmp_path)
    again = load_tokenizer(ModelConfig(tokenizer=str(tmp_path)))
    assert len(again) == len(bpe)
    assert again.chat_template == bpe.chat_template
    assert again("fox jumps")["input_ids"] == bpe("fox jumps")["input_ids"]
    assert again.pad_token == "<|endoftext|>"


def test_scratch_model_forward(bpe):
    import torch

    cfg = ScratchModelConfig(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, max_position_embeddings=64)
    model = build_scratch_model(cfg, bpe, seed=3)
    assert model.config.vocab_size == len(bpe)
    assert model.config.intermediate_size == default_intermediate_size(64) == 192
    assert model.config.eos_token_id == bpe.eos_token_id
    ids = torch.tensor([bpe("the quick brown fox")["input_ids"]])
    logits = model(input_ids=ids).logits  # (1, T, V)
    assert logits.shape == (1, ids.shape[1], len(bpe))
    again = build_scratch_model(cfg, bpe, seed=3)
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
    other = build_scratch_model(cfg, bpe, seed=4)
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)
