"""Prompts: what a record asks, the role names every format may use, and how a prompt is rendered.

One place for both directions, so that a file that trains also generates and evaluates:

    ROLE_NAMES       every role spelling honing reads (ShareGPT's human/gpt/chatgpt included), for
                     training (data/formats.py) and generation alike
    prompt_of        the prompt in a record of any format: `prompt` (preference data), `messages` /
                     `conversations` without their final answer, or `instruction` (+ `input`, Alpaca)
    read_prompts     (record, prompt) pairs from a .txt (one per line) or any data file
    as_messages      a prompt as a conversation (a string is one user turn; a system prompt added)
    render_prompt    the text a model is asked, through the same template as training
    encode_prompts   the token ids of prompts, rendered as generation renders them

Torch-free: the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honing.errors import DataError

Prompt = str | list[dict[str, Any]]

ROLES = ("system", "user", "assistant")
"""The canonical roles, as chat (OpenAI messages) records name them."""
ROLE_NAMES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "assistant": "assistant",
}
"""Every role name honing reads (ShareGPT exports use human, gpt and chatgpt) -> its canonical role."""


def turn(message: Any, where: str) -> dict[str, str]:
    """A chat (role/content) or ShareGPT (from/value) message as role/content, with the canonical role."""
    if isinstance(message, dict):
        name = message.get("role", message.get("from"))
        role = ROLE_NAMES.get(name) if isinstance(name, str) else None
        content = message.get("content", message.get("value"))
        if role and isinstance(content, str):
            return {"role": role, "content": content}
    raise DataError(f"{where}: each message needs a role ({', '.join(ROLE_NAMES)}) and string content, "
                    f"got {message!r:.80}")


def prompt_of(record: Any, where: str) -> Prompt:
    """The prompt in a record, as training would have asked it: `prompt`, `messages` / `conversations`
    (a trailing assistant answer is dropped; ShareGPT's top-level `system` kept) or `instruction`
    (+ `input`, Alpaca; its `system` kept)."""
    if isinstance(record, dict):
        prompt = record.get("prompt")
        if isinstance(prompt, str) and prompt:
            return prompt
        if isinstance(prompt, list) and prompt:
            return [turn(m, where) for m in prompt]
        messages = record.get("messages") or record.get("conversations")
        if isinstance(messages, list) and messages:
            turns = [turn(m, where) for m in messages]
            if turns[-1]["role"] == "assistant":  # a training record: answer its prompt afresh
                turns = turns[:-1]
            if turns:  # a top-level system field is ShareGPT's (training reads it there, not beside messages)
                return _with_system(turns, record.get("system")) if "conversations" in record else turns
        if isinstance(record.get("instruction"), str) and record["instruction"].strip():
            given = record.get("input") or ""
            user = record["instruction"] + (f"\n\n{given}" if _text(given) else "")
            system = record.get("system")
            return [{"role": "system", "content": system}, {"role": "user", "content": user}] if _text(system) else user
    raise DataError(f"{where}: no prompt found; give `prompt`, `messages` or `instruction` in each record")


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _with_system(turns: list[dict[str, str]], system: Any) -> list[dict[str, str]]:
    """A record-level system message (as training reads ShareGPT's `system`) in front, unless one is there."""
    if _text(system) and turns[0]["role"] != "system":
        return [{"role": "system", "content": system}, *turns]
    return turns


def read_prompts(path: str | Path) -> list[tuple[dict[str, Any], Prompt]]:
    """(record, prompt) pairs: .txt has one prompt per non-empty line, other files one per record."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    pairs: list[tuple[dict[str, Any], Prompt]] = []
    if path.suffix.lower() == ".txt":
        from honing.data.loading import read_text  # UTF-8 (a BOM allowed), else DataError with file:line

        for line in read_text(path).splitlines():
            if line.strip():
                pairs.append(({"prompt": line.strip()}, line.strip()))
    else:
        from honing.data.loading import read_records

        for file, line, record in read_records(path):
            pairs.append((record, prompt_of(record, f"{file}:{line}")))
    if not pairs:
        raise DataError(f"{path} holds no prompts")
    return pairs


def as_messages(prompt: Prompt, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """A prompt as a conversation: a string becomes one user turn; the system prompt is added
    when the conversation has none."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the conversation's last user turn ("" when it has none): the question a retriever is asked."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def with_question(prompt: Prompt, text: str) -> Prompt:
    """`prompt` with its question (the last user turn, or the whole text) replaced by `text`."""
    if isinstance(prompt, str):
        return text
    messages = [dict(m) for m in prompt]
    for message in reversed(messages):
        if message.get("role") == "user":
            message["content"] = text
            return messages
    return [*messages, {"role": "user", "content": text}]


def render_prompt(tokenizer: Any, prompt: Prompt, *, chat_template: bool = True,
                  system_prompt: str | None = None) -> tuple[str, bool]:
    """(text, add_special_tokens). Rendered chat text already holds its special tokens, so it
    is tokenised without adding a second BOS; plain text (chat_template=False) gets them."""
    if isinstance(prompt, str) and not chat_template:
        return prompt, True
    from honing.data.templating import render_prompt as render_with_template

    # The same rendering as training (including the ChatML fallback), so the model is asked
    # exactly the way it was taught.
    return render_with_template(tokenizer, as_messages(prompt, system_prompt)), False


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt], *, chat_template: bool = True,
                   system_prompt: str | None = None) -> list[list[int]]:
    """Token ids of each prompt, rendered as generation renders it."""
    encoded = []
    for prompt in prompts:
        text, add_special = render_prompt(tokenizer, prompt, chat_template=chat_template, system_prompt=system_prompt)
        encoded.append(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    return encoded
