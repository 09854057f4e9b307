"""Format detection, canonical forms and record validation."""

from __future__ import annotations

import pytest

from honing.data.formats import RecordError, detect_format, normalize
from honing.errors import DataError


def test_detects_each_format(data_records, expected_format):
    for kind, records in data_records.items():
        assert detect_format(records[0]) == expected_format[kind]


def test_unknown_format_lists_known_formats_and_keys():
    with pytest.raises(DataError) as err:
        detect_format({"question": "?"})
    message = str(err.value)
    for piece in ("text {text}", "instruction", "messages", "conversations", "{prompt, chosen, rejected}"):
        assert piece in message


def test_alpaca_joins_instruction_and_input():
    got = normalize({"instruction": "Add.", "input": "2 and 3", "output": "5", "system": "Brief."}, "instruction")
    assert got == {
        "messages": [
            {"role": "system", "content": "Brief."},
            {"role": "user", "content": "Add.\n\n2 and 3"},
            {"role": "assistant", "content": "5"},
        ]
    }
    no_input = normalize({"instruction": "Hi.", "input": "", "output": "Hello"}, "instruction")
    assert no_input["messages"][0] == {"role": "user", "content": "Hi."}


def test_sharegpt_roles_are_mapped(data_records):
    got = normalize({"conversations": [{"from": "human", "value": "a"}, {"from": "chatgpt", "value": "b"},
                                       {"from": "user", "value": "c"}, {"from": "assistant", "value": "d"}]}, "sharegpt")
    assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user", "assistant"]
    assert normalize(data_records["sharegpt"][0], "sharegpt")["messages"][0] == {"role": "system", "content": "You help with billing."}


def test_preference_strings_and_lists(data_records):
    strings = normalize(data_records["preference_strings"][0], "preference")
    assert strings == {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Berlin."}],
    }
    lists = normalize(data_records["preference_messages"][0], "preference")
    assert lists["prompt"][0]["role"] == "system" and lists["chosen"] == [{"role": "assistant", "content": "It has lovely imagery."}]


def test_system_prompt_added_only_when_missing(data_records):
    plain = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert normalize(plain, "chat", system_prompt="S")["messages"][0] == {"role": "system", "content": "S"}
    has_one = data_records["chat"][0]
    assert normalize(has_one, "chat", system_prompt="S")["messages"][0]["content"] == "You are terse."
    pref = normalize({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference", system_prompt="S")
    assert pref["prompt"][0] == {"role": "system", "content": "S"}
    assert normalize({"text": "t"}, "text", system_prompt="S") == {"text": "t"}


def _chat(*turns):
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


@pytest.mark.parametrize(
    "record,fmt,problem",
    [
        ({"instruction": "x"}, "instruction", "missing field 'output'"),
        ({"instruction": "x", "output": "  "}, "instruction", "field 'output' is empty"),
        ({"instruction": 3, "output": "y"}, "instruction", "field 'instruction' must be a string, not int"),
        ({"text": ""}, "text", "field 'text' is empty"),
        ({"messages": "hi"}, "chat", "must be a list of messages, not str"),
        ({"messages": []}, "chat", "field 'messages' is empty"),
        (_chat(("user", "q"), ("robot", "a")), "chat", "unknown role 'robot'"),
        (_chat(("user", "q")), "chat", "no assistant message"),
        (_chat(("assistant", "a"), ("user", "q")), "chat", "must start with a user message"),
        (_chat(("system", "s"), ("assistant", "a")), "chat", "must start with a user message"),
        (_chat(("user", "q"), ("system", "s"), ("assistant", "a")), "chat", "a system message may only come first"),
        (_chat(("user", "q"), ("assistant", "a"), ("assistant", "b")), "chat", "two assistant messages in a row"),
        ({"messages": [{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}]}, "chat", "'content' must be a string"),
        ({"messages": [{"role": "user"}]}, "chat", "missing 'content'"),
        ({"conversations": [{"from": "bot", "value": "x"}]}, "sharegpt", "unknown role 'bot'"),
        ({"prompt": "q", "chosen": "a"}, "preference", "missing field 'rejected'"),
        ({"prompt": "q", "chosen": 1, "rejected": "b"}, "preference", "must be a string or a list of messages, not int"),
        ({"prompt": [{"role": "assistant", "content": "a"}], "chosen": "a", "rejected": "b"}, "preference", "must end with a user message"),
        ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "preference", "'chosen' must start with an assistant message"),
    ],
)
def test_invalid_records(record, fmt, problem):
    with pytest.raises(RecordError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        normalize(record, fmt)
