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
    """One Continuation per (context, continuation) pair, in order.

    Pairs with the same context (a question's choices) go through the model together and their common
    tokens are computed once (honing.train.shared_prefix: each row's own tokens attend to them through the
    KV cache); the output head is applied only where a continuation token is predicted. Both change
    nothing but float rounding (tests/evals/test_loglik.py)."""
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
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index, (ids, n_cont, _) in enumerate(encoded):
        by_context.setdefault(tuple(ids[:-n_cont]), []).append(index)
    groups = sorted(by_context.values(), key=lambda rows: -max(len(encoded[i][0]) for i in rows))
    was_training = model.training
    model.eval()
    try:
        batch: list[list[int]] = []
        for group in groups + [[]]:
            if batch and (not group or sum(len(g) for g in batch) + len(group) > batch_size):
                _score_batch(model, tokenizer, encoded, batch, results, device)
                batch = []
            if group:
                batch.append(group)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _score_batch(model: Any, tokenizer: Any, encoded: list[tuple[list[int], int, bool]], groups: list[list[int]],
                 results: list[Continuation | None], device: Any) -> None:
    """Score the rows of `groups` (each a list of pair indices with one context) in one pass."""
    from honing.train.objectives.causal_lm import _LOGIT_TRANSFORMS, causal_lm_of
    from honing.train.shared_prefix import backbone_with_shared_prefix, plan_prefix, unsupported_reason

    rows = [i for group in groups for i in group]
    width = max(len(encoded[i][0]) for i in rows)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([encoded[i][0] + [pad] * (width - len(encoded[i][0])) for i in rows], device=device)
    mask = torch.tensor([[1] * len(encoded[i][0]) + [0] * (width - len(encoded[i][0])) for i in rows], device=device)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, index in enumerate(rows):
        ids, n_cont, _ = encoded[index]
        labels[row, len(ids) - n_cont:len(ids)] = torch.tensor(ids[-n_cont:], device=device)
    lm = causal_lm_of(model)
    backbone = getattr(lm, lm.base_model_prefix, None)
    if any(getattr(lm.config, name, None) for name in _LOGIT_TRANSFORMS):
        backbone = None  # the model transforms its logits after the head: only its own forward is right
    plan = None
    if backbone is not None and unsupported_reason(model, activation_checkpointing=False, compile=False,
                                                   fsdp=False) is None:
        spans, start = [], 0
        for group in groups:
            spans.append(list(range(start, start + len(group))))
            start += len(group)
        plan = plan_prefix(input_ids, labels, mask, [spans], min_tokens=1)
    if plan is not None:
        hidden, labels = backbone_with_shared_prefix(backbone, plan, input_ids, labels, mask, None)
    elif backbone is not None:
        hidden = backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (R, T, H)
    else:  # no separate backbone: the whole model, every position
        hidden = None
    targets = labels[:, 1:]  # position t predicts token t+1
    selected = targets != IGNORE_INDEX  # (R, S-1)
    if hidden is not None:
        logits = lm.get_output_embeddings()(hidden[:, :-1][selected]).float()  # (N, V)
    else:
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][selected].float()
    logprobs = F.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, targets[selected][:, None]).squeeze(-1)  # (N,)
    hits = logprobs.argmax(-1) == targets[selected]
    owner = torch.arange(len(rows), device=device)[:, None].expand_as(selected)[selected]  # (N,) row of each
    sums = torch.zeros(len(rows), device=device).index_add_(0, owner, chosen)
    misses = torch.zeros(len(rows), device=device).index_add_(0, owner, (~hits).float())
    for row, index in enumerate(rows):
        _, n_cont, truncated = encoded[index]
        results[index] = Continuation(float(sums[row]), bool(misses[row] == 0), n_cont, truncated)


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
