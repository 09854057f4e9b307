"""The work both frameworks do: model shapes, the random-init model, the data, and the FLOP counts.

Everything here is a function of (size, seed), so honing's process and TRL's process build the
same model and the same examples without sharing anything but the numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

PAD_ID = 0
"""Padding token; data tokens are drawn from FIRST_TOKEN.. so a pad is never a real token."""
EOS_ID = 1
FIRST_TOKEN = 2
ZIPF_EXPONENT = 1.1
"""Token ids follow a Zipf law, so the loss has something to learn (the unigram statistics)
and the two frameworks' loss curves have a shape to compare, not a flat ln(vocab)."""


@dataclass(frozen=True)
class Size:
    """A model shape plus the batch and schedule it is benchmarked with."""

    name: str
    arch: Literal["llama", "gpt2"]
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    seq: int
    """Packed row length (= max_length for TRL) and the attention length in the FLOP count."""
    tied: bool
    min_len: int
    """Example lengths are uniform in [min_len, seq]; min_len == seq gives one full example per row."""
    micro_batch: int
    grad_accum: int
    steps: int
    """Timed optimiser steps."""
    warmup: int
    """Untimed optimiser steps before them (allocator, autotuning, first-touch)."""
    lr: float

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


SIZES: dict[str, Size] = {
    # For tests: seconds on a laptop.
    "tiny": Size("tiny", "llama", hidden=64, layers=2, heads=4, kv_heads=2, mlp=128, vocab=512, seq=128, tied=True,
                 min_len=16, micro_batch=1, grad_accum=2, steps=1, warmup=1, lr=1e-3),
    # A few minutes for all four legs (honing/TRL × full/LoRA) on 2 CPU cores.
    "cpu-small": Size("cpu-small", "llama", hidden=256, layers=4, heads=4, kv_heads=2, mlp=768, vocab=8192, seq=512,
                      tied=True, min_len=64, micro_batch=1, grad_accum=4, steps=12, warmup=2, lr=1e-3),
    # The Llama-3.2-1B shape (GPU).
    "llama-1b": Size("llama-1b", "llama", hidden=2048, layers=16, heads=32, kv_heads=8, mlp=8192, vocab=128256,
                     seq=2048, tied=True, min_len=64, micro_batch=2, grad_accum=1, steps=30, warmup=5, lr=2e-5),
    # GPT-2 small pre-training shape (honing only; compared with nanoGPT's bench.py): full rows, no packing gaps.
    "gpt2-small": Size("gpt2-small", "gpt2", hidden=768, layers=12, heads=12, kv_heads=12, mlp=3072, vocab=50304,
                       seq=1024, tied=True, min_len=1024, micro_batch=16, grad_accum=2, steps=30, warmup=5, lr=6e-4),
}


def resolve_size(name: str, **overrides: Any) -> Size:
    size = SIZES[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "seq" in overrides and "min_len" not in overrides:
        overrides["min_len"] = min(size.min_len, overrides["seq"]) if size.min_len < size.seq else overrides["seq"]
    return replace(size, **overrides)


def size_dict(size: Size) -> dict[str, Any]:
    return asdict(size)


# --------------------------------------------------------------------------- model


def build_model(size: Size, seed: int, device: str, attn: str, dtype: str = "float32"):
    """A random-init causal LM of this shape; the same weights for the same seed in any process."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if size.arch == "llama":
        config = LlamaConfig(
            vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.mlp,
            num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
            max_position_embeddings=max(size.seq, 2048), rope_theta=500_000.0, tie_word_embeddings=size.tied,
            bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )
    else:
        config = GPT2Config(
            vocab_size=size.vocab, n_embd=size.hidden, n_layer=size.layers, n_head=size.heads, n_inner=size.mlp,
            n_positions=size.seq, tie_word_embeddings=size.tied, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
            pad_token_id=PAD_ID, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    torch_dtype = getattr(torch, dtype)
    # Initialised on the device (fast for the 1B shape); the same seed gives the same weights in
    # every process on the same kind of device.
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch_dtype)
    return model


def lora_adapter(rank: int = 16):
    """honing's AdapterConfig for the LoRA legs; TRL gets the identical peft LoraConfig built from it."""
    from honing.config import AdapterConfig

    # Dropout off on both sides: it is a regulariser choice, not part of the engine being measured.
    return AdapterConfig(method="lora", rank=rank, alpha=2.0 * rank, dropout=0.0, target_modules="all-linear")


def make_tokenizer(vocab: int):
    """A word-level tokenizer over ids "0".."vocab-1": TRL requires a tokenizer object; the data is
    already token ids, so it is only consulted for the pad and eos ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {str(i): i for i in range(vocab)}
    words["<pad>"], words["</s>"] = PAD_ID, EOS_ID
    del words[str(PAD_ID)], words[str(EOS_ID)]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<pad>")))
    tokenizer.pad_token, tokenizer.eos_token = "<pad>", "</s>"
    return tokenizer


# --------------------------------------------------------------------------- data


def make_examples(size: Size, seed: int) -> list[list[int]]:
    """Random token sequences of random lengths, enough that one epoch of either framework's packed
    rows covers every step (so neither repeats data nor hits an epoch boundary mid-benchmark)."""
    import torch

    mean_len = (size.min_len + size.seq) / 2
    rows_needed = size.total_steps * size.global_batch
    count = math.ceil(1.3 * rows_needed * size.seq / mean_len) + 8
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(size.min_len, size.seq + 1, (count,), generator=generator).tolist()
    ranks = torch.arange(size.vocab - FIRST_TOKEN, dtype=torch.float64)
    probs = (ranks + 10.0) ** -ZIPF_EXPONENT
    tokens = torch.multinomial(probs, sum(lengths), replacement=True, generator=generator) + FIRST_TOKEN
    examples, start = [], 0
    for length in lengths:
        examples.append(tokens[start : start + length].tolist())
        start += length
    return examples


def real_tokens(input_ids) -> int:
    """Non-padding tokens of a collated batch (data tokens are never PAD_ID)."""
    return int((input_ids != PAD_ID).sum())


# --------------------------------------------------------------------------- FLOPs


def linear_shapes(size: Size) -> list[tuple[int, int]]:
    """(in, out) of every linear layer in the blocks (the ones LoRA all-linear adapts)."""
    head_dim = size.hidden // size.heads
    kv = size.kv_heads * head_dim
    if size.arch == "llama":
        per_layer = [(size.hidden, size.hidden), (size.hidden, kv), (size.hidden, kv), (size.hidden, size.hidden),
                     (size.hidden, size.mlp), (size.hidden, size.mlp), (size.mlp, size.hidden)]
    else:  # GPT-2: fused qkv, attention out, MLP up, MLP down
        per_layer = [(size.hidden, 3 * size.hidden), (size.hidden, size.hidden),
                     (size.hidden, size.mlp), (size.mlp, size.hidden)]
    return per_layer * size.layers


def flops_per_token(size: Size, mode: str, lora_rank: int = 16) -> dict[str, float]:
    """Training FLOPs per token.

    N = parameters that take part in a matmul: every block linear plus the LM head (vocab × hidden;
    counted even when tied, since the input embedding is a lookup). Attention scores and values
    cost 12 · layers · hidden · seq per token (forward 4·L·H·T, backward twice that; no causal
    halving, the convention of PaLM and nanoGPT).

    full: 6·N + attention.  LoRA: the frozen weights need the forward (2·N) and the gradient with
    respect to their input (2·N), not their own gradient; the adapter matrices need all three
    (6·N_lora): 4·N + 6·N_lora + attention.
    """
    block = sum(i * o for i, o in linear_shapes(size))
    matmul_params = block + size.vocab * size.hidden
    attention = 12 * size.layers * size.hidden * size.seq
    lora_params = sum(lora_rank * (i + o) for i, o in linear_shapes(size))
    if mode == "full":
        total = 6 * matmul_params + attention
    else:
        total = 4 * matmul_params + 6 * lora_params + attention
    return {"flops_per_token": float(total), "matmul_params": matmul_params, "lora_params": lora_params,
            "attention_flops_per_token": float(attention)}


def matmul_peak(device: str, dtype: str) -> dict[str, Any]:
    """Best sustained FLOP/s of large square matmuls in `dtype` on `device` (the MFU denominator)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    sizes = (8192,) if device.startswith("cuda") else (1024, 2048)
    iterations = 30 if device.startswith("cuda") else 12
    best = {"flops_per_s": 0.0}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch_dtype)
        b = torch.randn(n, n, device=device, dtype=torch_dtype)
        for _ in range(3):
            a @ b
        _sync(device)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - start)
        if device.startswith("cuda"):  # one long timed burst: per-call launch gaps are not compute
            start = time.perf_counter()
            for _ in range(iterations):
                a @ b
            _sync(device)
            times.append((time.perf_counter() - start) / iterations)
        rate = 2 * n**3 / min(times)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "n": n, "dtype": dtype, "device": device}
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --------------------------------------------------------------------------- the quickstart workload


def quickstart_config(steps: int, shared_prefix: str, seed: int = 42, model_path: str | None = None):
    """`honing quickstart`'s fine-tune (the embedded SmolLM2-135M-Instruct, LoRA r16 on all linear layers,
    micro-batches of 8 padded rows, max_length 256, loss on the assistant turns) on its bundled training
    tickets, cut to `steps` optimiser steps, without validation or checkpoints. Every row begins with the
    same system prompt, so this is the workload where train.shared_prefix has something to share.
    `model_path`: another model with the same tokenizer instead of the embedded one (the tests' tiny model)."""
    from honing.config import QuickstartConfig
    from honing.quickstart import task

    cfg = QuickstartConfig().sft
    data = cfg.data.model_copy(update={"train": str(task.DATA_DIR / "train.jsonl")})
    train = cfg.train.model_copy(update={"max_steps": steps, "eval_every": None, "save_every": None, "seed": seed,
                                         "shared_prefix": shared_prefix})
    model = cfg.model.model_copy(update={"path": model_path}) if model_path else cfg.model
    return cfg.model_copy(update={"data": data, "train": train, "model": model})
