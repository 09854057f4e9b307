"""Chat templates and loss masks: which tokens of a conversation the model learns.

A conversation is rendered ONCE with the tokenizer's chat template and tokenised once, with
character offsets. The characters of every trained assistant turn (its content and its
end-of-turn token) are located in the rendered text, and a token is trained when its
characters overlap a trained span. Tokenising pieces separately and concatenating would
change the tokens at the seams; this way the ids are exactly those a model sees at inference.
"""

from __future__ import annotations

import logging
from typing import Any

from honing.data.types import IGNORE_INDEX, TokenizedExample
from honing.errors import ModelError

logger = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Used when a tokenizer has no chat template of its own (a base model's tokenizer)."""
CHATML_END_OF_TURN = "<|im_end|>"
# End-of-turn markers of common templates, tried after the tokenizer's eos token when the
# template is not prefix-consistent and turns must be found by searching.
_END_OF_TURN_MARKERS = (CHATML_END_OF_TURN, "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")
TRAIN_ON = ("all_assistant", "last_assistant", "everything")

_warned_fallback: set[str] = set()


class PromptTooLong(ValueError):
    """No target token is left after truncation: the prompt fills the whole context."""


def chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template, or the ChatML fallback (said once per tokenizer)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one is what chat uses
        template = template.get("default")
    if template:
        return template
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if name not in _warned_fallback:
        _warned_fallback.add(name)
        logger.warning("tokenizer %s has no chat template; using ChatML (<|im_start|>role ... <|im_end|>)", name)
    return CHATML_TEMPLATE


def render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """The conversation as text, through the chat template (or ChatML)."""
    return tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template(tokenizer),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def _render_record(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Render a training conversation; a template that refuses it (raise_exception) rejects the record."""
    from jinja2 import TemplateError

    try:
        return render(tokenizer, messages)
    except TemplateError as err:
        raise ValueError(f"the chat template rejects this conversation: {err}") from None


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt for generation: the conversation followed by the assistant header. A conversation that ends
    with an assistant turn is a prefill: that turn is the start of the answer, and generation continues it."""
    if messages and messages[-1].get("role") == "assistant":
        return render(tokenizer, messages[:-1], add_generation_prompt=True) + messages[-1]["content"]
    return render(tokenizer, messages, add_generation_prompt=True)


def tokenize_conversation(
    tokenizer: Any,
    messages: list[dict[str, str]],
    *,
    train_on: str = "all_assistant",
    max_length: int,
) -> TokenizedExample:
    """Token ids and labels of one conversation; labels are IGNORE_INDEX outside trained turns."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    text = _render_record(tokenizer, messages)
    input_ids, offsets = _tokenize_with_offsets(tokenizer, text)
    if train_on == "everything":
        labels = list(input_ids)
    else:
        spans = assistant_spans(tokenizer, messages, text)
        if train_on == "last_assistant":
            spans = spans[-1:]
        labels = _mask(input_ids, offsets, spans)
    return _truncate(input_ids, labels, max_length)


def tokenize_text(tokenizer: Any, text: str, max_length: int) -> list[TokenizedExample]:
    """A pre-training document: its tokens plus eos, cut into chunks of max_length (nothing dropped)."""
    # The tokenizer's own special tokens (e.g. a llama BOS) mark the document start, as in pre-training.
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not input_ids or input_ids[-1] != eos):
        input_ids.append(eos)
    return [
        TokenizedExample(input_ids=chunk, labels=list(chunk))
        for chunk in (input_ids[start : start + max_length] for start in range(0, len(input_ids), max_length))
    ]


# --------------------------------------------------------------------------- spans


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of every assistant turn's content plus its end-of-turn token."""
    spans = _prefix_spans(tokenizer, messages, text)
    if spans is None:
        spans = _searched_spans(tokenizer, messages, text)
    return spans


def _prefix_spans(tokenizer: Any, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]] | None:
    """Spans from rendering prefixes of the conversation; None when the template is not prefix-consistent."""
    from jinja2 import TemplateError

    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            before = render(tokenizer, messages[:index], add_generation_prompt=True)
            through = render(tokenizer, messages[: index + 1]).rstrip()
        except TemplateError:  # some templates refuse a partial conversation (e.g. one ending in assistant)
            return None
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            return None
        spans.append((len(before), len(through)))
    return spans


def _searched_spans(tokenizer: Any, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Find each message's content in order from a moving cursor; extend assistant turns over the end-of-turn marker.

    Every message (not only assistant ones) moves the cursor, so an answer that repeats words
    of the question is found in the answer, not in the question.
    """
    markers = [m for m in (getattr(tokenizer, "eos_token", None), *_END_OF_TURN_MARKERS) if m]
    spans, cursor = [], 0
    for index, message in enumerate(messages):
        content = message["content"]
        start = text.find(content, cursor)
        if start < 0:  # templates often trim content
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            if message["role"] == "assistant":
                raise ValueError(f"cannot find assistant message {index + 1} in the chat template's output")
            continue  # a template may drop a message (e.g. a system prompt it does not support)
        end = start + len(content)
        if message["role"] == "assistant":
            end += next((len(m) for m in markers if text.startswith(m, end)), 0)
            spans.append((start, end))
        cursor = end
    return spans


# --------------------------------------------------------------------------- tokens


def _tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # add_special_tokens=False: the template already wrote any BOS; the tokenizer must not add a second.
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ModelError("this tokenizer cannot report character offsets; honing needs a fast (Rust) tokenizer for masking") from None
    return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]


def _mask(input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for position, (start, end) in enumerate(offsets):
        # Offsets and spans are both increasing: walk them together.
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index == len(spans):
            break
        span_start, span_end = spans[span_index]
        if end > start and start < span_end and end > span_start:
            labels[position] = input_ids[position]
    return labels


def _truncate(input_ids: list[int], labels: list[int], max_length: int) -> TokenizedExample:
    truncated = len(input_ids) > max_length
    example = TokenizedExample(input_ids=input_ids[:max_length], labels=labels[:max_length], truncated=truncated)
    if example.target_tokens == 0:
        first_target = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX and i > 0), None)
        if first_target is None:
            raise PromptTooLong("no token is trained in this conversation (is the assistant message empty?)")
        raise PromptTooLong(
            f"prompt is {first_target} tokens, longer than data.max_length={max_length}; raise max_length or shorten it"
        )
    return example
