"""Distillation: the teacher's answer to every prompt of a file, one batch at a time.

Prompts are answered in file order; state.json records how many are done, so a resumed run
starts at the first unanswered prompt. An empty answer is dropped (rule empty) into
dropped.jsonl, never silently.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from honing.errors import DataError
from honing.data.prompts import as_messages, read_prompts
from honing.config.synth import SynthConfig
from honing.synth.selfinstruct import derive_seed
from honing.interrupt import StopRequest
from honing.synth.store import SynthStore
from honing.ui import console

TEMPLATE = "distill@1"
"""The prompt goes to the teacher as it is (plus system_prompt when it has none)."""


def load_prompts(cfg: SynthConfig) -> list[tuple[dict[str, Any], Any]]:
    """(record, prompt) pairs; with format=alpaca every prompt must be one user turn."""
    pairs = read_prompts(cfg.prompts)
    if cfg.format == "alpaca":
        for number, (_, prompt) in enumerate(pairs, start=1):
            if isinstance(prompt, list) and len([m for m in prompt if m["role"] != "system"]) != 1:
                raise DataError(f"{cfg.prompts}: prompt {number} has several turns and cannot be written as an "
                                "Alpaca record; use format=chat")
    return pairs


def to_record(cfg: SynthConfig, record: dict[str, Any], prompt: Any, answer: str,
              provenance: dict[str, Any]) -> dict[str, Any]:
    if cfg.format == "chat":
        messages = as_messages(prompt, cfg.system_prompt)
        return {"messages": [*messages, {"role": "assistant", "content": answer}], "_provenance": provenance}
    if isinstance(record.get("instruction"), str) and record["instruction"].strip() and not record.get("prompt"):
        instruction, given = record["instruction"], str(record.get("input") or "")
    elif isinstance(prompt, str):
        instruction, given = prompt, ""
    else:
        instruction, given = next(m["content"] for m in prompt if m["role"] != "system"), ""
    return {"instruction": instruction, "input": given, "output": answer, "_provenance": provenance}


def distill(cfg: SynthConfig, teacher: Any, judge: Any, store: SynthStore, state: dict[str, Any],
            stop: StopRequest) -> tuple[dict[str, Any], bool]:
    """Answer prompts batch by batch until all are done or a stop is requested; (state, finished)."""
    pairs = load_prompts(cfg)
    while state["done"] < len(pairs) and not stop.requested:
        start = state["done"]
        batch = pairs[start:start + cfg.batch_size]
        conversations = [as_messages(prompt, cfg.system_prompt) for _, prompt in batch]
        answers = teacher.texts(conversations, seed=derive_seed(cfg.seed, "distill", start))
        kept, dropped = [], []
        for offset, ((record, prompt), answer) in enumerate(zip(batch, answers)):
            number = start + offset
            if not answer.strip():
                dropped.append({"reason": "empty", "prompt_index": number, "prompt": prompt})
                continue
            provenance = {"method": "distill", "teacher": teacher.identity, "template": TEMPLATE, "seed": cfg.seed,
                          "prompt_index": number, "judge_score": None}
            kept.append(to_record(cfg, record, prompt, answer.strip(), provenance))
        counts = Counter(state["dropped"])
        counts.update(d["reason"] for d in dropped)
        state = {**state, "done": start + len(batch), "kept": state["kept"] + len(kept),
                 "dropped": dict(sorted(counts.items()))}
        store.commit(kept, dropped, state)
        console.print(f"answered {state['done']}/{len(pairs)} prompts ({state['kept']} kept)")
    return state, state["done"] >= len(pairs)
