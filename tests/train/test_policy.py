"""The RL objective against hand computations and against transformers' own sampler."""

from __future__ import annotations

import math

import pytest
import torch

from honing.train.objectives.policy import (
    PolicyObjective,
    SamplingTransform,
    clipped_policy_loss,
    clipped_value_loss,
    token_outputs,
    transform_logits,
)
from tests.train.helpers import tiny_llama


# --------------------------------------------------------------------------- sampling transform


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (0.9, 0, 0.8),
                                                     (0.8, 10, 0.9)])
def test_transform_matches_transformers_warpers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        warpers.append(TopPLogitsWarper(top_p))
    theirs = warpers(torch.zeros(6, 1, dtype=torch.long), logits.clone()).log_softmax(-1)
    ours = transform_logits(logits, SamplingTransform(temperature, top_k, top_p)).log_softmax(-1)
    kept = torch.isfinite(theirs)
    assert torch.allclose(ours[kept], theirs[kept], atol=1e-5)
    assert (ours[~kept] < -1e8).all()  # excluded tokens have probability 0, but stay finite
    if top_k or top_p < 1:
        assert (~kept).any()


def test_logps_equal_the_samplers_scores():
    """Generate with sampling, then recompute: each sampled token's log-prob equals the log-softmax
    of the processed scores transformers drew it from."""
    model = tiny_llama(vocab=97, seed=1).eval()
    transform = SamplingTransform(temperature=0.8, top_k=20, top_p=0.9)
    prompt = torch.tensor([[1, 5, 9, 13, 17]])
    torch.manual_seed(3)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=8,
                         temperature=0.8, top_k=20, top_p=0.9, output_scores=True, return_dict_in_generate=True,
                         eos_token_id=None, pad_token_id=0)
    sequence = out.sequences  # (1, 5 + 8)
    sampled = sequence[0, 5:]
    expected = torch.stack([s[0].log_softmax(-1)[t] for s, t in zip(out.scores, sampled)])
    response = torch.zeros_like(sequence)
    response[:, 5:] = 1
    with torch.no_grad():
        got = token_outputs(model, sequence, torch.ones_like(sequence), response, transform).logps[0, 5:]
    assert torch.allclose(got, expected, atol=1e-4)


def test_logps_match_a_plain_forward_and_ignore_padding():
    model = tiny_llama(vocab=97, seed=2).eval()
    ids = torch.tensor([[1, 4, 8, 15, 16, 23, 42, 0, 0], [1, 7, 7, 9, 30, 31, 32, 33, 34]])
    attention = torch.tensor([[1] * 7 + [0, 0], [1] * 9])
    response = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        got = token_outputs(model, ids, attention, response, SamplingTransform()).logps
        for row in range(2):
            n = int(attention[row].sum())
            logprobs = model(ids[row:row + 1, :n]).logits[0].log_softmax(-1)  # (n, V)
            for t in range(n):
                want = float(logprobs[t - 1, ids[row, t]]) if response[row, t] else 0.0
                assert math.isclose(float(got[row, t]), want, abs_tol=1e-5)
    assert (got[attention == 0] == 0).all()


# --------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("ratio,advantage,clipped", [
    (1.1, 1.0, False), (1.1, -1.0, False),   # inside [0.8, 1.2]: the plain ratio
    (1.2, 1.0, False),                       # at the boundary: both terms agree
    (1.5, 1.0, True), (1.5, -1.0, False),    # too far up: clipped only when that helps
    (0.5, -1.0, True), (0.5, 1.0, False),    # too far down: likewise
])
def test_clipping_at_the_boundaries(ratio, advantage, clipped):
    old = torch.tensor([0.0])
    logp = torch.tensor([math.log(ratio)], requires_grad=True)
    adv = torch.tensor([advantage])
    loss, was_clipped = clipped_policy_loss(logp, old, adv, 0.2, 0.2)
    expected = max(-advantage * ratio, -advantage * min(max(ratio, 0.8), 1.2))
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    assert bool(was_clipped) == clipped
    loss.sum().backward()
    if clipped:
        assert float(logp.grad) == 0.0  # no push beyond the trust region
    else:
        assert math.isclose(float(logp.grad), -advantage * ratio, rel_tol=1e-5)


def test_clip_higher_is_asymmetric():
    old = torch.zeros(2)
    logp = torch.log(torch.tensor([1.25, 0.75]))
    adv = torch.tensor([1.0, -1.0])
    _, clipped = clipped_policy_loss(logp, old, adv, 0.2, 0.28)
    assert clipped.tolist() == [False, True]  # 1.25 < 1 + 0.28, but 0.75 < 1 − 0.2


def test_value_loss_clipping_by_hand():
    values, old, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), torch.tensor([2.0, 0.5])
    got = clipped_value_loss(values, old, returns, clip=0.2)
    # row 0: unclipped (1 − 2)² = 1; clipped value 0.7 → (0.7 − 2)² = 1.69; the larger one counts
    # row 1: unclipped (0 − 0.5)² = 0.25; clipped 0.3 → 0.04
    assert torch.allclose(got, torch.tensor([0.5 * 1.69, 0.5 * 0.25]))
    assert torch.allclose(clipped_value_loss(values, old, returns, clip=None), torch.tensor([0.5, 0.125]))


# --------------------------------------------------------------------------- the objective


def _rollout_batch(model, advantages_per_row):
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 0], [1, 5, 3, 11, 12, 13, 14]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1] * 7])
    response = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        old = token_outputs(model, ids, attention, response, SamplingTransform()).logps
    adv = response.float() * torch.tensor(advantages_per_row).unsqueeze(1)
    return dict(input_ids=ids, attention_mask=attention, response_mask=response, advantages=adv, old_logps=old)


@pytest.mark.parametrize("norm,units,expected", [
    ("sequence", 2, -(1.0 + -0.5)),          # mean per completion, summed: −A at ratio 1
    ("token", 7, -(3 * 1.0 + 4 * -0.5)),     # summed over tokens
    ("constant", 2, -(3 * 1.0 + 4 * -0.5) / 10),
])
def test_loss_at_ratio_one_is_minus_the_advantage(norm, units, expected):
    model = tiny_llama(seed=4).eval()
    batch = _rollout_batch(model, [1.0, -0.5])
    objective = PolicyObjective(model, SamplingTransform(), length_norm=norm, max_new_tokens=10)
    loss, n, metrics = objective(**batch)
    assert int(n) == units == objective.count(batch)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    assert float(metrics["clip_fraction"]) == 0.0


def test_kl_in_the_loss_is_zero_at_the_reference_and_pulls_back_after_a_change():
    model = tiny_llama(seed=5).eval()
    batch = _rollout_batch(model, [0.0, 0.0])
    objective = PolicyObjective(model, SamplingTransform(), kl_beta=0.5, kl_estimator="k3")
    loss, _, metrics = objective(**batch, ref_logps=batch["old_logps"])
    assert abs(float(loss.detach())) < 1e-6 and abs(float(metrics["kl"])) < 1e-6
    with torch.no_grad():
        model.lm_head.weight.add_(0.3 * torch.randn_like(model.lm_head.weight))
    loss, _, metrics = objective(**batch, ref_logps=batch["old_logps"])
    assert float(metrics["kl"]) > 0 and float(loss.detach()) > 0  # advantages are 0, so the loss is β·KL alone


def test_value_head_trains_toward_the_returns():
    model = tiny_llama(seed=6).eval()
    head = torch.nn.Linear(32, 1)
    batch = _rollout_batch(model, [0.0, 0.0])
    batch["returns"] = batch["response_mask"].float() * 2.0
    batch["old_values"] = torch.zeros_like(batch["returns"])
    objective = PolicyObjective(model, SamplingTransform(), value_head=head, value_clip=None, vf_coef=1.0,
                                length_norm="token")
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        loss, n, metrics = objective(**batch)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(metrics["value_loss"]) / int(n))
    assert losses[-1] < 0.5 * losses[0]
