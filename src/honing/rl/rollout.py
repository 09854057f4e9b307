"""Rollouts: sample completions of the step's prompts, turn them into training rows, and add the
log-probs (and values) they were sampled with.

    prompts ─▶ group_size completions each (generate_completions, the one door to generation)
            ─▶ rows: prompt + completion ids, attention and response masks  (T,) each
            ─▶ old_logps, ref_logps (the adapter switched off, or a frozen copy), old_values (PPO)
               in one no-grad pass per micro-batch

Dropout stays off for the whole run, so log-probs of the policy before its first update equal the
rollout's old log-probs and the first ratio is exactly 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from honing.config import RolloutConfig, SamplingConfig
from honing.rl.prompts import PromptItem
from honing.train.objectives.policy import PolicyObjective, token_outputs

Row = dict[str, torch.Tensor]


def generate_completions(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], sampling: SamplingConfig, *,
                         samples: int = 1, batch_size: int, seed: int | None = None) -> list[list[list[int]]]:
    """`samples` completions (new token ids, cut after the stop token) of each prompt, in prompt order.
    Every rollout and validation answer is generated here, through the policy's ChatModel (its weights
    shared, so each update shows in the next rollout)."""
    from honing.models.chat import ChatModel

    policy = ChatModel.wrap(model, tokenizer, sampling, role="policy", batch_size=batch_size)
    return [[completion.token_ids for completion in group]
            for group in policy.sample(prompt_ids, sampling, samples=samples, seed=seed)]


def rollout_sampling(rollout: RolloutConfig) -> SamplingConfig:
    """The sampler of the rollouts; the loss's log-probs apply the same transform (SamplingTransform)."""
    return SamplingConfig(max_new_tokens=rollout.max_new_tokens, temperature=rollout.temperature,
                          top_p=rollout.top_p, top_k=rollout.top_k)


def validation_sampling(rollout: RolloutConfig) -> SamplingConfig:
    """Greedy answers for validation."""
    return SamplingConfig(max_new_tokens=rollout.eval_max_new_tokens or rollout.max_new_tokens, temperature=0.0)


@dataclass
class Completions:
    """One step's completions, flat in prompt order: group g is entries [g·G, (g+1)·G)."""

    items: list[PromptItem]  # the prompt of each completion
    tokens: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # reached max_new_tokens without a stop token
    seconds: float

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.tokens]


def sample_completions(model: Any, tokenizer: Any, items: list[PromptItem], sampling: SamplingConfig,
                       stops: set[int], *, group_size: int, batch_size: int, seed: int | None) -> Completions:
    """`group_size` completions of every prompt, decoded, with how each one ended."""
    started = time.perf_counter()
    groups = generate_completions(model, tokenizer, [it.ids for it in items], sampling, samples=group_size,
                                  batch_size=batch_size, seed=seed)
    seconds = time.perf_counter() - started
    flat = [(item, tokens) for item, group in zip(items, groups) for tokens in group]
    return Completions(
        items=[item for item, _ in flat],
        tokens=[tokens for _, tokens in flat],
        texts=[tokenizer.decode(tokens, skip_special_tokens=True).strip() for _, tokens in flat],
        truncated=[not tokens or tokens[-1] not in stops for _, tokens in flat],
        seconds=seconds,
    )


def rollout_rows(completions: Completions) -> list[Row]:
    """A row per completion: its prompt and completion ids (T,), the attention mask and the response mask."""
    rows = []
    for item, tokens in zip(completions.items, completions.tokens):
        ids = torch.tensor(item.ids + tokens, dtype=torch.long)
        response = torch.zeros(len(ids), dtype=torch.long)
        response[len(item.ids):] = 1
        rows.append({"input_ids": ids, "attention_mask": torch.ones(len(ids), dtype=torch.long), "response_mask": response})
    return rows


def collate_rollout(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) tensors of every key the rows carry (input_ids padded with pad_id, the rest with 0)."""
    T = max(len(value) for r in rows for value in r.values())
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else 0
        out = torch.full((len(rows), T), fill, dtype=rows[0][key].dtype)
        for i, r in enumerate(rows):
            out[i, : len(r[key])] = r[key]
        batch[key] = out
    return batch


@torch.no_grad()
def old_outputs(objective: PolicyObjective, rows: list[Row], pad_id: int, micro_batch_size: int,
                reference_model: nn.Module | None, with_reference: bool, precision: str,
                device: torch.device) -> None:
    """Add old_logps, ref_logps (when with_reference) and old_values (PPO) to every row, in place."""
    from honing.train.engine import autocast_context

    policy = objective.model
    for start in range(0, len(rows), micro_batch_size):
        chunk = rows[start:start + micro_batch_size]
        batch = {k: v.to(device) for k, v in collate_rollout(chunk, pad_id).items()}
        args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"], objective.transform)
        with autocast_context(precision, device):
            # Computed as the update will compute them (a group's prompt once, when the objective shares it),
            # so the first ratio stays 1.
            share = objective.shared_prefix
            current = token_outputs(policy, *args, value_head=objective.value_head, share_prefix=share)  # (B, T)
            reference = None
            if with_reference:
                if reference_model is not None:
                    reference = token_outputs(reference_model, *args, share_prefix=share)
                else:
                    with policy.disable_adapter():
                        reference = token_outputs(policy, *args, share_prefix=share)
        for i, row in enumerate(chunk):
            n = len(row["input_ids"])
            row["old_logps"] = current.logps[i, :n].float().cpu()
            if reference is not None:
                row["ref_logps"] = reference.logps[i, :n].float().cpu()
            if current.values is not None:
                row["old_values"] = current.values[i, :n].float().cpu()
