"""Preference objectives: log-probs over answer tokens only, the reference without a second copy,
each loss against its formula, ln 2 at step 0, and one step in the right direction."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from honing.data.formats import normalize
from honing.data.types import IGNORE_INDEX, TokenizedExample
from honing.train.objectives.preference import (
    PreferenceExample,
    PreferenceObjective,
    collate_preference,
    dpo_loss,
    ipo_loss,
    orpo_loss,
    precompute_reference,
    reference_logps,
    sequence_logps,
    simpo_loss,
    tokenize_preference,
    with_reference,
)
from tests.train.helpers import tiny_llama

VOCAB = 97


def _example(rng: random.Random, prompt_len: int, answer_len: int) -> TokenizedExample:
    prompt = [rng.randrange(3, VOCAB) for _ in range(prompt_len)]
    answer = [rng.randrange(3, VOCAB) for _ in range(answer_len)] + [2]
    return TokenizedExample(prompt + answer, [IGNORE_INDEX] * prompt_len + answer)


def pairs(n: int = 3, seed: int = 0) -> list[PreferenceExample]:
    """Pairs with different prompt and answer lengths, so rows are padded unevenly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt_len = rng.randint(2, 6)
        chosen, rejected = _example(rng, prompt_len, rng.randint(2, 8)), _example(rng, prompt_len, rng.randint(2, 8))
        rejected.input_ids[:prompt_len] = chosen.input_ids[:prompt_len]  # same prompt
        out.append(PreferenceExample(chosen, rejected))
    return out


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))


def explicit_logps(model, example: TokenizedExample) -> float:
    """One unpadded row through the plain transformers forward, token by token."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # (T, V)
    total = 0.0
    for position in range(1, len(example.input_ids)):
        if example.labels[position] != IGNORE_INDEX:
            total += float(torch.log_softmax(logits[position - 1], dim=-1)[example.labels[position]])
    return total


# --------------------------------------------------------------------------- data


def test_tokenize_preference_masks_only_the_answer(tokenizer):
    record = normalize({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5, I think"}, "preference")
    example = tokenize_preference(tokenizer, record, max_length=128)
    for side, answer in ((example.chosen, "4"), (example.rejected, "5, I think")):
        trained = [t for t, label in zip(side.input_ids, side.labels) if label != IGNORE_INDEX]
        assert tokenizer.decode(trained).strip() == answer + "<|im_end|>"
    # the same prompt tokens precede both answers
    first = next(i for i, label in enumerate(example.chosen.labels) if label != IGNORE_INDEX)
    assert example.chosen.input_ids[:first] == example.rejected.input_ids[:first]


def test_collate_puts_chosen_rows_then_rejected_rows():
    examples = pairs(3)
    batch = collate_preference(examples, pad_id=0)
    assert batch["input_ids"].shape[0] == 6
    for row, example in enumerate([e.chosen for e in examples] + [e.rejected for e in examples]):
        n = len(example.input_ids)
        assert batch["input_ids"][row, :n].tolist() == example.input_ids
        assert batch["labels"][row, :n].tolist() == example.labels
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and (batch["attention_mask"][row, n:] == 0).all()
    assert "reference_logps" not in batch
    with_ref = with_reference(examples, torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert collate_preference(with_ref, 0)["reference_logps"].tolist() == [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]


# --------------------------------------------------------------------------- log-probabilities


def test_sequence_logps_equals_an_explicit_loop_and_ignores_padding():
    model = tiny_llama(VOCAB).eval()
    examples = pairs(3)
    rows = [e.chosen for e in examples] + [e.rejected for e in examples]
    batch = collate_preference(examples, pad_id=0)
    with torch.no_grad():
        logps, n_tokens = sequence_logps(model, batch)
    assert logps.dtype == torch.float32
    expected = torch.tensor([explicit_logps(model, row) for row in rows])
    torch.testing.assert_close(logps, expected, rtol=1e-5, atol=1e-5)
    assert n_tokens.tolist() == [row.target_tokens for row in rows]
    # each pair alone (less padding) gives the same numbers
    for i, example in enumerate(examples):
        with torch.no_grad():
            alone, _ = sequence_logps(model, collate_preference([example], pad_id=0))
        torch.testing.assert_close(alone, logps[[i, i + 3]], rtol=1e-5, atol=1e-5)


def test_reference_by_disabled_adapter_equals_a_frozen_copy_without_duplicating_weights():
    base = tiny_llama(VOCAB)
    frozen_copy = copy.deepcopy(base).eval()
    policy = lora(base)
    with torch.no_grad():  # make the adapter matter, so policy != reference
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = collate_preference(pairs(3), pad_id=0)

    pointers_before = {p.data_ptr() for p in policy.parameters()}
    reference = reference_logps(policy, batch)
    with torch.no_grad():
        expected, _ = sequence_logps(frozen_copy, batch)
        adapted, _ = sequence_logps(policy, batch)
    torch.testing.assert_close(reference, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(adapted, expected)  # the adapter is back on afterwards
    assert {p.data_ptr() for p in policy.parameters()} == pointers_before
    base_params = sum(p.numel() for p in frozen_copy.parameters())
    lora_params = sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in policy.parameters()) == base_params + lora_params


def test_reference_needs_a_model_for_full_policies():
    with pytest.raises(ValueError, match="reference_model"):
        reference_logps(tiny_llama(VOCAB), collate_preference(pairs(1), 0))


def test_precomputed_reference_matches_on_the_fly():
    policy = lora(tiny_llama(VOCAB))
    examples = pairs(5)
    cache = precompute_reference(policy, examples, pad_id=0, batch_size=2)
    assert cache.shape == (5, 2)
    on_the_fly = reference_logps(policy, collate_preference(examples, 0))
    torch.testing.assert_close(cache[:, 0], on_the_fly[:5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache[:, 1], on_the_fly[5:], rtol=1e-5, atol=1e-5)
    # the objective gives the same loss from carried reference log-probs as from computing them
    objective = PreferenceObjective(policy, "sigmoid", beta=0.1)
    batch = collate_preference(with_reference(examples, cache), 0)
    computed = objective(**{k: v for k, v in batch.items() if k != "reference_logps"})
    precomputed = objective(**batch)
    torch.testing.assert_close(computed[0], precomputed[0])


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_dpo_step_zero_is_ln2(label_smoothing):
    policy = lora(tiny_llama(VOCAB))
    objective = PreferenceObjective(policy, "sigmoid", beta=0.1, label_smoothing=label_smoothing)
    loss, n_pairs, metrics = objective(**collate_preference(pairs(3), pad_id=0))
    assert int(n_pairs) == 3
    assert float(loss.detach()) / 3 == pytest.approx(math.log(2), abs=1e-7)
    assert float(metrics["accuracy"]) == 0.0
    assert float(metrics["margin"]) == 0.0
    assert float(metrics["chosen_reward"]) == 0.0 and float(metrics["rejected_reward"]) == 0.0


def test_dpo_and_ipo_against_hand_computation():
    pc, pr = torch.tensor([-10.0, -7.0]), torch.tensor([-12.0, -6.0])
    rc, rr = torch.tensor([-11.0, -7.5]), torch.tensor([-11.5, -6.5])
    beta, eps = 0.5, 0.2
    # pair 0: x = (1) - (-0.5) = 1.5 ; pair 1: x = 0.5 - 0.5 = 0
    x = [1.5, 0.0]
    losses, metrics = dpo_loss(pc, pr, rc, rr, beta)
    expected = [math.log(1 + math.exp(-beta * v)) for v in x]
    torch.testing.assert_close(losses, torch.tensor(expected))
    smoothed, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)
    expected_smoothed = [(1 - eps) * math.log(1 + math.exp(-beta * v)) + eps * math.log(1 + math.exp(beta * v)) for v in x]
    torch.testing.assert_close(smoothed, torch.tensor(expected_smoothed))
    torch.testing.assert_close(metrics["chosen_reward"], torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(metrics["rejected_reward"], torch.tensor([-0.25, 0.25]))
    torch.testing.assert_close(metrics["margin"], torch.tensor([0.75, 0.0]))
    assert metrics["accuracy"].tolist() == [1.0, 0.0]

    ipo, ipo_metrics = ipo_loss(pc, pr, rc, rr, beta)
    torch.testing.assert_close(ipo, torch.tensor([(v - 1 / (2 * beta)) ** 2 for v in x]))  # (1.5-1)², (0-1)²
    torch.testing.assert_close(ipo_metrics["margin"], metrics["margin"])


def test_ipo_mean_averages_each_log_ratio_per_token():
    pc, pr = torch.tensor([-10.0, -7.0]), torch.tensor([-12.0, -6.0])
    rc, rr = torch.tensor([-11.0, -7.5]), torch.tensor([-11.5, -6.5])
    nc, nr = torch.tensor([4.0, 2.0]), torch.tensor([5.0, 1.0])
    beta = 0.5
    # pair 0: x = 1/4 - (-0.5)/5 = 0.35 ; pair 1: x = 0.5/2 - 0.5/1 = -0.25
    losses, metrics = ipo_loss(pc, pr, rc, rr, beta, nc, nr)
    torch.testing.assert_close(losses, torch.tensor([(0.35 - 1.0) ** 2, (-0.25 - 1.0) ** 2]))
    torch.testing.assert_close(metrics["chosen_reward"], torch.tensor([0.125, 0.125]))  # β · mean log-ratio
    torch.testing.assert_close(metrics["rejected_reward"], torch.tensor([-0.05, 0.25]))
    assert metrics["accuracy"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="both"):
        ipo_loss(pc, pr, rc, rr, beta, nc, None)


@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_ipo_objective_against_a_hand_computed_reference(normalize):
    """IPO on two pairs through the objective equals the formula over log-probs computed token by
    token (policy: LoRA moved off zero; reference: the adapter switched off)."""
    policy = lora(tiny_llama(VOCAB))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(1))
    data, beta = pairs(2, seed=7), 0.5
    expected = 0.0
    for example in data:
        ratios = []
        for side in (example.chosen, example.rejected):
            with policy.disable_adapter():
                reference = explicit_logps(policy, side)
            ratio = explicit_logps(policy, side) - reference
            tokens = sum(1 for label in side.labels[1:] if label != IGNORE_INDEX)
            ratios.append(ratio / tokens if normalize == "mean" else ratio)
        expected += (ratios[0] - ratios[1] - 1 / (2 * beta)) ** 2
    objective = PreferenceObjective(policy, "ipo", beta=beta, ipo_normalize=normalize)
    with torch.no_grad():
        total, n_pairs, _ = objective(**collate_preference(data, pad_id=0))
    assert int(n_pairs) == 2
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_ipo_mean_and_sum_differ_and_mean_is_the_default():
    policy = lora(tiny_llama(VOCAB))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(1))
    batch = collate_preference(pairs(2, seed=7), pad_id=0)
    with torch.no_grad():
        default = PreferenceObjective(policy, "ipo", beta=0.5)(**batch)[0]
        mean = PreferenceObjective(policy, "ipo", beta=0.5, ipo_normalize="mean")(**batch)[0]
        summed = PreferenceObjective(policy, "ipo", beta=0.5, ipo_normalize="sum")(**batch)[0]
    assert float(default) == float(mean) and not math.isclose(float(mean), float(summed), rel_tol=1e-3)
    with pytest.raises(ValueError, match="ipo_normalize"):
        PreferenceObjective(policy, "ipo", ipo_normalize="token")


def test_simpo_and_orpo_against_hand_formulas():
    pc, pr = torch.tensor([-4.0, -9.0]), torch.tensor([-9.0, -2.0])
    nc, nr = torch.tensor([2.0, 3.0]), torch.tensor([3.0, 1.0])
    beta, gamma, lam = 2.0, 0.5, 0.25

    losses, metrics = simpo_loss(pc, pr, nc, nr, beta, gamma)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = [-math.log(sig(beta * (c / a - r / b) - gamma)) for c, r, a, b in zip(pc.tolist(), pr.tolist(), nc.tolist(), nr.tolist())]
    torch.testing.assert_close(losses, torch.tensor(expected))
    torch.testing.assert_close(metrics["chosen_reward"], torch.tensor([-4.0, -6.0]))
    assert metrics["accuracy"].tolist() == [1.0, 0.0]

    losses, metrics = orpo_loss(pc, pr, nc, nr, lam)
    expected = []
    for c, r, a, b in zip(pc.tolist(), pr.tolist(), nc.tolist(), nr.tolist()):
        p_c, p_r = math.exp(c / a), math.exp(r / b)
        log_odds = math.log(p_c / (1 - p_c)) - math.log(p_r / (1 - p_r))
        expected.append(-c / a + lam * -math.log(sig(log_odds)))
    torch.testing.assert_close(losses, torch.tensor(expected))
    assert metrics["accuracy"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("loss", ["simpo", "orpo", "ipo"])
def test_objective_runs_every_loss(loss):
    objective = PreferenceObjective(lora(tiny_llama(VOCAB)), loss, beta=0.1)
    total, n_pairs, metrics = objective(**collate_preference(pairs(2), pad_id=0))
    assert torch.isfinite(total) and int(n_pairs) == 2
    assert set(metrics) >= {"chosen_reward", "rejected_reward", "margin", "accuracy"}
    total.backward()


# --------------------------------------------------------------------------- one step


def _margin(objective, batch) -> float:
    with torch.no_grad():
        _, n, metrics = objective(**batch)
    return float(metrics["margin"]) / int(n)


def test_one_step_raises_the_margin_and_trains_only_lora():
    policy = lora(tiny_llama(VOCAB))
    objective = PreferenceObjective(policy, "sigmoid", beta=0.5)
    batch = collate_preference(pairs(2), pad_id=0)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert frozen and trainable and all("lora_" in n for n in trainable)

    before = _margin(objective, batch)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    loss, n_pairs, _ = objective(**batch)
    (loss / n_pairs).backward()
    optimizer.step()
    after = _margin(objective, batch)

    assert before == 0.0 and after > 0.0
    for name, value in frozen.items():
        assert torch.equal(dict(policy.named_parameters())[name], value), name
    assert any(not torch.equal(dict(policy.named_parameters())[n], v) for n, v in trainable.items())


def test_full_model_with_separate_reference_keeps_the_reference_frozen():
    base = tiny_llama(VOCAB)
    reference = copy.deepcopy(base)
    objective = PreferenceObjective(base, "sigmoid", beta=0.5, reference_model=reference)
    assert all(not p.requires_grad for p in reference.parameters())
    assert len(list(objective.parameters())) == len(list(base.parameters()))  # reference is not a submodule
    snapshot = {n: p.detach().clone() for n, p in reference.named_parameters()}
    batch = collate_preference(pairs(2), pad_id=0)
    loss, n_pairs, metrics = objective(**batch)
    assert float(loss.detach()) / int(n_pairs) == pytest.approx(math.log(2), abs=1e-6)
    optimizer = torch.optim.SGD(base.parameters(), lr=0.05)
    (loss / n_pairs).backward()
    optimizer.step()
    assert _margin(objective, batch) > 0.0
    for name, param in reference.named_parameters():
        assert torch.equal(param, snapshot[name])


def test_summed_pair_losses_make_accumulation_exact():
    """Dividing summed losses by the step's pair count: micro-batches 2+2 give the gradient of one batch of 4."""
    examples = pairs(4, seed=3)
    grads = []
    for split in ([examples], [examples[:2], examples[2:]]):
        policy = lora(tiny_llama(VOCAB))
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        objective = PreferenceObjective(policy, "sigmoid", beta=0.3)
        for micro in split:
            loss, _, _ = objective(**collate_preference(micro, pad_id=0))
            (loss / len(examples)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_precompute_with_a_separate_reference_model():
    policy = tiny_llama(VOCAB, seed=1)
    reference = tiny_llama(VOCAB, seed=2).eval()
    examples = pairs(3)
    cache = precompute_reference(policy, examples, pad_id=0, reference_model=reference, batch_size=2)
    expected = [explicit_logps(reference, side) for e in examples for side in (e.chosen, e.rejected)]
    torch.testing.assert_close(cache.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-5)
