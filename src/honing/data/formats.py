"""Record formats: recognise what a record is and turn it into one canonical form.

Canonical forms (what every later step sees):

    text                          -> {"text": str}
    instruction, chat, sharegpt   -> {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
    preference                    -> {"prompt": messages, "chosen": messages, "rejected": messages}

Problems with a record raise `RecordError` (a ValueError) with a short reason; the loader adds
the file and line and either fails or rejects the record, per `data.on_bad_record`.
"""

from __future__ import annotations

from typing import Any

from honing.data.prompts import ROLE_NAMES, ROLES
from honing.errors import DataError

FORMAT_KEYS: dict[str, str] = {
    "text": "{text}",
    "instruction": "{instruction, output} with optional input and system (Alpaca)",
    "chat": "{messages: [{role, content}, ...]}",
    "sharegpt": "{conversations: [{from, value}, ...]}",
    "preference": "{prompt, chosen, rejected}",
}
FORMATS = tuple(FORMAT_KEYS)
CONVERSATION_FORMATS = ("instruction", "chat", "sharegpt")


class RecordError(ValueError):
    """One record that does not fit its format; the message is the reason, without file:line."""


def detect_format(record: Any) -> str:
    """The format of one record, judged by its keys."""
    if not isinstance(record, dict):
        raise DataError(f"a record must be a JSON object, not {type(record).__name__}")
    keys = set(record)
    # Most specific first: a preference record may also carry unrelated keys such as "text".
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "instruction"
    if "text" in keys:
        return "text"
    known = "; ".join(f"{name} {keys_}" for name, keys_ in FORMAT_KEYS.items())
    shown = ", ".join(sorted(map(str, keys))) or "none"
    raise DataError(f"unknown record format (keys: {shown}); known formats: {known}")


def normalize(record: Any, fmt: str, *, system_prompt: str | None = None) -> dict[str, Any]:
    """The canonical form of `record` read as format `fmt`; raises RecordError when it does not fit."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, not {type(record).__name__}")
    if fmt == "text":
        return {"text": _string(record, "text")}
    if fmt == "instruction":
        messages = _from_instruction(record)
    elif fmt == "chat":
        messages = _messages(record.get("messages"), "messages", role_key="role", content_key="content")
    elif fmt == "sharegpt":
        messages = _from_sharegpt(record)
    elif fmt == "preference":
        return _preference(record, system_prompt)
    else:
        raise DataError(f"unknown data.format {fmt!r}; known: {', '.join(FORMATS)}")
    validate_conversation(messages)
    return {"messages": with_system_prompt(messages, system_prompt)}


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """`messages` with the system prompt in front, unless they already have a system message."""
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def validate_conversation(messages: list[dict[str, str]], *, need_assistant: bool = True) -> None:
    """System only first, then user and assistant taking turns, starting with the user."""
    expected = "user"
    for index, message in enumerate(messages):
        role = message["role"]
        where = f"message {index + 1}"
        if role == "system":
            if index != 0:
                raise RecordError(f"{where}: a system message may only come first")
            continue
        if role != expected:
            if expected == "user" and index == (1 if messages[0]["role"] == "system" else 0):
                raise RecordError(f"{where}: the conversation must start with a user message, not {role}")
            raise RecordError(f"{where}: two {role} messages in a row; user and assistant must take turns")
        expected = "assistant" if role == "user" else "user"
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise RecordError("the conversation has no assistant message, so there is nothing to learn")


# --------------------------------------------------------------------------- helpers


def _string(record: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = record.get(key)
    if value is None:
        if optional:
            return ""
        raise RecordError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, not {type(value).__name__}")
    if not optional and not value.strip():
        raise RecordError(f"field {key!r} is empty")
    return value


def _from_instruction(record: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _string(record, "instruction")
    extra_input = _string(record, "input", optional=True)
    output = _string(record, "output")
    system = _string(record, "system", optional=True)
    user = f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _from_sharegpt(record: dict[str, Any]) -> list[dict[str, str]]:
    messages = _messages(record.get("conversations"), "conversations", role_key="from", content_key="value", roles=ROLE_NAMES)
    # Some ShareGPT exports keep the system prompt in a top-level field.
    system = _string(record, "system", optional=True)
    if system.strip() and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def _messages(
    value: Any,
    field: str,
    *,
    role_key: str,
    content_key: str,
    roles: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    """Check a list of turns and return them as [{role, content}] with canonical role names."""
    if value is None:
        raise RecordError(f"missing field {field!r}")
    if not isinstance(value, list):
        raise RecordError(f"field {field!r} must be a list of messages, not {type(value).__name__}")
    if not value:
        raise RecordError(f"field {field!r} is empty")
    roles = roles or {role: role for role in ROLES}
    out = []
    for index, turn in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(turn, dict):
            raise RecordError(f"{where} must be an object with {role_key!r} and {content_key!r}, not {type(turn).__name__}")
        role, content = turn.get(role_key), turn.get(content_key)
        if role is None:
            raise RecordError(f"{where}: missing {role_key!r}")
        if not isinstance(role, str) or role not in roles:  # a list or object as role: unknown, not a crash
            raise RecordError(f"{where}: unknown role {role!r}; known: {', '.join(roles)}")
        if content is None:
            raise RecordError(f"{where}: missing {content_key!r}")
        if not isinstance(content, str):
            raise RecordError(f"{where}: {content_key!r} must be a string, not {type(content).__name__}")
        if not content.strip():
            raise RecordError(f"{where}: {content_key!r} is empty")
        out.append({"role": roles[role], "content": content})
    return out


def _preference(record: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    prompt = _turns(record, "prompt", "user")
    if prompt[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user message")
    validate_conversation(prompt, need_assistant=False)
    out = {"prompt": with_system_prompt(prompt, system_prompt)}
    for key in ("chosen", "rejected"):
        answer = _turns(record, key, "assistant")
        if answer[0]["role"] != "assistant":
            raise RecordError(f"{key!r} must start with an assistant message")
        # The answer continues the prompt, so the whole exchange must take turns properly.
        validate_conversation(prompt + answer)
        out[key] = answer
    return out


def _turns(record: dict[str, Any], key: str, role: str) -> list[dict[str, str]]:
    """A preference field: a string (one `role` message) or a list of messages."""
    value = record.get(key)
    if isinstance(value, str):
        return [{"role": role, "content": _string(record, key)}]
    if isinstance(value, list):
        return _messages(value, key, role_key="role", content_key="content")
    if value is None:
        raise RecordError(f"missing field {key!r}")
    raise RecordError(f"field {key!r} must be a string or a list of messages, not {type(value).__name__}")
