"""Every data format that trains also generates and evaluates: prompt_of reads the prompt training would
have asked from a record of each format, with the one role map (ShareGPT's human/gpt/chatgpt included)."""

from __future__ import annotations

import pytest

from honing.data.formats import detect_format, normalize
from honing.data.prompts import ROLE_NAMES, as_messages, prompt_of, read_prompts
from honing.errors import DataError

# One record per training format (and the role spellings each allows), as a user would write it.
TRAINING_RECORDS = {
    "instruction": {"instruction": "Convert hours to minutes.", "input": "3 hours", "output": "180 minutes"},
    "instruction with system": {"instruction": "Name a prime.", "output": "7", "system": "Be brief."},
    "chat": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                          {"role": "assistant", "content": "Goodbye."}]},
    "sharegpt human/gpt": {"conversations": [{"from": "human", "value": "Name a colour."},
                                             {"from": "gpt", "value": "Red."}]},
    "sharegpt chatgpt": {"conversations": [{"from": "system", "value": "Answer in French."},
                                           {"from": "user", "value": "Name a colour."},
                                           {"from": "chatgpt", "value": "Rouge."}]},
    "sharegpt with system field": {"system": "Be terse.", "conversations": [{"from": "human", "value": "Hi"},
                                                                           {"from": "assistant", "value": "Hi."}]},
    "chat with a stray system field": {"system": "Ignored by training.",
                                       "messages": [{"role": "user", "content": "Hi"},
                                                    {"role": "assistant", "content": "Hello."}]},
    "instruction with a blank input": {"instruction": "Name a prime.", "input": "   ", "output": "7"},
    "preference (string prompt)": {"prompt": "Pick a number.", "chosen": "4", "rejected": "no"},
    "preference (messages)": {"prompt": [{"role": "user", "content": "Pick a number."}],
                              "chosen": [{"role": "assistant", "content": "4"}], "rejected": "no"},
}


def trained_prompt(record: dict) -> list[dict[str, str]]:
    """The conversation training sees before the answer it learns."""
    canonical = normalize(record, detect_format(record))
    if "prompt" in canonical:  # preference: the prompt is its own field
        return canonical["prompt"]
    return canonical["messages"][:-1]


@pytest.mark.parametrize("name", list(TRAINING_RECORDS))
def test_a_record_that_trains_also_generates_and_evaluates(name):
    record = TRAINING_RECORDS[name]
    prompt = prompt_of(record, f"{name}:1")
    assert as_messages(prompt) == trained_prompt(record)


def test_the_one_role_map_covers_training_and_generation():
    for spelling, role in ROLE_NAMES.items():
        record = {"conversations": [{"from": "user", "value": "q"}, {"from": spelling, "value": "a"}]}
        if role != "assistant":
            continue
        assert normalize(record, "sharegpt")["messages"][-1]["role"] == "assistant"
        assert prompt_of(record, "x") == [{"role": "user", "content": "q"}]
    with pytest.raises(DataError, match="x:3: each message needs a role"):
        prompt_of({"conversations": [{"from": "robot", "value": "q"}]}, "x:3")


def test_read_prompts_reads_every_format(tmp_path):
    import json

    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TRAINING_RECORDS.values()))
    pairs = read_prompts(path)
    assert [record for record, _ in pairs] == list(TRAINING_RECORDS.values())
    assert [as_messages(p) for _, p in pairs] == [trained_prompt(r) for r in TRAINING_RECORDS.values()]
