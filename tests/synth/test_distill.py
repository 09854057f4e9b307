"""honing.synth.distill: a scripted teacher answers every prompt in file order, batch by batch; empty
answers are dropped with a reason, and a resumed run starts at the first unanswered prompt."""

from __future__ import annotations

import json

import pytest

from honing.config.synth import SynthConfig
from honing.errors import DataError
from honing.interrupt import StopRequest
from honing.models.chat import ChatModel
from honing.synth.distill import TEMPLATE, distill, load_prompts
from honing.synth.selfinstruct import derive_seed
from honing.synth.store import SynthStore

FRESH = {"done": 0, "kept": 0, "dropped": {}}


def _teacher(seen: list):
    def answer(conversation, seed):
        seen.append((conversation, seed))
        question = conversation[-1]["content"]
        return "" if question == "skip me" else f"answer: {question.upper()}"

    return ChatModel.scripted(answer, name="teacher-script", role="teacher")


def _cfg(tmp_path, lines, **update) -> SynthConfig:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SynthConfig(method="distill", prompts=str(prompts), batch_size=2, seed=5, **update)


def test_every_prompt_answered_in_order_and_empty_answers_dropped(tmp_path):
    cfg = _cfg(tmp_path, ["one", "skip me", "three"])
    store, seen = SynthStore(tmp_path / "run"), []
    state, finished = distill(cfg, _teacher(seen), None, store, dict(FRESH), StopRequest())
    assert finished and state["done"] == 3 and state["kept"] == 2 and state["dropped"] == {"empty": 1}
    records = store.kept_records()
    assert [(r["instruction"], r["input"], r["output"]) for r in records] == [("one", "", "answer: ONE"),
                                                                            ("three", "", "answer: THREE")]
    assert records[1]["_provenance"] == {"method": "distill", "teacher": {"kind": "scripted", "name": "teacher-script"},
                                         "template": TEMPLATE, "seed": 5, "prompt_index": 2, "judge_score": None}
    dropped = [json.loads(line) for line in store.dropped_path.read_text().splitlines()]
    assert dropped == [{"reason": "empty", "prompt_index": 1, "prompt": "skip me"}]
    # two batches (2 + 1), each with the seed derived from where it starts
    assert [seed for _, seed in seen] == [derive_seed(5, "distill", 0)] * 2 + [derive_seed(5, "distill", 2)]


def test_chat_format_keeps_the_conversation_with_the_system_prompt(tmp_path):
    cfg = _cfg(tmp_path, ["hi"], format="chat", system_prompt="be brief")
    store, seen = SynthStore(tmp_path / "run"), []
    distill(cfg, _teacher(seen), None, store, dict(FRESH), StopRequest())
    [record] = store.kept_records()
    assert record["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "answer: HI"}]
    assert seen[0][0] == record["messages"][:2]  # what the teacher was sent


def test_resume_starts_at_the_first_unanswered_prompt(tmp_path):
    cfg = _cfg(tmp_path, ["a", "b", "c", "d", "e"])
    store = SynthStore(tmp_path / "run")
    stop = StopRequest()
    seen: list = []
    teacher = _teacher(seen)

    def answer_then_interrupt(conversation, seed):  # Ctrl-C while the first batch is being answered
        stop.requested = True
        return f"answer: {conversation[-1]['content'].upper()}"

    interrupted = ChatModel.scripted(answer_then_interrupt, name="teacher-script", role="teacher")
    state, finished = distill(cfg, interrupted, None, store, dict(FRESH), stop)
    assert not finished and state["done"] == 2
    resumed_store = SynthStore(tmp_path / "run")
    resumed_state = resumed_store.load_state()
    seen.clear()
    state, finished = distill(cfg, teacher, None, resumed_store, resumed_state, StopRequest())
    assert finished and state["done"] == 5 and state["kept"] == 5
    assert [conv[-1]["content"] for conv, _ in seen] == ["c", "d", "e"]
    assert [r["instruction"] for r in resumed_store.kept_records()] == ["a", "b", "c", "d", "e"]


def test_alpaca_rejects_multi_turn_prompts(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                                {"role": "user", "content": "c"}]}) + "\n")
    with pytest.raises(DataError, match="several turns"):
        load_prompts(SynthConfig(method="distill", prompts=str(prompts)))
    assert len(load_prompts(SynthConfig(method="distill", prompts=str(prompts), format="chat"))) == 1
