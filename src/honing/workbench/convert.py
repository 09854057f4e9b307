"""`honing data convert`: rewrite records in another format.

Each record is read in its own format (detected from its keys, or the configured one) into
honing's canonical form (honing.data.formats.normalize), then written in the target format. A
record that has no faithful form in the target is a reject with file:line, never silently
changed: a multi-turn or tool-free chat with more than one exchange cannot be Alpaca, a
conversation is not plain text, a preference pair is not a chat.
"""

from __future__ import annotations

from typing import Any

from honing.config.workbench import DataConvertConfig
from honing.data.clean import joined_text
from honing.data.formats import RecordError, detect_format, normalize
from honing.errors import DataError
from honing.workbench.io import dumps, parse_payload
from honing.workbench.runner import Outcome, stream_filter

SOURCE_KEYS = {
    "text": {"text"},
    "instruction": {"instruction", "input", "output", "system"},
    "chat": {"messages"},
    "sharegpt": {"conversations", "system"},
    "preference": {"prompt", "chosen", "rejected"},
}
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def convert_record(record: dict[str, Any], to: str, fmt: str = "auto", *, keep_fields: bool = True) -> dict[str, Any]:
    """`record` in format `to`; RecordError when it cannot be converted faithfully."""
    if fmt == "auto":
        try:
            fmt = detect_format(record)
        except DataError as err:
            raise RecordError(str(err)) from None
    canonical = normalize(record, fmt)
    out = _to(canonical, fmt, to)
    if keep_fields:
        out.update({key: value for key, value in record.items() if key not in SOURCE_KEYS[fmt] and key not in out})
    return out


def _to(canonical: dict[str, Any], fmt: str, to: str) -> dict[str, Any]:
    if to == "text":
        if fmt != "text":
            raise RecordError(f"a {fmt} record has no plain-text form (the chat template makes one at training time)")
        return {"text": canonical["text"]}
    if to == "preference":
        if fmt != "preference":
            raise RecordError(f"a {fmt} record is not a preference pair (it has no rejected answer)")
        return {key: _compact(canonical[key], role) for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant"))}
    if fmt in ("text", "preference"):
        raise RecordError(f"a {fmt} record is not a conversation, so it has no {to} form")
    messages = canonical["messages"]
    if to == "chat":
        return {"messages": messages}
    if to == "sharegpt":
        return {"conversations": [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in messages]}
    return _to_instruction(messages)


def _to_instruction(messages: list[dict[str, str]]) -> dict[str, Any]:
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    if len(turns) != 2:
        raise RecordError(f"Alpaca holds one exchange (user, assistant); this conversation has {len(turns)} turns")
    out = {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}
    if system is not None:
        out["system"] = system
    return out


def _compact(messages: list[dict[str, str]], role: str) -> Any:
    """A single message of the expected role as a plain string (the common preference form)."""
    if len(messages) == 1 and messages[0]["role"] == role:
        return messages[0]["content"]
    return messages


class ConvertStep:
    def __init__(self, to: str, fmt: str, keep_fields: bool) -> None:
        self.to, self.fmt, self.keep_fields = to, fmt, keep_fields

    def process(self, file: str, line: int, payload: Any) -> Outcome:
        try:
            record = parse_payload(payload)
            out = convert_record(record, self.to, self.fmt, keep_fields=self.keep_fields)
        except RecordError as err:
            return Outcome("rejected", reason=str(err))
        return Outcome("kept", dumps(out), length=len(joined_text(out)))


def run(cfg: DataConvertConfig) -> dict[str, Any]:
    """Convert cfg.input into cfg.output in format cfg.to."""
    return stream_filter("convert", cfg, ConvertStep(cfg.to, cfg.format, cfg.keep_fields), output=cfg.output, write_removed=False)
