"""Per-token estimators of KL(policy ‖ reference) from the log-probs of the *sampled* tokens.

The tokens were sampled from the policy p, so for each one we know log p(x) and the
reference's log q(x), not the whole distributions. With log r = log q(x) − log p(x)
(J. Schulman, "Approximating KL divergence", 2020):

  k1 = −log r = log p − log q          unbiased; one sample can be negative; high variance
  k2 = ½ (log r)²                      always ≥ 0; biased, but the bias is small when p ≈ q
  k3 = (r − 1) − log r                 unbiased (E_p[r] = 1) and always ≥ 0 (log r ≤ r − 1); low variance

Each function takes (logp, ref_logp, mask), all (B, T), and returns (B, T) with zeros where
the mask is 0 (padding and prompt tokens), whatever values the inputs hold there.

Where the penalty goes (`placement`):

  "reward"  PPO-style (InstructGPT, TRL's PPO): β·KL is subtracted from each token's reward
            before advantages are computed; the penalty is a constant to the policy loss
            (detached), and the pressure to stay close comes through the returns. k1 is the
            usual estimator here, since the sum over a sequence is what matters and k1's sum is
            the sequence's log-ratio.
  "loss"    GRPO-style (DeepSeekMath): β times the mean per-token KL is added to the loss and
            differentiated through log p; k3 is the usual estimator here, since it is ≥ 0 and
            its gradient (1 − r) vanishes where policy and reference agree.
"""

from __future__ import annotations

from typing import Literal

import torch

Estimator = Literal["k1", "k2", "k3"]
Placement = Literal["reward", "loss"]


def _log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log r = ref_logp − logp in float32, zero where masked (so garbage there cannot make NaN)."""
    mask = mask.bool()
    log_r = ref_logp.float() - logp.float()  # (B, T)
    return torch.where(mask, log_r, torch.zeros_like(log_r)), mask


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log p − log q: unbiased, can be negative per token."""
    log_r, _ = _log_ratio(logp, ref_logp, mask)
    return -log_r


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) ½ (log p − log q)²: non-negative, biased (small bias when p ≈ q)."""
    log_r, _ = _log_ratio(logp, ref_logp, mask)
    return 0.5 * log_r.square()


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) (r − 1) − log r with r = q/p: unbiased and non-negative. Zero where masked."""
    log_r, mask = _log_ratio(logp, ref_logp, mask)
    # expm1 keeps precision when r ≈ 1; clamp guards exp overflow where q ≫ p
    k3 = torch.expm1(log_r.clamp(max=20.0)) - log_r
    return torch.where(mask, k3, torch.zeros_like(k3))


ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: Estimator = "k3"
) -> torch.Tensor:
    """(B, T) per-token KL estimate with the named estimator."""
    try:
        fn = ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}") from None
    return fn(logp, ref_logp, mask)


def kl_penalty(
    logp: torch.Tensor,  # (B, T) policy log-probs of the sampled tokens
    ref_logp: torch.Tensor,  # (B, T) reference log-probs of the same tokens
    mask: torch.Tensor,  # (B, T) 1 on response tokens
    *,
    beta: float,
    estimator: Estimator = "k3",
    placement: Placement = "loss",
) -> torch.Tensor:
    """(B, T) β·KL per token, zero where masked; how to use it depends on `placement`:

    "reward": detached; subtract it from the per-token rewards (rewards − penalty) before GAE
              or returns are computed.
    "loss":   keeps its gradient through `logp`; add `masked_mean(penalty, mask)` (or the
              objective's own length normalisation) to the policy loss.
    """
    if placement not in ("reward", "loss"):
        raise ValueError(f"unknown KL placement {placement!r}; choose 'reward' or 'loss'")
    penalty = beta * kl_estimate(logp, ref_logp, mask, estimator)
    return penalty.detach() if placement == "reward" else penalty


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is 1 (0 when there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)
