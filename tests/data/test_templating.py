"""Chat templates and loss masks: exactly the assistant turns (with end-of-turn) are trained."""

from __future__ import annotations

import logging

import pytest

from honing.data import templating
from honing.data.templating import (
    CHATML_TEMPLATE,
    PromptTooLong,
    render_prompt,
    tokenize_conversation,
    tokenize_text,
)
from honing.data.types import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "Fine, thanks."},
]


def runs(tokenizer, example, trained: bool) -> list[str]:
    """Decoded runs of consecutive trained (or masked) tokens."""
    out, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if (label != IGNORE_INDEX) == trained:
            current.append(token)
        elif current:
            out.append(tokenizer.decode(current))
            current = []
    if current:
        out.append(tokenizer.decode(current))
    return out


def test_all_assistant_trains_exactly_the_answers_and_their_end_of_turn(tokenizer, monkeypatch):
    # The SmolLM template is prefix-consistent: the search fallback must not be needed.
    monkeypatch.setattr(templating, "_searched_spans", lambda *a: pytest.fail("fallback used"))
    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)

    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>", "Fine, thanks.<|im_end|>"]
    assert runs(tokenizer, example, trained=False) == [
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n",
        "\n",
    ]
    # Trained labels are the token ids themselves (unshifted, Hugging Face convention).
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(example.input_ids, example.labels))
    assert example.input_ids == tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)["input_ids"]
    assert not example.truncated


def test_last_assistant_trains_only_the_final_turn(tokenizer):
    example = tokenize_conversation(tokenizer, CONVERSATION, train_on="last_assistant", max_length=512)
    assert runs(tokenizer, example, trained=True) == ["Fine, thanks.<|im_end|>"]


def test_everything_trains_every_token(tokenizer):
    example = tokenize_conversation(tokenizer, CONVERSATION, train_on="everything", max_length=512)
    assert example.labels == example.input_ids


def test_no_double_bos(bare_tokenizer_dir):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<eos>\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    assert tokenizer("hello")["input_ids"][0] == bos  # this tokenizer would add a BOS by itself

    example = tokenize_conversation(tokenizer, CONVERSATION[1:3], max_length=512)
    assert example.input_ids[0] == bos and example.input_ids.count(bos) == 1
    # A token that straddles the span's edge (here maybe " H") is trained: every target character is learned.
    assert [run.strip() for run in runs(tokenizer, example, trained=True)] == ["Hello.<eos>"]


def test_chatml_fallback_for_a_tokenizer_without_template(bare_tokenizer_dir, caplog):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    assert tokenizer.chat_template is None
    templating._warned_fallback.clear()
    with caplog.at_level(logging.WARNING, logger="honing.data.templating"):
        example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
        tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert sum("has no chat template; using ChatML" in r.message for r in caplog.records) == 1
    # <|im_end|> is several tokens here; its characters are still all trained.
    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>", "Fine, thanks.<|im_end|>"]
    assert tokenizer.decode(example.input_ids).startswith("<|im_start|>system\nYou are terse.<|im_end|>\n")
    assert render_prompt(tokenizer, CONVERSATION[:2]).endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_template_that_is_not_prefix_consistent_uses_the_search(tokenizer, monkeypatch):
    # The header counts the messages, so a rendered prefix is never a prefix of the whole.
    tokenizer.chat_template = "{{ messages | length }} messages\n" + CHATML_TEMPLATE
    spy = []
    real = templating._searched_spans
    monkeypatch.setattr(templating, "_searched_spans", lambda *a: spy.append(1) or real(*a))
    # The answer repeats the question: the cursor must find it after the question, not in it.
    conversation = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hello."}]
    example = tokenize_conversation(tokenizer, conversation, max_length=512)
    assert spy
    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>"]
    assert tokenizer.decode(example.input_ids).startswith("2 messages\n<|im_start|>user\nHello.<|im_end|>")

    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>", "Fine, thanks.<|im_end|>"]


def test_truncation_keeps_the_first_tokens_and_says_so(tokenizer):
    full = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    first_answer_end = max(i for i, label in enumerate(full.labels[:30]) if label != IGNORE_INDEX) + 1
    cut = tokenize_conversation(tokenizer, CONVERSATION, max_length=first_answer_end + 2)
    assert cut.truncated
    assert cut.input_ids == full.input_ids[: first_answer_end + 2]
    assert cut.labels == full.labels[: first_answer_end + 2]


def test_prompt_longer_than_the_context_is_a_clear_error(tokenizer):
    prompt_tokens = next(i for i, label in enumerate(tokenize_conversation(tokenizer, CONVERSATION, max_length=512).labels) if label != IGNORE_INDEX)
    with pytest.raises(PromptTooLong, match=rf"prompt is {prompt_tokens} tokens, longer than data.max_length=16; raise max_length or shorten it"):
        tokenize_conversation(tokenizer, CONVERSATION, max_length=16)
    # last_assistant: the earlier answer does not count as a target.
    with pytest.raises(PromptTooLong):
        tokenize_conversation(tokenizer, CONVERSATION, train_on="last_assistant", max_length=prompt_tokens + 8)


def test_tokenize_text_chunks_without_dropping_anything(tokenizer):
    text = "the quick brown fox jumps over the lazy dog " * 5
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    chunks = tokenize_text(tokenizer, text, max_length=8)
    assert [t for c in chunks for t in c.input_ids] == ids
    assert all(len(c.input_ids) == 8 for c in chunks[:-1]) and 0 < len(chunks[-1].input_ids) <= 8
    assert all(c.labels == c.input_ids and not c.truncated for c in chunks)


def test_a_template_that_refuses_a_conversation_is_a_record_problem(tokenizer):
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHATML_TEMPLATE
    )
    with pytest.raises(ValueError, match="the chat template rejects this conversation: System role not supported"):
        tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    # Without the system message it renders, and masking still works.
    example = tokenize_conversation(tokenizer, CONVERSATION[1:], max_length=512)
    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>", "Fine, thanks.<|im_end|>"]


def test_a_template_that_refuses_partial_conversations_uses_the_search(tokenizer, monkeypatch):
    # A template that cannot render a generation prompt: the prefix renders fail, the search finds the turns.
    tokenizer.chat_template = "{% if add_generation_prompt %}{{ raise_exception('no generation') }}{% endif %}" + CHATML_TEMPLATE
    spy = []
    real = templating._searched_spans
    monkeypatch.setattr(templating, "_searched_spans", lambda *a: spy.append(1) or real(*a))
    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert spy
    assert runs(tokenizer, example, trained=True) == ["Hello.<|im_end|>", "Fine, thanks.<|im_end|>"]
