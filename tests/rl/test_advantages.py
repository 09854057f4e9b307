"""Advantages against hand computations: GRPO's group-relative scores, GAE, whitening, the
running reward statistics, and the scores and per-token advantages of a step's rows."""

from __future__ import annotations

import math

import pytest
import torch

from honing.config import RLConfig
from honing.rl.advantages import (
    RunningMoments,
    add_advantages,
    gae,
    group_advantages,
    masked_whiten,
    shape_scores,
)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, 4, "none")
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as torch and the GRPO paper's code
    adv = group_advantages(rewards, 4, "group", eps=0.0)
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / std)
    assert torch.equal(adv[4:], torch.zeros(4))  # a group that all scored the same teaches nothing
    adv = group_advantages(rewards, 4, "batch", eps=0.0)
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / rewards.std())
    with pytest.raises(ValueError):
        group_advantages(rewards, 3)


def test_gae_by_hand():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.0, 0.5, -0.1, 1.0, 0.0]])
    values = torch.tensor([[9.0, 9.0, 0.2, 0.4, 0.3, 9.0]])  # 9s are outside the completion and must not leak in
    mask = torch.tensor([[0, 0, 1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    d4 = 1.0 + gamma * 0.0 - 0.3
    d3 = -0.1 + gamma * 0.3 - 0.4
    d2 = 0.5 + gamma * 0.4 - 0.2
    a4 = d4
    a3 = d3 + gamma * lam * a4
    a2 = d2 + gamma * lam * a3
    assert torch.allclose(adv, torch.tensor([[0.0, 0.0, a2, a3, a4, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.0, 0.0, a2 + 0.2, a3 + 0.4, a4 + 0.3, 0.0]]), atol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.1, 0.2, 1.0]])
    values = torch.tensor([[0.0, 0.5, 0.1, 0.3]])
    mask = torch.tensor([[0, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(ret[0, 1:], torch.tensor([1.3, 1.2, 1.0]))
    assert torch.allclose(adv[0, 1:], torch.tensor([1.3 - 0.5, 1.2 - 0.1, 1.0 - 0.3]))


def test_masked_whiten():
    values = torch.tensor([[5.0, 1.0, 2.0, 3.0], [7.0, 4.0, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])
    out = masked_whiten(values, mask)
    picked = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(out[mask.bool()], (picked - picked.mean()) / picked.std(), atol=1e-6)
    assert (out[~mask.bool()] == 0).all()


def test_running_moments_equal_the_pooled_statistics():
    moments = RunningMoments()
    chunks = [torch.randn(5) * 3 + 1, torch.randn(17), torch.randn(1) + 4]
    for chunk in chunks:
        moments.update(chunk)
    pooled = torch.cat(chunks).double()
    assert math.isclose(moments.mean, float(pooled.mean()), rel_tol=1e-9)
    assert math.isclose(moments.std, float(pooled.std()), rel_tol=1e-9)


def _cfg(**rl) -> RLConfig:
    return RLConfig.model_validate({"data": {"prompts": "x"}, "rewards": [{"kind": "numeric"}],
                                    "rollout": {"group_size": 1}, "rl": {"algo": "ppo", **rl}})


def test_shape_scores_penalise_normalise_and_clip_in_that_order():
    import statistics

    cfg = _cfg(missing_eos_penalty=0.5, normalize_rewards=True, reward_clip=1.0)
    moments = RunningMoments()
    got = shape_scores([1.0, 2.0, 3.0, 4.0], [False, True, False, False], cfg, moments)
    penalised = [1.0, 1.5, 3.0, 4.0]
    mean, std = statistics.fmean(penalised), statistics.stdev(penalised)
    expected = [max(-1.0, min(1.0, (s - mean) / (std + 1e-8))) for s in penalised]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert moments.count == 4 and moments.mean == pytest.approx(mean)
    assert shape_scores([1.0, 2.0], [True, False], _cfg(), RunningMoments()).tolist() == [1.0, 2.0]  # all off


def test_ppo_advantages_are_the_score_to_go_minus_the_value():
    """γ = λ = 1, no KL, no whitening: every completion token's return is the score, its advantage
    the score minus the value there; prompt positions get 0."""
    cfg = _cfg(gamma=1.0, lam=1.0, whiten_advantages=False, kl_beta=0.0)
    rows = [{"input_ids": torch.zeros(5, dtype=torch.long), "response_mask": torch.tensor([0, 0, 1, 1, 1]),
             "old_logps": torch.zeros(5), "old_values": torch.tensor([0.0, 0.0, 0.3, 0.2, 0.5])},
            {"input_ids": torch.zeros(3, dtype=torch.long), "response_mask": torch.tensor([0, 1, 1]),
             "old_logps": torch.zeros(3), "old_values": torch.tensor([0.0, 0.1, -0.4])}]
    stats = add_advantages(rows, torch.tensor([1.0, -1.0]), cfg)
    assert torch.allclose(rows[0]["returns"], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(rows[0]["advantages"], torch.tensor([0.0, 0.0, 0.7, 0.8, 0.5]))
    assert torch.allclose(rows[1]["returns"], torch.tensor([0.0, -1.0, -1.0]))
    assert torch.allclose(rows[1]["advantages"], torch.tensor([0.0, -1.1, -0.6]))
    values, returns = torch.tensor([0.3, 0.2, 0.5, 0.1, -0.4]), torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0])
    assert stats["value_explained_variance"] == pytest.approx(1 - float((returns - values).var() / returns.var()))
