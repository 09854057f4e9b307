"""The quickstart task: turn a customer-support message into a one-line JSON record.

The model reads one message and answers with exactly

    {"category": ..., "urgency": ..., "order_id": ..., "sentiment": ...}

on one line, keys in that order, values from `ALLOWED` (order_id: the order number copied
as written, e.g. "A-10493" or "#558201", or null). The bundled data lives in `data/`
(written by `make_data`); this module holds the prompt, the record format and the metric.
Pure Python: importing it does not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIELDS = ("category", "urgency", "order_id", "sentiment")
"""The four output keys, in the order the answer must give them."""

ALLOWED: dict[str, tuple[str, ...]] = {
    "category": ("billing", "shipping", "returns", "technical", "account"),
    "urgency": ("low", "medium", "high"),
    "sentiment": ("positive", "neutral", "negative"),
}
"""Allowed values of the closed fields; order_id is a non-empty string or null."""

SYSTEM_PROMPT = (
    "Read the customer message and reply with only one line of JSON, keys in this order:\n"
    '{"category": "billing"|"shipping"|"returns"|"technical"|"account", '
    '"urgency": "low"|"medium"|"high", '
    '"order_id": the order number exactly as written, or null, '
    '"sentiment": "positive"|"neutral"|"negative"}'
)
"""States the schema and the allowed values, so the base model has a fair chance."""

USER_PREFIX = "Customer message:\n"
"""Frames the user turn as data to read, not a chat to answer (the base model otherwise replies to the customer)."""

DATA_DIR = Path(__file__).parent / "data"
"""train.jsonl / test.jsonl (chat records) and test_labels.jsonl (the labels of test.jsonl, same order)."""


def render_label(label: dict[str, Any]) -> str:
    """The reference answer: the label as one line of JSON, keys in `FIELDS` order."""
    return json.dumps({field: label[field] for field in FIELDS}, ensure_ascii=False)


def prompt_messages(message: str) -> list[dict[str, str]]:
    """The system and user turns the model sees for one support message."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": USER_PREFIX + message}]


def to_chat_record(ticket: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """{"message": str, "label": {...}} -> {"messages": [system, user, assistant]} (OpenAI chat format)."""
    return {
        "messages": prompt_messages(ticket["message"])
        + [{"role": "assistant", "content": render_label(ticket["label"])}]
    }


def load_split(split: str) -> list[dict[str, Any]]:
    """The bundled records of "train" or "test", each {"messages": [...]}."""
    return _read_jsonl(DATA_DIR / f"{split}.jsonl")


def load_test_labels() -> list[dict[str, Any]]:
    """The labels of the bundled test split, in the order of test.jsonl."""
    return _read_jsonl(DATA_DIR / "test_labels.jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def parse_prediction(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (surrounding prose or code fences allowed), or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def is_valid_format(text: str) -> bool:
    """Strict: the output (bar surrounding whitespace) is one JSON object with exactly the
    four keys in order and allowed values."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return False
    if not isinstance(value, dict) or tuple(value) != FIELDS:
        return False
    for field, allowed in ALLOWED.items():
        if value[field] not in allowed:
            return False
    order_id = value["order_id"]
    return order_id is None or (isinstance(order_id, str) and order_id.strip() != "")


def score(predictions: list[str], references: list[dict[str, Any]]) -> dict[str, Any]:
    """Format validity (strict), field accuracy and exact match (lenient parsing), per-field accuracy.

    field_accuracy is the mean over examples and the four fields of exact value match; an
    unparsable prediction scores 0 on every field. Every number is a share in [0, 1].
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score")
    field_hits = dict.fromkeys(FIELDS, 0)
    valid = parsed = exact = 0
    for text, reference in zip(predictions, references):
        valid += is_valid_format(text)
        prediction = parse_prediction(text)
        if prediction is None:
            continue
        parsed += 1
        hits = [field in prediction and prediction[field] == reference[field] for field in FIELDS]
        for field, hit in zip(FIELDS, hits):
            field_hits[field] += hit
        exact += all(hits)
    n = len(predictions)
    per_field = {field: field_hits[field] / n for field in FIELDS}
    return {
        "examples": n,
        "format_valid": valid / n,
        "parsed": parsed / n,
        "field_accuracy": sum(per_field.values()) / len(FIELDS),
        "exact_match": exact / n,
        "per_field": per_field,
    }


# Per-example metrics in the shape `honing eval` takes (`metrics: [honing.quickstart.task:field_accuracy]`):
# the example's `reference` is the wanted JSON line.


def field_accuracy(prediction: str, example: dict[str, Any]) -> float:
    """Share of the four fields whose value matches the reference (lenient parsing, as `score`)."""
    reference = json.loads(example["reference"])
    parsed = parse_prediction(prediction)
    if parsed is None:
        return 0.0
    return sum(field in parsed and parsed[field] == reference[field] for field in FIELDS) / len(FIELDS)


def format_valid(prediction: str, example: dict[str, Any]) -> float:
    """1.0 when the answer is exactly one JSON line with the four keys in order and allowed values."""
    return float(is_valid_format(prediction))
