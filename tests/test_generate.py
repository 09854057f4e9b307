"""Batched generation: left padding must not change what greedy decoding produces."""

from __future__ import annotations

import pytest
import torch

from honing.config import SamplingConfig
from honing.data.prompts import render_prompt
from honing.generate import generate, stop_token_ids

PROMPTS = [
    "Hi",
    "Tell me a very long story about a fox who jumps over a lazy dog in the middle of the night, please.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    "Medium length prompt about billing.",
    "Another one",
]
GREEDY = SamplingConfig(max_new_tokens=12, temperature=0.0)


@pytest.fixture()
def lively_model(tiny_model):
    """The tiny model with larger random weights: its greedy answers depend on the prompt
    (at the default init scale it answers every prompt with newlines, which strip to "")."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in tiny_model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return tiny_model


def test_batched_equals_one_at_a_time(lively_model, tokenizer):
    # 5 prompts in batches of 3 and 2: both batches are padded, the first by many tokens
    batched = generate(lively_model, tokenizer, PROMPTS, GREEDY, batch_size=3, progress=False)
    single = [generate(lively_model, tokenizer, [p], GREEDY, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert len(batched) == len(PROMPTS) and all(batched) and len(set(batched)) > 1


def test_new_tokens_match_a_plain_greedy_loop(lively_model, tokenizer):
    """The answer is exactly the argmax continuation of the rendered prompt, minus special tokens."""
    text, _ = render_prompt(tokenizer, PROMPTS[1])
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stops = set(stop_token_ids(tokenizer, lively_model))
    new: list[int] = []
    with torch.no_grad():
        for _ in range(GREEDY.max_new_tokens):
            next_id = int(lively_model(input_ids=ids).logits[0, -1].argmax())
            new.append(next_id)
            if next_id in stops:
                break
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    expected = tokenizer.decode(new, skip_special_tokens=True).strip()
    assert expected
    assert generate(lively_model, tokenizer, [PROMPTS[1]], GREEDY, progress=False) == [expected]


def test_chat_rendering_adds_no_second_bos(tokenizer):
    text, add_special = render_prompt(tokenizer, "hello", system_prompt="Be kind.")
    assert not add_special
    assert text.endswith("<|im_start|>assistant\n") and "Be kind." in text
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == text.count(tokenizer.bos_token)
    plain, add_special = render_prompt(tokenizer, "hello", chat_template=False)
    assert plain == "hello" and add_special


def test_chatml_fallback_without_template(bare_tokenizer_dir):
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    text, _ = render_prompt(bare, [{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_state_is_restored(tiny_model, tokenizer):
    tiny_model.train()
    tokenizer.padding_side = "right"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    generate(tiny_model, tokenizer, PROMPTS[:2], SamplingConfig(max_new_tokens=3, temperature=1.0), progress=False)
    assert tiny_model.training and tokenizer.padding_side == "right"
    assert torch.equal(torch.rand(1), expected_next), "generation must not consume the caller's RNG"


def test_sampling_is_seeded(lively_model, tokenizer):
    hot = SamplingConfig(max_new_tokens=8, temperature=1.5, top_p=0.95, top_k=50, seed=7)
    first = generate(lively_model, tokenizer, PROMPTS, hot, progress=False)
    assert generate(lively_model, tokenizer, PROMPTS, hot, progress=False) == first
    other = generate(lively_model, tokenizer, PROMPTS, hot.model_copy(update={"seed": 8}), progress=False)
    assert other != first


def test_progress_bar_and_empty(tiny_model, tokenizer):
    assert generate(tiny_model, tokenizer, [], GREEDY) == []
    assert len(generate(tiny_model, tokenizer, PROMPTS[:2], GREEDY, progress=True)) == 2


def test_streamer_needs_one_prompt(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="one prompt"):
        generate(tiny_model, tokenizer, PROMPTS[:2], GREEDY, streamer=object(), progress=False)


def test_strings_and_message_lists_render_the_same(tokenizer):
    """A string is one user turn; both get the template's generation prompt and exactly one BOS."""
    as_string, add_special = render_prompt(tokenizer, "What is 2 + 2?")
    as_messages, add_special_messages = render_prompt(tokenizer, [{"role": "user", "content": "What is 2 + 2?"}])
    assert as_string == as_messages and not add_special and not add_special_messages
    assert as_string.startswith(tokenizer.bos_token) and as_string.endswith("<|im_start|>assistant\n")
    ids = tokenizer(as_string, add_special_tokens=add_special)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    assert tokenizer.decode(ids) == as_string

