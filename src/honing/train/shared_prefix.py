"""Shared-prefix training: tokens that every row of a group begins with are computed once.

In SFT with a common system prompt, or the two answers of a DPO pair, the rows of a micro-batch
start with the same tokens. A causal model's keys and values at those positions do not depend on
anything after them, so they are the same in every row. Here they are computed once per group
(forward and backward), and each row's remainder, its *suffix*, attends to them through the
model's own KV cache:

    rows (R, T) ─ plan: groups and their prefix lengths P_g
       prefix:  the group's tokens [0, P_g)       (G, P)  one forward, keys/values kept per layer
       suffix:  each row's tokens  [P_g, T)       (R, S)  attends to its group's prefix + itself
                keys/values of the prefix are gathered (expanded for one group) to the R rows, so
                the backward pass sums every row's gradient into the one prefix computation

A prefix never holds a position whose hidden state predicts a target: the first target of every
row is predicted from its own suffix, and the loss is computed from the suffix exactly as from
the whole row. Dropout draws one mask for the prefix instead of one per row; without dropout the
result equals the per-row computation up to float rounding (tests/train/test_shared_prefix.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from honing.data.types import IGNORE_INDEX

MIN_SHARED_TOKENS = 16
"""A group shares its prefix only when it is at least this long (shorter ones save too little to pay
for the second forward call)."""


@dataclass(frozen=True)
class PrefixPlan:
    """Which rows share which prefix."""

    group_of_row: torch.Tensor  # (R,) index into `lengths`; -1 for a row that shares nothing
    leaders: torch.Tensor  # (G,) a row of each group: its first tokens are the group's prefix
    lengths: torch.Tensor  # (G,) prefix length of each group, each ≥ the minimum

    @property
    def starts(self) -> torch.Tensor:
        """(R,) where each row's suffix begins: its group's prefix length, 0 for a row that shares nothing."""
        return torch.where(self.group_of_row >= 0, self.lengths[self.group_of_row.clamp(min=0)], 0)

    @property
    def computed_once(self) -> int:
        """Prefix tokens run through the model once per group."""
        return int(self.lengths.sum())

    @property
    def per_row(self) -> int:
        """The same tokens as the rows would compute them without sharing."""
        return int(self.starts.sum())


def common_prefix_length(
    input_ids: torch.Tensor,  # (R, T), R ≥ 2
    labels: torch.Tensor,  # (R, T)
    attention_mask: torch.Tensor,  # (R, T)
) -> int:
    """The longest prefix the rows can share: the same real tokens in every row, at least one token
    of the common part left to each row, and no position in it whose hidden state predicts a target
    (position t predicts label t+1)."""
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)  # (T,)
    common = int(same.long().cumprod(dim=0).sum())
    targets = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)  # (T-1,): position t predicts a target
    first_predicting = int(targets.nonzero()[0]) if targets.any() else labels.shape[1]
    return max(0, min(common - 1, first_predicting))


def plan_prefix(
    input_ids: torch.Tensor,  # (R, T)
    labels: torch.Tensor,  # (R, T)
    attention_mask: torch.Tensor | None,  # (R, T); None for packed rows, which are never shared
    groupings: list[list[list[int]]],
    min_tokens: int = MIN_SHARED_TOKENS,
) -> PrefixPlan | None:
    """The candidate grouping (each a list of row groups) that saves the most prefix tokens, or None
    when no group shares at least `min_tokens`."""
    if attention_mask is None or input_ids.shape[0] < 2:
        return None
    best, best_saved = None, 0
    for groups in groupings:
        lengths = []
        for rows in groups:
            index = torch.tensor(rows, device=input_ids.device)
            length = common_prefix_length(input_ids[index], labels[index], attention_mask[index]) if len(rows) > 1 else 0
            lengths.append(length if length >= min_tokens else 0)
        saved = sum(length * (len(rows) - 1) for length, rows in zip(lengths, groups))
        if saved > best_saved:
            best, best_saved = (groups, lengths), saved
    if best is None:
        return None
    groups, lengths = best
    shared = [(rows, length) for rows, length in zip(groups, lengths) if length]
    group_of_row = torch.full((input_ids.shape[0],), -1, dtype=torch.long)
    for g, (rows, _) in enumerate(shared):
        group_of_row[rows] = g
    device = input_ids.device
    return PrefixPlan(group_of_row.to(device), torch.tensor([rows[0] for rows, _ in shared], device=device),
                      torch.tensor([length for _, length in shared], dtype=torch.long, device=device))


def whole_batch(rows: int) -> list[list[list[int]]]:
    """One candidate: every row in one group (SFT rows with a common system prompt)."""
    return [[list(range(rows))]]


def whole_batch_or_pairs(rows: int) -> list[list[list[int]]]:
    """Two candidates for a preference batch (B chosen rows, then their B rejected rows): every row in one
    group (a system prompt common to all pairs), or each pair its own group (the pair's whole prompt)."""
    pairs = rows // 2
    return [[list(range(rows))], [[i, i + pairs] for i in range(pairs)]]


def backbone_with_shared_prefix(
    backbone: nn.Module,
    plan: PrefixPlan,
    input_ids: torch.Tensor,  # (R, T)
    labels: torch.Tensor,  # (R, T)
    attention_mask: torch.Tensor,  # (R, T)
    position_ids: torch.Tensor | None,  # (R, T)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's last hidden states of every row's suffix and the labels aligned with them:
    (R, S, H) and (R, S), where suffix position s of row r is position P_g(r) + s of the row.

    A caller computes its loss from these exactly as from the whole rows' hidden states and labels."""
    from transformers import DynamicCache

    rows, width = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(width, device=input_ids.device).expand(rows, width)
    prefix_width = int(plan.lengths.max())
    cache = DynamicCache(config=backbone.config)
    backbone(input_ids=input_ids[plan.leaders, :prefix_width], position_ids=position_ids[plan.leaders, :prefix_width],
             cache=cache, use_cache=True)  # (G, P): causal, so a group's tokens past its own P_g change nothing before it
    single = len(plan.leaders) == 1  # then every row reads group 0 (a row sharing nothing masks it all out)
    group = plan.group_of_row.clamp(min=0)  # (R,)
    for layer in cache.layers:  # (G, heads, P, head dim) → (R, heads, P, head dim): views for one group
        layer.keys = layer.keys.expand(rows, -1, -1, -1) if single else layer.keys.index_select(0, group)
        layer.values = layer.values.expand(rows, -1, -1, -1) if single else layer.values.index_select(0, group)

    starts = plan.starts  # (R,)
    suffix_width = width - int(starts.min())
    at = starts.unsqueeze(1) + torch.arange(suffix_width, device=input_ids.device)  # (R, S) positions in the row
    inside = at < width
    at = at.clamp(max=width - 1)
    suffix_mask = attention_mask.gather(1, at) * inside  # (R, S)
    suffix_labels = labels.gather(1, at).masked_fill(~inside, IGNORE_INDEX)  # (R, S)
    prefix_mask = torch.arange(prefix_width, device=input_ids.device) < starts.unsqueeze(1)  # (R, P)
    hidden = backbone(
        input_ids=input_ids.gather(1, at),
        attention_mask=torch.cat([prefix_mask.to(suffix_mask.dtype), suffix_mask], dim=1),  # (R, P + S)
        position_ids=position_ids.gather(1, at),  # continuing after each row's prefix
        cache=cache,
        use_cache=True,
    ).last_hidden_state  # (R, S, H)
    return hidden, suffix_labels


def unsupported_reason(model: nn.Module, *, activation_checkpointing: bool, compile: bool, fsdp: bool) -> str | None:
    """Why shared-prefix training cannot apply to this model and run, or None when it can."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from honing.train.objectives.causal_lm import _LOGIT_TRANSFORMS, causal_lm_of

    if activation_checkpointing:
        return "train.activation_checkpointing drops the KV cache the suffixes attend to"
    if compile:
        return "train.compile is not combined with it"
    if fsdp:
        return "not under FSDP"
    lm = causal_lm_of(model)
    config = lm.config
    if any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS):
        return f"{type(lm).__name__} transforms its logits"
    if not hasattr(lm, "base_model_prefix") or not hasattr(lm, getattr(lm, "base_model_prefix", "")):
        return f"{type(lm).__name__} has no separate backbone"
    try:
        layers = DynamicCache(config=config).layers
    except (AttributeError, TypeError, ValueError) as err:
        return f"{type(lm).__name__} has no KV cache layout to reuse ({err})"
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return f"{type(lm).__name__} has attention layers that are not plain full attention"
    return None
