"""Advantages: from sequence scores to per-token advantages (and PPO's returns).

    scores ─▶ missing-stop penalty, running normalisation, clipping (shape_scores)
    GRPO:  [− β·KL per completion, when the penalty is in the reward] ─▶ (r − group mean) / spread,
           the same for every token of a completion
    PPO:   per-token rewards (the score on the last token, −β·KL on every token when the penalty is
           in the reward) ─▶ GAE over the value head's values ─▶ advantages, returns
    then, optionally, whitened over the step
"""

from __future__ import annotations

from typing import Literal

import torch

from honing.config import RLConfig
from honing.rl.rollout import Row, collate_rollout
from honing.train.objectives.kl import kl_estimate


def group_advantages(
    rewards: torch.Tensor,  # (N,) in prompt order: group g is rows [g·G, (g+1)·G)
    group_size: int,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """(N,) GRPO advantages: each reward minus its group's mean, divided by the group's standard
    deviation (scale=group), the whole batch's (batch), or nothing (none, Dr. GRPO). A group whose
    completions all scored the same gets advantage 0: it carries no signal."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)  # (P, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        spread = grouped.std(dim=1, keepdim=True)  # (P, 1)
        centred = torch.where(spread > 0, centred / (spread + eps), torch.zeros_like(centred))
    elif scale == "batch":
        centred = centred / (rewards.float().std() + eps)
    elif scale != "none":
        raise ValueError(f"scale must be group, batch or none, not {scale!r}")
    return centred.reshape(-1)


def gae(
    rewards: torch.Tensor,  # (B, T) per-token rewards
    values: torch.Tensor,  # (B, T) value of the state before each token
    mask: torch.Tensor,  # (B, T) 1 on completion tokens (contiguous per row)
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each (B, T), by generalised advantage estimation.

    δ_t = r_t + γ·V_{t+1} − V_t with V = 0 after the last completion token;
    A_t = δ_t + γλ·A_{t+1}; returns = A + V. Zero off the completion."""
    mask = mask.bool()
    rewards, values = rewards.float(), values.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        live = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(live, delta + gamma * lam * running, torch.zeros_like(running))
        next_value = torch.where(live, values[:, t], torch.zeros_like(next_value))
        advantages[:, t] = running
    return advantages, torch.where(mask, advantages + values, torch.zeros_like(values))


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean 0 and standard deviation 1 over the masked entries; zero elsewhere."""
    mask = mask.bool()
    picked = values[mask].float()
    if picked.numel() < 2:
        return torch.where(mask, values - picked.mean() if picked.numel() else values, torch.zeros_like(values))
    whitened = (values - picked.mean()) / (picked.std() + eps)
    return torch.where(mask, whitened, torch.zeros_like(whitened))


class RunningMoments:
    """Mean and standard deviation of every score seen so far (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        values = values.double().flatten()
        n = values.numel()
        if n == 0:
            return
        mean, m2 = float(values.mean()), float(((values - values.mean()) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 1.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# --------------------------------------------------------------------------- a step's rows


def shape_scores(raw: list[float], truncated: list[bool], cfg: RLConfig, moments: RunningMoments) -> torch.Tensor:
    """(N,) scores as the objective sees them: the missing-stop penalty, running normalisation, clipping."""
    scores = torch.tensor(raw, dtype=torch.float32)
    scores -= cfg.rl.missing_eos_penalty * torch.tensor(truncated, dtype=torch.float32)
    if cfg.rl.normalize_rewards:
        moments.update(scores)
        scores = (scores - moments.mean) / (moments.std + 1e-8)
    if cfg.rl.reward_clip is not None:
        scores = scores.clamp(-cfg.rl.reward_clip, cfg.rl.reward_clip)
    return scores


def add_advantages(rows: list[Row], scores: torch.Tensor, cfg: RLConfig) -> dict[str, float]:
    """Turn sequence scores (N,) into per-token advantages (and PPO returns) on every row, in place;
    returns statistics of the step (GRPO: groups_with_signal; PPO: value_explained_variance)."""
    if cfg.rl.algo == "grpo":
        return _grpo_advantages(rows, scores, cfg)
    return _ppo_advantages(rows, scores, cfg)


def _kl_in_reward(cfg: RLConfig) -> bool:
    return cfg.rl.placement == "reward" and cfg.rl.kl_beta > 0


def _grpo_advantages(rows: list[Row], scores: torch.Tensor, cfg: RLConfig) -> dict[str, float]:
    rl = cfg.rl
    if _kl_in_reward(cfg):
        penalties = torch.stack([
            (kl_estimate(r["old_logps"], r["ref_logps"], r["response_mask"], rl.estimator)).sum() for r in rows])
        scores = scores - rl.kl_beta * penalties
    advantages = group_advantages(scores, cfg.rollout.group_size, rl.scale_rewards)  # (N,)
    grouped = scores.view(-1, cfg.rollout.group_size)  # (P, G)
    stats = {"groups_with_signal": float((grouped.std(dim=1) > 0).float().mean())}
    if rl.whiten:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    for row, advantage in zip(rows, advantages.tolist()):
        row["advantages"] = row["response_mask"].float() * advantage
    return stats


def _ppo_advantages(rows: list[Row], scores: torch.Tensor, cfg: RLConfig) -> dict[str, float]:
    rl = cfg.rl
    kl_in_reward = _kl_in_reward(cfg)
    keys = ("response_mask", "old_logps", "old_values", *(("ref_logps",) if kl_in_reward else ()))
    batch = collate_rollout([{k: r[k] for k in keys} for r in rows], 0)  # (N, T) each
    mask = batch["response_mask"].float()
    mask[:, 0] = 0.0
    token_rewards = torch.zeros_like(mask)
    if kl_in_reward:
        token_rewards -= rl.kl_beta * kl_estimate(batch["old_logps"], batch["ref_logps"], mask, rl.estimator)
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)  # (N,) each completion's last token
    token_rewards[torch.arange(len(rows)), last] += scores
    advantages, returns = gae(token_rewards, batch["old_values"], mask, rl.gamma, rl.lam)
    if rl.whiten:
        advantages = masked_whiten(advantages, mask)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        row["advantages"], row["returns"] = advantages[i, :n], returns[i, :n]
    values = batch["old_values"][mask.bool()]
    explained = 1 - float((returns[mask.bool()] - values).var() / returns[mask.bool()].var().clamp(min=1e-8))
    return {"value_explained_variance": explained}
