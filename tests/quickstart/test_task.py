"""The bundled quickstart task: prompt records, lenient parsing, the metric, and the shipped data."""

from __future__ import annotations

import json

import pytest

from honing.quickstart import task
from honing.quickstart.task import ALLOWED, FIELDS, parse_prediction, score

REF = {"category": "billing", "urgency": "high", "order_id": "A-10493", "sentiment": "negative"}
REF_NO_ID = {"category": "account", "urgency": "low", "order_id": None, "sentiment": "neutral"}
GOOD = '{"category": "billing", "urgency": "high", "order_id": "A-10493", "sentiment": "negative"}'


def test_to_chat_record_renders_label_as_one_line_in_key_order():
    label = {"sentiment": "neutral", "order_id": None, "urgency": "low", "category": "account"}
    record = task.to_chat_record({"message": "Please delete my account.", "label": label})
    system, user, assistant = record["messages"]
    assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
    assert system["content"] == task.SYSTEM_PROMPT
    assert user["content"] == task.USER_PREFIX + "Please delete my account."
    assert assistant["content"] == (
        '{"category": "account", "urgency": "low", "order_id": null, "sentiment": "neutral"}'
    )
    assert task.is_valid_format(assistant["content"])


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, REF),
        ("Sure! Here it is:\n```json\n" + GOOD + "\n```\nAnything else?", REF),
        ('{"category": "billing", "urgency": "high"', None),  # cut off
        ("I'm sorry, I can't help with that.", None),
        ("{not json} then " + GOOD, REF),  # the first *parsable* object
        ("[1, 2] {}", {}),
        ('{"a": {"b": 1}} {"c": 2}', {"a": {"b": 1}}),
    ],
)
def test_parse_prediction(text, expected):
    assert parse_prediction(text) == expected


@pytest.mark.parametrize(
    "text, valid",
    [
        (GOOD, True),
        ("  " + GOOD + "\n", True),
        ('{"category": "account", "urgency": "low", "order_id": null, "sentiment": "neutral"}', True),
        ("Here: " + GOOD, False),  # extra text
        (GOOD + " " + GOOD, False),  # two objects
        ('{"urgency": "high", "category": "billing", "order_id": "A-10493", "sentiment": "negative"}', False),
        ('{"category": "billing", "urgency": "high", "sentiment": "negative"}', False),  # missing key
        ('{"category": "billing", "urgency": "high", "order_id": "A-10493", "sentiment": "negative", "x": 1}', False),
        ('{"category": "payments", "urgency": "high", "order_id": "A-10493", "sentiment": "negative"}', False),
        ('{"category": "billing", "urgency": "high", "order_id": "", "sentiment": "negative"}', False),
        ('{"category": "billing", "urgency": "high", "order_id": 10493, "sentiment": "negative"}', False),
        ("[" + GOOD + "]", False),
    ],
)
def test_is_valid_format_is_strict(text, valid):
    assert task.is_valid_format(text) is valid


def test_score_hand_computed():
    predictions = [
        GOOD,  # all right, valid
        "Answer: " + GOOD,  # all right after lenient parsing, not valid
        '{"category": "billing", "urgency": "low", "order_id": "A-10493", "sentiment": "negative"}',  # urgency wrong
        '{"category": "account", "urgency": "low", "sentiment": "neutral"}',  # order_id missing: 3 of 4
        "no idea",  # unparsable: 0 of 4
        '{"category": "account", "urgency": "low", "order_id": null, "sentiment": "neutral"}',  # null id right
    ]
    references = [REF, REF, REF, REF_NO_ID, REF, REF_NO_ID]
    result = score(predictions, references)
    assert result["examples"] == 6
    assert result["format_valid"] == pytest.approx(3 / 6)
    assert result["parsed"] == pytest.approx(5 / 6)
    assert result["exact_match"] == pytest.approx(3 / 6)
    assert result["per_field"] == pytest.approx(
        {"category": 5 / 6, "urgency": 4 / 6, "order_id": 4 / 6, "sentiment": 5 / 6}
    )
    assert result["field_accuracy"] == pytest.approx((4 + 4 + 3 + 3 + 0 + 4) / 24)


def test_score_null_order_id_must_be_null_not_missing_or_string():
    predictions = [
        '{"category": "account", "urgency": "low", "order_id": "null", "sentiment": "neutral"}',
        '{"category": "account", "urgency": "low", "order_id": null, "sentiment": "neutral"}',
    ]
    result = score(predictions, [REF_NO_ID, REF_NO_ID])
    assert result["per_field"]["order_id"] == pytest.approx(0.5)


def test_score_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        score([GOOD], [REF, REF])


def test_bundled_data_sizes_and_labels():
    train = task.load_split("train")
    test = task.load_split("test")
    labels = task.load_test_labels()
    assert len(train) == 600 and len(test) == 120 and len(labels) == 120
    for record in train + test:
        assert list(record) == ["messages"]
        roles = [message["role"] for message in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        label = json.loads(record["messages"][2]["content"])
        assert tuple(label) == FIELDS
        assert task.is_valid_format(record["messages"][2]["content"])
        for field, allowed in ALLOWED.items():
            assert label[field] in allowed
        if label["order_id"] is not None:
            assert label["order_id"] in record["messages"][1]["content"]
    for record, label in zip(test, labels):
        assert json.loads(record["messages"][2]["content"]) == label


def test_bundled_data_covers_every_value():
    labels = [json.loads(record["messages"][2]["content"]) for record in task.load_split("train")]
    for field, allowed in ALLOWED.items():
        assert {label[field] for label in labels} == set(allowed)
    with_id = sum(label["order_id"] is not None for label in labels) / len(labels)
    assert 0.45 < with_id < 0.75


def test_test_messages_are_not_in_train():
    train_messages = {record["messages"][1]["content"] for record in task.load_split("train")}
    test_messages = [record["messages"][1]["content"] for record in task.load_split("test")]
    assert len(set(test_messages)) == len(test_messages)
    assert not train_messages & set(test_messages)


def test_generator_is_deterministic(tmp_path, monkeypatch):
    from honing.quickstart import make_data

    monkeypatch.setattr(make_data, "DATA_DIR", tmp_path)
    make_data.main()
    for name in ("train.jsonl", "test.jsonl", "test_labels.jsonl"):
        assert (tmp_path / name).read_bytes() == (task.DATA_DIR / name).read_bytes()


def test_task_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, honing.quickstart.task; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
