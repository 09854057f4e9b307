"""Log-likelihoods the way lm-evaluation-harness defines them, and per-example held-out loss.

A continuation's log-likelihood is the sum of log p(token | everything before it) over the
continuation's tokens. Like the harness, the continuation's tokens are those of
tokenize(context + continuation) after the tokens of tokenize(context), with trailing spaces
moved from the context to the continuation, so a word boundary is tokenised the way the model
saw it in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from honing.data.types import IGNORE_INDEX, TokenizedExample


@dataclass
class Continuation:
    logprob: float  # sum over the continuation's tokens
    greedy: bool  # every continuation token is the argmax at its position
    tokens: int
    truncated: bool  # the context was cut from the left to fit max_length


def encode_pair(tokenizer: Any, context: str, continuation: str, *, add_special_tokens: bool) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    return whole[: len(context_ids)], whole[len(context_ids):]


@torch.no_grad()
def continuation_logprobs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 8,
                          max_length: int = 1024, add_special_tokens: bool = True) -> list[Continuation]:
    """One Continuation per (context, continuation) pair, in order."""
    encoded = []
    for context, continuation in pairs:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, add_special_tokens=add_special_tokens)
        if not continuation_ids:
            raise ValueError(f"the continuation {continuation!r} has no tokens of its own")
        ids = context_ids + continuation_ids
        keep = min(len(ids), max_length + 1)  # +1: the last token is only a target
        encoded.append((ids[-keep:], len(continuation_ids), keep < len(ids)))
    device = next(model.parameters()).device
    results: list[Continuation | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            inputs = [encoded[i][0][:-1] for i in chunk]
            width = max(len(x) for x in inputs)
            pad = tokenizer.pad_token_id or 0
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in inputs], device=device)  # (B, T)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in inputs], device=device)
            logprobs = F.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)  # (B, T, V)
            for row, index in enumerate(chunk):
                ids, n_cont, truncated = encoded[index]
                targets = torch.tensor(ids[-n_cont:], device=device)  # (C,)
                positions = torch.arange(len(ids) - 1 - n_cont, len(ids) - 1, device=device)  # predicting each target
                row_logprobs = logprobs[row, positions]  # (C, V)
                chosen = row_logprobs.gather(-1, targets[:, None]).squeeze(-1)
                greedy = bool((row_logprobs.argmax(-1) == targets).all())
                results[index] = Continuation(float(chosen.sum()), greedy, n_cont, truncated)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


@torch.no_grad()
def example_losses(model: Any, examples: Sequence[TokenizedExample], *, batch_size: int = 8,
                   pad_id: int = 0) -> list[tuple[float, int]]:
    """(summed loss, target tokens) per example; masked (prompt) tokens are not counted."""
    from honing.data.packing import collate_padded

    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate_padded(examples[start:start + batch_size], pad_id=pad_id)
            input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).logits  # (B, T, V)
            targets = labels[:, 1:]  # (B, T-1)
            token_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                         reduction="none")  # (B, T-1)
            counts = (targets != IGNORE_INDEX).sum(-1)
            out.extend((float(s), int(n)) for s, n in zip(token_loss.sum(-1), counts))
    finally:
        model.train(was_training)
    return out
