"""Reward model: the score is read at the last real token; Bradley–Terry loss; save/load; a step helps."""

from __future__ import annotations

import math

import pytest
import torch

from honing.models.reward import RewardModel, last_token_index, load_reward_model, save_reward_model
from honing.train.objectives.reward import RewardObjective, bradley_terry_loss, pad_pairs, pairwise_accuracy
from tests.train.helpers import tiny_llama

PAD, EOS = 0, 2


@pytest.fixture
def reward_model() -> RewardModel:
    model = RewardModel(tiny_llama(seed=3))
    return model.eval()


def _reference_score(rm: RewardModel, ids: list[int]) -> torch.Tensor:
    """The plain path: the backbone on the unpadded sequence, the head on its last position."""
    hidden = rm.backbone(input_ids=torch.tensor([ids])).last_hidden_state  # (1, T, H)
    return rm.head(hidden[0, -1]).squeeze(-1)


SEQS = [[5, 9, 11, 40, 7, EOS], [6, 13, EOS], [8, 21, 22, 23, 24, 25, 26, 27, EOS]]


@torch.no_grad()
@pytest.mark.parametrize("side", ["right", "left"])
def test_score_is_read_at_the_last_real_token(reward_model, side):
    batch = pad_pairs(SEQS[:2], SEQS[2:] + SEQS[:1], PAD, side=side)  # 4 rows of differing length
    scores = reward_model(**batch)
    expected = torch.stack([_reference_score(reward_model, s) for s in SEQS[:2] + SEQS[2:] + SEQS[:1]])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_right_and_left_padding_give_the_same_scores(reward_model):
    right = reward_model(**pad_pairs(SEQS[:1] + SEQS[1:2], SEQS[2:] + SEQS[:1], PAD, side="right"))
    left = reward_model(**pad_pairs(SEQS[:1] + SEQS[1:2], SEQS[2:] + SEQS[:1], PAD, side="left"))
    torch.testing.assert_close(right, left, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pad_equal_to_eos_does_not_move_the_score(reward_model):
    """Padding with the eos id: an index taken from pad ids would land on the first eos/pad."""
    seq = [5, 9, 11, EOS]
    batch = pad_pairs([seq], [seq + [7, 8, 9, 10, EOS]], pad_id=EOS, side="right")
    assert last_token_index(batch["attention_mask"]).tolist() == [3, 8]
    scores = reward_model(**batch)
    torch.testing.assert_close(scores[0], _reference_score(reward_model, seq), atol=1e-5, rtol=1e-5)
    # and padding ids are irrelevant: the same batch padded with another id scores the same
    other = reward_model(**pad_pairs([seq], [seq + [7, 8, 9, 10, EOS]], pad_id=PAD, side="right"))
    torch.testing.assert_close(scores, other, atol=1e-5, rtol=1e-5)


def test_a_row_without_real_tokens_is_an_error():
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


def test_bradley_terry_against_hand_values():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])
    loss = bradley_terry_loss(chosen, rejected)
    hand = [math.log1p(math.exp(-1.0)), math.log(2.0), math.log1p(math.exp(1.0))]
    torch.testing.assert_close(loss, torch.tensor(hand))
    assert loss[1].item() == pytest.approx(math.log(2.0))
    # a margin asks for more: loss(d, m) == loss(d - m)
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(with_margin, bradley_terry_loss(chosen - 0.5, rejected))
    assert (with_margin > loss).all()
    assert pairwise_accuracy(chosen, rejected).item() == pytest.approx(1 / 3)


def test_objective_is_ln2_when_scores_are_equal(reward_model):
    objective = RewardObjective(reward_model)
    batch = pad_pairs(SEQS, SEQS, PAD)  # chosen == rejected
    loss_sum, n_pairs, metrics = objective(**batch)
    assert int(n_pairs) == 3
    assert loss_sum.item() / 3 == pytest.approx(math.log(2.0), abs=1e-6)
    with torch.no_grad():
        chosen, rejected = reward_model(**batch).chunk(2)
    # The same sequence scores the same up to float noise from its row in the batch (which depends
    # on the thread count), so the accuracy metric is checked against the scores, and a tie against
    # pairwise_accuracy itself.
    torch.testing.assert_close(chosen, rejected)
    assert metrics["accuracy"].item() == (chosen > rejected).sum().item()
    assert pairwise_accuracy(chosen, chosen).item() == 0.0


def test_save_load_round_trip_gives_identical_scores(reward_model, tmp_path):
    batch = pad_pairs(SEQS[:2], SEQS[1:], PAD)
    with torch.no_grad():
        before = reward_model(**batch)
    save_reward_model(reward_model, tmp_path / "rm")
    assert (tmp_path / "rm" / "reward_head.safetensors").exists()
    loaded = load_reward_model(tmp_path / "rm").eval()
    with torch.no_grad():
        after = loaded(**batch)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_save_load_round_trip_with_a_lora_backbone(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_llama(seed=4)
    base.save_pretrained(tmp_path / "base")
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    rm = RewardModel(lora).eval()
    batch = pad_pairs(SEQS[:2], SEQS[1:], PAD)
    with torch.no_grad():
        before = rm(**batch)
    save_reward_model(rm, tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm", base_model=tmp_path / "base").eval()
    with torch.no_grad():
        after = loaded(**batch)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)


def test_one_sgd_step_raises_the_chosen_margin(reward_model):
    reward_model.train()
    objective = RewardObjective(reward_model)
    batch = pad_pairs([[5, 9, 11, EOS]], [[5, 9, 12, 13, EOS]], PAD)
    optimizer = torch.optim.SGD(reward_model.parameters(), lr=1e-2)
    with torch.no_grad():
        s = reward_model(**batch)
        before = (s[0] - s[1]).item()
    frozen_before = reward_model.model.lm_head.weight.detach().clone()
    loss_sum, n_pairs, _ = objective(**batch)
    (loss_sum / n_pairs).backward()
    optimizer.step()
    with torch.no_grad():
        s = reward_model(**batch)
        after = (s[0] - s[1]).item()
    assert after > before
    # the vocabulary head is not on the reward path: it gets no gradient
    assert reward_model.model.lm_head.weight.grad is None or not reward_model.model.lm_head.weight.grad.any()
    torch.testing.assert_close(reward_model.model.lm_head.weight, frozen_before)


def test_preference_records_end_at_the_end_of_turn_token(tokenizer):
    from honing.data.formats import normalize
    from honing.train.objectives.reward import tokenize_preference

    record = normalize({"prompt": "What is 2+2?", "chosen": "4", "rejected": "Five, probably."}, "preference")
    pair = tokenize_preference(tokenizer, record, max_length=256)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert pair.chosen_ids[-1] == end_of_turn and pair.rejected_ids[-1] == end_of_turn
    assert not pair.truncated
    prompt_len = len(tokenizer(tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True))["input_ids"])
    assert pair.chosen_ids[:prompt_len] == pair.rejected_ids[:prompt_len]  # the same prompt on both sides
    assert tokenizer.decode(pair.rejected_ids[prompt_len:]).startswith("Five, probably.")


def test_objective_metrics_are_sums_over_pairs(reward_model):
    """The engine divides metrics by the step's pairs, so the objective must return sums."""
    objective = RewardObjective(reward_model)
    batch = pad_pairs(SEQS, SEQS[1:] + SEQS[:1], PAD)
    with torch.no_grad():
        scores = reward_model(**batch)
        loss_sum, n_pairs, metrics = objective(**batch)
    chosen, rejected = scores.chunk(2)
    assert RewardObjective.count(batch) == int(n_pairs) == 3
    assert metrics["accuracy"].item() == float((chosen > rejected).sum())
    torch.testing.assert_close(metrics["margin"], (chosen - rejected).sum())
    torch.testing.assert_close(metrics["chosen_score"], chosen.sum())
    torch.testing.assert_close(loss_sum, bradley_terry_loss(chosen, rejected).sum())


def test_reward_accumulation_is_exact():
    """Four pairs in one micro-batch, or two micro-batches of two (with per-pair margins): the same update."""
    from honing.config import TrainConfig
    from honing.train.distributed import Dist
    from honing.train.engine import train_step

    chosen = [[5, 9, 11, EOS], [6, 13, 14, 15, 16, EOS], [8, 21, EOS], [30, 31, 32, 33, EOS]]
    rejected = [[5, 9, 12, 13, 14, 15, 16, 17, EOS], [6, 7, EOS], [8, 22, 23, EOS], [30, EOS]]
    margins = [0.0, 0.5, 1.0, 0.25]
    updated = []
    for micro, accum in [(4, 1), (2, 2)]:
        rm = RewardModel(tiny_llama(seed=5))
        objective = RewardObjective(rm)
        cfg = TrainConfig(micro_batch_size=micro, grad_accum=accum, max_grad_norm=None, precision="fp32")
        optimizer = torch.optim.SGD(rm.parameters(), lr=0.5)
        batches = []
        for i in range(0, 4, micro):
            batch = pad_pairs(chosen[i:i + micro], rejected[i:i + micro], PAD)
            batch["margin"] = torch.tensor(margins[i:i + micro])
            batches.append(batch)
        result = train_step(objective, batches, optimizer, cfg, Dist())
        updated.append(([p.detach().clone() for p in rm.parameters()], result))
    (first, r1), (second, r2) = updated
    assert r1["units"] == r2["units"] == 4  # units: pairs
    assert r1["target_tokens"] == 0  # a reward batch has no labels
    assert math.isclose(r1["loss"], r2["loss"], rel_tol=1e-6)
    for name in ("accuracy", "margin", "chosen_score"):
        assert math.isclose(r1["metrics"][name], r2["metrics"][name], rel_tol=1e-5, abs_tol=1e-7)
    assert 0.0 <= r1["metrics"]["accuracy"] <= 1.0
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _by_hand(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template's text, tokenised, cut right after the answer's <|im_end|>."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return ids[: len(ids) - ids[::-1].index(end)]


def test_score_responses_matches_hand_tokenised_rows(tiny_model_dir, tokenizer):
    """Scores equal the model on each row alone, tokenised by hand, whatever the batch size or padding."""
    from transformers import AutoModelForCausalLM

    from honing.models.reward import score_responses

    torch.manual_seed(0)
    rm = RewardModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)).train()
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "Name a colour."}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "How are you?"}],
               "Convert 3 hours to minutes.", "Say nothing."]
    responses = ["4", "Blue, like the sky on a clear day in summer.", "Fine, thanks.", "180 minutes.", ""]
    expected = []
    with torch.no_grad():
        rm.eval()
        for prompt, response in zip(prompts, responses):
            turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            ids = _by_hand(tokenizer, [{"role": "system", "content": "Sys."}] * (turns[0]["role"] != "system")
                           + turns + [{"role": "assistant", "content": response}])
            expected.append(rm(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item())
        rm.train()
    for batch_size in (1, 2, 5):
        for side in ("right", "left"):
            tokenizer.padding_side = side  # the tokenizer's padding side does not matter
            got = score_responses(rm, tokenizer, prompts, responses, batch_size=batch_size, system_prompt="Sys.")
            assert got == pytest.approx(expected, abs=1e-5)
    assert rm.training and rm.head.training  # the caller's mode is restored

    # the same rendering as a training pair's chosen side
    from honing.data.formats import normalize
    from honing.train.objectives.reward import tokenize_preference

    record = normalize({"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}, "preference", system_prompt="Sys.")
    pair = tokenize_preference(tokenizer, record, max_length=256)
    assert pair.chosen_ids == _by_hand(tokenizer, record["prompt"] + record["chosen"])


def test_score_responses_reports_the_index_of_an_unscorable_answer(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from honing.models.reward import ResponseError, score_responses

    rm = RewardModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    with pytest.raises(ResponseError, match="response 1: ") as caught:
        score_responses(rm, tokenizer, ["short", "a very long prompt " * 40], ["ok", "ok"], max_length=32)
    assert caught.value.index == 1
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses(rm, tokenizer, ["a", "b"], ["x"])
