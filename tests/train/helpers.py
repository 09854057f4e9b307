"""Small builders for engine tests: random examples with uneven target counts, a tiny model."""

from __future__ import annotations

import random

import torch

from honing.data.types import IGNORE_INDEX, TokenizedExample


def random_examples(n: int, vocab: int, seed: int = 0, min_len: int = 6, max_len: int = 24) -> list[TokenizedExample]:
    """Examples whose prompt share varies, so target-token counts differ between micro-batches."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        out.append(TokenizedExample(ids, labels))
    return out


def tiny_llama(vocab: int = 97, seed: int = 0, dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        attention_dropout=dropout, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
