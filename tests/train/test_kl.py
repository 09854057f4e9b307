"""KL estimators against the true KL of two explicit categorical distributions, and each against its formula."""

from __future__ import annotations

import math

import pytest
import torch

from honing.train.objectives.kl import kl_estimate, kl_k1, kl_k2, kl_k3, kl_penalty, masked_mean

N_SAMPLES = 200_000


def _sampled_log_probs(p: torch.Tensor, q: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens sampled from p, as a (1, N) row of log p(x) and log q(x), with an all-ones mask."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.multinomial(p, N_SAMPLES, replacement=True, generator=generator)  # (N,)
    logp, logq = p.log()[tokens], q.log()[tokens]
    return logp[None], logq[None], torch.ones(1, N_SAMPLES)


def _true_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p / q).log()).sum())


FAR = (torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64), torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64))
NEAR = (torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10], dtype=torch.float64), torch.tensor([0.28, 0.26, 0.21, 0.14, 0.11], dtype=torch.float64))


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("pair", [FAR, NEAR], ids=["far", "near"])
def test_unbiased_estimators_average_to_the_true_kl(estimator, pair):
    p, q = pair
    logp, logq, mask = _sampled_log_probs(p, q)
    values = kl_estimate(logp, logq, mask, estimator)
    true = _true_kl(p, q)
    stderr = float(values.double().std()) / math.sqrt(N_SAMPLES)
    assert float(values.double().mean()) == pytest.approx(true, abs=max(4 * stderr, 1e-4))


def test_k3_and_k2_are_never_negative_and_k1_can_be():
    p, q = FAR
    logp, logq, mask = _sampled_log_probs(p, q)
    assert (kl_k3(logp, logq, mask) >= 0).all()
    assert (kl_k2(logp, logq, mask) >= 0).all()
    assert (kl_k1(logp, logq, mask) < 0).any()  # tokens where q(x) > p(x)


def test_k2_is_close_to_the_true_kl_for_near_distributions_and_biased_for_far_ones():
    p, q = NEAR
    logp, logq, mask = _sampled_log_probs(p, q)
    true = _true_kl(p, q)
    assert float(kl_k2(logp, logq, mask).mean()) == pytest.approx(true, rel=0.05)
    p, q = FAR
    logp, logq, mask = _sampled_log_probs(p, q)
    true = _true_kl(p, q)
    assert abs(float(kl_k2(logp, logq, mask).mean()) - true) > 0.05 * true  # its bias shows


def test_each_estimator_matches_its_formula():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref_logp = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.ones(1, 3)
    log_r = ref_logp - logp  # [-0.5, 1.0, 0.0]
    torch.testing.assert_close(kl_k1(logp, ref_logp, mask), -log_r)
    torch.testing.assert_close(kl_k2(logp, ref_logp, mask), 0.5 * log_r**2)
    torch.testing.assert_close(kl_k3(logp, ref_logp, mask), log_r.exp() - 1 - log_r)
    assert kl_k3(logp, ref_logp, mask)[0, 2].item() == 0.0  # identical log-probs: no divergence


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_masked_positions_contribute_zero(estimator):
    logp = torch.tensor([[-1.0, -2.0, float("-inf"), 0.0]])
    ref_logp = torch.tensor([[-1.5, -1.0, -3.0, float("nan")]])
    mask = torch.tensor([[1, 1, 0, 0]])
    values = kl_estimate(logp, ref_logp, mask, estimator)
    assert torch.isfinite(values).all()
    assert values[0, 2:].tolist() == [0.0, 0.0]
    full = kl_estimate(logp[:, :2], ref_logp[:, :2], mask[:, :2], estimator)
    torch.testing.assert_close(values[:, :2], full)
    torch.testing.assert_close(masked_mean(values, mask), full.mean())


def test_penalty_placement_reward_is_detached_and_loss_keeps_its_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.7]], requires_grad=True)
    ref_logp = torch.tensor([[-1.5, -1.0, -0.7]])
    mask = torch.tensor([[1, 1, 0]])
    in_reward = kl_penalty(logp, ref_logp, mask, beta=0.1, estimator="k1", placement="reward")
    assert not in_reward.requires_grad
    torch.testing.assert_close(in_reward, 0.1 * torch.tensor([[0.5, -1.0, 0.0]]))
    in_loss = kl_penalty(logp, ref_logp, mask, beta=0.1, estimator="k3", placement="loss")
    masked_mean(in_loss, mask).backward()
    # d k3 / d logp = 1 − r, with r = exp(ref_logp − logp); mean over 2 tokens; β = 0.1
    r = (ref_logp - logp.detach()).exp()
    expected = 0.1 * (1 - r) / 2 * mask
    torch.testing.assert_close(logp.grad, expected)


def test_unknown_names_are_rejected():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(x, x, x, "k4")
    with pytest.raises(ValueError, match="placement"):
        kl_penalty(x, x, x, beta=0.1, placement="advantage")
