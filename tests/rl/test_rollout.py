"""honing.rl.rollout: rows and their masks, right-padded batches, and completions that are exactly
honing.generate.sample_tokens' for the same seed."""

from __future__ import annotations

import torch

from honing.config import RolloutConfig, SamplingConfig
from honing.generate import sample_tokens, stop_token_ids
from honing.rl.prompts import PromptItem
from honing.rl.rollout import (Completions, collate_rollout, generate_completions, rollout_rows, rollout_sampling,
                               sample_completions, validation_sampling)


def test_rows_mark_the_completion_and_collate_right_pads():
    completions = Completions(items=[PromptItem({}, "a", [5, 6, 7]), PromptItem({}, "b", [8])],
                              tokens=[[9], [10, 11, 12]], texts=["", ""], truncated=[False, False], seconds=0.0)
    rows = rollout_rows(completions)
    assert rows[0]["input_ids"].tolist() == [5, 6, 7, 9]
    assert rows[0]["response_mask"].tolist() == [0, 0, 0, 1]
    assert rows[1]["input_ids"].tolist() == [8, 10, 11, 12]
    assert rows[1]["response_mask"].tolist() == [0, 1, 1, 1]
    rows.append({"input_ids": torch.tensor([1, 2]), "attention_mask": torch.ones(2, dtype=torch.long),
                 "response_mask": torch.tensor([0, 1])})
    batch = collate_rollout(rows, pad_id=99)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (3, 4) for k in rows[0]}
    assert batch["input_ids"][2].tolist() == [1, 2, 99, 99]
    assert batch["attention_mask"][2].tolist() == [1, 1, 0, 0]
    assert batch["response_mask"][2].tolist() == [0, 1, 0, 0]
    assert batch["input_ids"].dtype == torch.long


def test_collate_keeps_float_keys_and_pads_them_with_zero():
    rows = [{"input_ids": torch.tensor([1, 2, 3]), "old_logps": torch.tensor([0.0, -1.0, -2.0])},
            {"input_ids": torch.tensor([4]), "old_logps": torch.tensor([-0.5])}]
    batch = collate_rollout(rows, pad_id=0)
    assert batch["old_logps"].dtype == torch.float32
    assert batch["old_logps"][1].tolist() == [-0.5, 0.0, 0.0]


def test_generate_completions_equals_sample_tokens_with_the_same_seed(tiny_model, tokenizer):
    prompts = [tokenizer("hello there")["input_ids"], tokenizer("a much longer prompt about foxes")["input_ids"]]
    sampling = SamplingConfig(max_new_tokens=5, temperature=1.0, top_p=1.0)
    ours = generate_completions(tiny_model, tokenizer, prompts, sampling, samples=2, batch_size=4, seed=3)
    reference = sample_tokens(tiny_model, tokenizer, prompts, sampling, samples=2, batch_size=4, seed=3)
    assert ours == reference
    assert [len(group) for group in ours] == [2, 2]
    assert all(1 <= len(tokens) <= 5 for group in ours for tokens in group)
    other = generate_completions(tiny_model, tokenizer, prompts, sampling, samples=2, batch_size=4, seed=4)
    assert other != ours  # the seed is what makes them equal


def test_sample_completions_flattens_in_prompt_order_and_marks_truncation(tiny_model, tokenizer):
    items = [PromptItem({"i": 0}, "p0", tokenizer("one")["input_ids"]),
             PromptItem({"i": 1}, "p1", tokenizer("two words")["input_ids"])]
    sampling = SamplingConfig(max_new_tokens=3, temperature=1.0)
    stops = set(stop_token_ids(tokenizer, tiny_model))
    out = sample_completions(tiny_model, tokenizer, items, sampling, stops, group_size=3, batch_size=6, seed=0)
    assert [it.record["i"] for it in out.items] == [0, 0, 0, 1, 1, 1]
    groups = sample_tokens(tiny_model, tokenizer, [it.ids for it in items], sampling, samples=3, batch_size=6, seed=0)
    assert out.tokens == [t for group in groups for t in group]
    assert out.truncated == [not t or t[-1] not in stops for t in out.tokens]
    assert out.texts == [tokenizer.decode(t, skip_special_tokens=True).strip() for t in out.tokens]
    assert out.lengths == [len(t) for t in out.tokens]


def test_rollout_and_validation_sampling():
    rollout = RolloutConfig(max_new_tokens=7, temperature=0.9, top_p=0.8, top_k=5, eval_max_new_tokens=3)
    sampling = rollout_sampling(rollout)
    assert (sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.top_k) == (7, 0.9, 0.8, 5)
    greedy = validation_sampling(rollout)
    assert (greedy.max_new_tokens, greedy.temperature) == (3, 0.0)
    assert validation_sampling(rollout.model_copy(update={"eval_max_new_tokens": None})).max_new_tokens == 7
