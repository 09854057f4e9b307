"""Policy-gradient objectives for online RL: GRPO and PPO over sampled completions.

A rollout row is a prompt followed by one sampled completion, right-padded. Per-token tensors
are (B, T) and indexed by *token position*: entry t concerns token t (predicted from the prefix
before it), and only completion tokens (`response_mask`) count. Prompt and padding positions
hold zeros.

    log-probs:   the sampler's own distribution — logits / temperature, then top-k and top-p
                 masking, in that order (as transformers' warpers) — so the ratio π/π_old and the
                 KL compare the distribution the tokens were actually drawn from
    advantages:  precomputed per token in the batch (honing.rl.advantages: GRPO's group-relative
                 scores, PPO's GAE over a value head on the policy)
    loss/token:  max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε_high)) [+ β·KL] [+ c_v·value loss] [− c_e·entropy]

The loss of a batch is summed in the objective's units (completions or tokens, by the length
normalisation) and the engine divides by the units of the whole optimiser step, as for SFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from honing.train.objectives.causal_lm import _LOGIT_TRANSFORMS, causal_lm_of
from honing.train.objectives.kl import kl_estimate
from honing.models.reward import position_ids_from_mask

LengthNorm = Literal["sequence", "token", "constant"]
MASKED_LOGIT = -1e9  # finite, so a token outside top-k/top-p has p = 0 without NaN in entropy or gradients


@dataclass(frozen=True)
class SamplingTransform:
    """The sampler's logit transformation: temperature, then top-k, then top-p."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def transform_logits(logits: torch.Tensor, transform: SamplingTransform) -> torch.Tensor:
    """(N, V) float32 logits of the distribution the sampler draws from; excluded tokens get MASKED_LOGIT."""
    logits = logits.float() / transform.temperature
    keep = torch.ones_like(logits, dtype=torch.bool)
    if transform.top_k and transform.top_k < logits.shape[-1]:
        kth = torch.topk(logits, transform.top_k, dim=-1).values[..., -1:]  # (N, 1)
        keep &= logits >= kth  # ties with the k-th are kept, as transformers does
    if transform.top_p < 1.0:
        masked = logits.masked_fill(~keep, float("-inf"))
        ordered, order = torch.sort(masked, dim=-1, descending=False)  # ascending, as transformers
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1 - transform.top_p
        drop_sorted[..., -1] = False  # the most likely token always stays
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        keep &= ~drop
    return torch.where(keep, logits, torch.full_like(logits, MASKED_LOGIT))


@dataclass
class TokenOutputs:
    logps: torch.Tensor  # (B, T) log π(token t | prefix), 0 off the completion
    entropy: torch.Tensor  # (B, T) entropy of the sampling distribution at t, 0 off the completion
    values: torch.Tensor | None  # (B, T) value of the state before token t, 0 off the completion


def token_outputs(
    model: nn.Module,
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
    response_mask: torch.Tensor,  # (B, T) 1 on completion tokens
    transform: SamplingTransform,
    value_head: nn.Module | None = None,
    *,
    entropy_grad: bool = False,
    share_prefix: bool = False,
) -> TokenOutputs:
    """Log-probs (and entropy, values) of the completion tokens. The head runs only at the
    positions that predict a completion token, so memory is (completion tokens × vocab).

    share_prefix: rows with the same prompt (a GRPO group's completions) compute it once, forward and
    backward (honing.train.shared_prefix), when it is at least MIN_SHARED_TOKENS long; the numbers are
    the per-row computation's up to float rounding."""
    lm = causal_lm_of(model)
    select = response_mask.bool().clone()
    select[:, 0] = False  # the first token has no prefix to be predicted from
    predict_at = select[:, 1:]  # (B, T-1): position t-1 predicts token t
    position_ids = position_ids_from_mask(attention_mask)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    transforms = any(getattr(lm.config, name, None) for name in _LOGIT_TRANSFORMS)
    plan = _group_plan(input_ids, attention_mask, select) if share_prefix and not transforms else None
    if plan is not None:
        from honing.data.types import IGNORE_INDEX
        from honing.train.shared_prefix import backbone_with_shared_prefix

        labels = input_ids.masked_fill(~select, IGNORE_INDEX)
        suffix, suffix_labels = backbone_with_shared_prefix(getattr(lm, lm.base_model_prefix), plan, input_ids,
                                                            labels, attention_mask, position_ids)
        hidden = suffix[:, :-1][suffix_labels[:, 1:] != IGNORE_INDEX]  # (N, H), the same positions in order
        logits = lm.get_output_embeddings()(hidden)  # (N, V)
    elif transforms:
        # the model applies its own logit transform (soft-capping, scaling): take its logits whole
        out = model(**inputs, output_hidden_states=value_head is not None)
        logits = out.logits[:, :-1][predict_at]  # (N, V)
        hidden = out.hidden_states[-1][:, :-1][predict_at] if value_head is not None else None  # (N, H)
    else:
        backbone = getattr(lm, lm.base_model_prefix)
        hidden = backbone(**inputs).last_hidden_state[:, :-1][predict_at]  # (N, H)
        logits = lm.get_output_embeddings()(hidden)  # (N, V)
    logprobs = F.log_softmax(transform_logits(logits, transform), dim=-1)  # (N, V)
    tokens = input_ids[:, 1:][predict_at]  # (N,)
    picked = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (N,)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logprobs.exp() * logprobs).sum(dim=-1)  # (N,)
    values = None
    if value_head is not None:
        values = _scatter(value_head(hidden.to(_dtype_of(value_head))).squeeze(-1).float(), select)
    return TokenOutputs(_scatter(picked, select), _scatter(entropy, select), values)


def _group_plan(input_ids: torch.Tensor, attention_mask: torch.Tensor, select: torch.Tensor) -> Any:
    """A PrefixPlan grouping the rows that share their prompt (the tokens before their first completion
    token), or None when no group shares enough of it."""
    from honing.train.shared_prefix import plan_prefix

    starts = select.float().argmax(dim=1).tolist()  # each row's first predicted (completion) position
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, start in enumerate(starts):
        groups.setdefault(tuple(input_ids[row, :start].tolist()), []).append(row)
    if all(len(rows) == 1 for rows in groups.values()):
        return None
    from honing.data.types import IGNORE_INDEX

    labels = torch.where(select, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return plan_prefix(input_ids, labels, attention_mask, [list(groups.values())])


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _scatter(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """(N,) values at the True positions of `select` (B, T) → (B, T) with zeros elsewhere."""
    out = torch.zeros(select.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(select, values)


# --------------------------------------------------------------------------- losses


def clipped_policy_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token max(−A·ρ, −A·clip(ρ, 1−clip_low, 1+clip_high)) and whether clipping decided it.

    At ρ inside the interval both terms agree; outside it, the clipped term wins exactly when
    moving further would help (A > 0 with ρ > 1 + ε, or A < 0 with ρ < 1 − ε), so the
    gradient is zero there."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float | None) -> torch.Tensor:
    """Per-token ½·max((V − R)², (V_clipped − R)²), V_clipped = V_old + clip(V − V_old, ±clip)."""
    loss = (values - returns).square()
    if clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        loss = torch.maximum(loss, (clipped - returns).square())
    return 0.5 * loss


# --------------------------------------------------------------------------- the objective


class PolicyObjective(nn.Module):
    """forward(rollout batch) → (summed loss, units, summed metrics) for the shared engine.

    Holds the policy and (PPO) a value head reading the policy's last hidden state. The
    reference log-probs come precomputed in the batch (from the adapter switched off, or a
    frozen copy), so no reference model lives in this module.
    """

    input_keys = ("input_ids", "attention_mask", "response_mask", "advantages", "old_logps", "ref_logps",
                  "returns", "old_values")

    def __init__(
        self,
        model: nn.Module,
        transform: SamplingTransform,
        *,
        value_head: nn.Module | None = None,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        kl_beta: float = 0.0,
        kl_estimator: str = "k3",
        kl_in_loss: bool = True,
        length_norm: LengthNorm = "sequence",
        max_new_tokens: int = 1,
        vf_coef: float = 0.1,
        value_clip: float | None = 0.2,
        entropy_coef: float = 0.0,
    ):
        super().__init__()
        if length_norm not in ("sequence", "token", "constant"):
            raise ValueError(f"length_norm must be sequence, token or constant, not {length_norm!r}")
        self.model = model
        self.value_head = value_head
        self.transform = transform
        self.clip_low, self.clip_high = clip_eps, clip_eps_high if clip_eps_high is not None else clip_eps
        self.kl_beta, self.kl_estimator, self.kl_in_loss = kl_beta, kl_estimator, kl_in_loss
        self.length_norm, self.max_new_tokens = length_norm, max_new_tokens
        self.vf_coef, self.value_clip, self.entropy_coef = vf_coef, value_clip, entropy_coef
        self.shared_prefix = False  # set by the RL stage (train.shared_prefix): a group's prompt computed once

    def prefix_plan(self, batch: dict[str, torch.Tensor]) -> Any:
        """Which rows share their prompt in this batch (for the run record's prefix counts)."""
        select = batch["response_mask"].bool().clone()
        select[:, 0] = False
        return _group_plan(batch["input_ids"], batch["attention_mask"], select)

    @property
    def unit(self) -> str:
        """The name the engine logs this objective's units under."""
        return "completion_tokens" if self.length_norm == "token" else "completions"

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """Units of the batch: completion tokens (token normalisation) or completions."""
        if self.length_norm == "token":
            return int(batch["response_mask"].sum())
        return int((batch["response_mask"].sum(dim=1) > 0).sum())

    def reduce(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sum of `per_token` (B, T) in this objective's units."""
        per_token = per_token * mask
        if self.length_norm == "token":
            return per_token.sum()
        if self.length_norm == "constant":
            return per_token.sum() / self.max_new_tokens
        return (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()

    def metric(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A per-token quantity summed in units so that dividing by the units gives its mean
        (per token, or per completion's token mean)."""
        per_token = per_token.detach().float() * mask
        if self.length_norm == "token":
            return per_token.sum()
        return (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T)
        response_mask: torch.Tensor,  # (B, T)
        advantages: torch.Tensor,  # (B, T)
        old_logps: torch.Tensor,  # (B, T)
        ref_logps: torch.Tensor | None = None,  # (B, T)
        returns: torch.Tensor | None = None,  # (B, T) PPO
        old_values: torch.Tensor | None = None,  # (B, T) PPO
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        mask = response_mask.float()
        mask[:, 0] = 0.0  # never a predicted token (see token_outputs)
        out = token_outputs(self.model, input_ids, attention_mask, mask, self.transform, self.value_head,
                            entropy_grad=self.entropy_coef > 0, share_prefix=self.shared_prefix)
        policy_loss, clipped = clipped_policy_loss(out.logps, old_logps, advantages, self.clip_low, self.clip_high)
        per_token = policy_loss
        metrics = {"policy_loss": self.metric(policy_loss, mask), "clip_fraction": self.metric(clipped.float(), mask),
                   "entropy": self.metric(out.entropy, mask)}
        if ref_logps is not None:
            kl = kl_estimate(out.logps, ref_logps, mask, self.kl_estimator)
            metrics["kl"] = self.metric(kl, mask)
            if self.kl_in_loss and self.kl_beta:
                per_token = per_token + self.kl_beta * kl
        if self.value_head is not None and returns is not None:
            value_loss = clipped_value_loss(out.values, old_values, returns, self.value_clip)
            per_token = per_token + self.vf_coef * value_loss
            metrics["value_loss"] = self.metric(value_loss, mask)
        if self.entropy_coef:
            per_token = per_token - self.entropy_coef * out.entropy
        loss = self.reduce(per_token, mask)
        units = torch.tensor(self.count({"response_mask": mask}), device=loss.device)
        return loss, units, metrics
