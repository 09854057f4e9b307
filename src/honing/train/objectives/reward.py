"""Reward modelling's objective: the Bradley–Terry loss over preference pairs, and its batch
format. The model it trains (backbone + scalar head) is `honing.models.reward`.

A preference batch holds 2B rows: the B chosen sequences, then the B rejected ones, in the
same pair order. The loss for a pair is −log σ(s_chosen − s_rejected − margin).

Each side of a pair is the prompt plus that answer, rendered by `honing.models.reward.render_side`
(cut after the answer's end-of-turn token), exactly as `score_responses` renders what it scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from honing.models.reward import RewardModel, pad_rows, render_side

def bradley_terry_loss(
    chosen_scores: torch.Tensor,  # (B,)
    rejected_scores: torch.Tensor,  # (B,)
    margin: torch.Tensor | float | None = None,  # (B,) or scalar: how much better chosen must be
) -> torch.Tensor:
    """Per-pair −log σ(s_chosen − s_rejected − margin); ln 2 when the scores are equal and no margin."""
    diff = chosen_scores.float() - rejected_scores.float()
    if margin is not None:
        diff = diff - torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    return -F.logsigmoid(diff)  # (B,)


def pairwise_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs whose chosen response scores strictly higher (a tie counts as wrong)."""
    return (chosen_scores > rejected_scores).float().mean()


class RewardObjective(nn.Module):
    """Bradley–Terry over a batch of 2B rows (B chosen, then the B rejected in the same order).

    forward returns (summed loss over pairs, number of pairs, metrics summed over pairs); the
    engine divides both sums by the pairs of the whole optimiser step, as it does with target
    tokens, so gradient accumulation changes nothing and the logged metrics are per-pair means.
    """

    # What the engine needs from an objective: the batch keys it takes, and its units (pairs),
    # logged as `pairs`; no labels, so no target tokens, and no perplexity (the loss is not an NLL).
    input_keys = ("input_ids", "attention_mask", "margin")
    unit = "pairs"

    def __init__(self, reward_model: RewardModel):
        super().__init__()
        self.reward_model = reward_model

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2  # chosen rows, then rejected rows

    def forward(
        self,
        input_ids: torch.Tensor,  # (2B, T)
        attention_mask: torch.Tensor,  # (2B, T)
        margin: torch.Tensor | None = None,  # (B,)
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if input_ids.shape[0] % 2:
            raise ValueError(f"a preference batch has 2B rows (chosen then rejected), got {input_ids.shape[0]}")
        scores = self.reward_model(input_ids, attention_mask)  # (2B,)
        chosen, rejected = scores.chunk(2)  # (B,), (B,)
        losses = bradley_terry_loss(chosen, rejected, margin)
        n_pairs = torch.tensor(chosen.shape[0], device=scores.device)
        with torch.no_grad():
            metrics = {
                "accuracy": (chosen > rejected).float().sum(),
                "chosen_score": chosen.sum(),
                "rejected_score": rejected.sum(),
                "margin": (chosen - rejected).sum(),
            }
        return losses.sum(), n_pairs, metrics


@dataclass
class PreferencePair:
    """One tokenized preference record: the prompt followed by each answer, ending at the
    answer's end-of-turn token (where the score is read)."""

    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    """True when either side was cut at max_length: its score is then read mid-answer."""


def tokenize_preference(tokenizer: Any, record: dict[str, Any], *, max_length: int) -> PreferencePair:
    """Tokenize a normalised preference record (`normalize(record, "preference")`): each side is
    the prompt plus that answer, rendered by `render_side`."""
    chosen, rejected = (render_side(tokenizer, record["prompt"] + record[key], max_length=max_length)
                        for key in ("chosen", "rejected"))
    return PreferencePair(chosen.input_ids, rejected.input_ids, chosen.truncated or rejected.truncated)


def pad_pairs(
    chosen: list[list[int]], rejected: list[list[int]], pad_id: int, *, side: str = "right"
) -> dict[str, torch.Tensor]:
    """A 2B-row batch (chosen rows, then rejected rows) with input_ids and attention_mask."""
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected must hold the same number of sequences")
    return pad_rows(list(chosen) + list(rejected), pad_id, side=side)


