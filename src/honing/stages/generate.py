"""`honing generate`: answer every prompt of a file and write the answers to a JSONL file.

    read prompts (file:line errors) ─▶ model (+ adapter, merged for speed) ─▶ batched generation
    ─▶ output written atomically: each input record plus `response`
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from honing.config import GenerateConfig
from honing.errors import DataError
from honing.ui import console


def prompt_of(record: Any, where: str) -> str | list[dict[str, Any]]:
    """The prompt in a record: `prompt`, `messages` (a trailing assistant answer is dropped) or
    `instruction` (+ `input`, Alpaca)."""
    if isinstance(record, dict):
        if isinstance(record.get("prompt"), (str, list)) and record["prompt"]:
            return record["prompt"]
        messages = record.get("messages") or record.get("conversations")
        if isinstance(messages, list) and messages:
            turns = [_turn(m, where) for m in messages]
            if turns[-1]["role"] == "assistant":  # a training record: answer its prompt afresh
                turns = turns[:-1]
            if turns:
                return turns
        if isinstance(record.get("instruction"), str) and record["instruction"].strip():
            given = record.get("input") or ""
            return record["instruction"] + (f"\n\n{given}" if given else "")
    raise DataError(f"{where}: no prompt found; give `prompt`, `messages` or `instruction` in each record")


_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


def _turn(message: Any, where: str) -> dict[str, str]:
    """A chat (role/content) or ShareGPT (from/value) message as role/content."""
    if isinstance(message, dict):
        role = _ROLES.get(message.get("role", message.get("from")))
        content = message.get("content", message.get("value"))
        if role and isinstance(content, str):
            return {"role": role, "content": content}
    raise DataError(f"{where}: each message needs a role (system/user/assistant) and string content, got {message!r:.80}")


def read_prompts(path: str | Path) -> list[tuple[dict[str, Any], str | list[dict[str, Any]]]]:
    """(record, prompt) pairs: .txt has one prompt per non-empty line, other files one per record."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    pairs = []
    if path.suffix.lower() == ".txt":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                pairs.append(({"prompt": line.strip()}, line.strip()))
    else:
        from honing.data.loading import read_records

        for file, line, record in read_records(path):
            pairs.append((record, prompt_of(record, f"{file}:{line}")))
    if not pairs:
        raise DataError(f"{path} holds no prompts")
    return pairs


def load_for_inference(model_cfg, adapter: str | None):
    """The model to answer with: the configured model, with an adapter merged in when given."""
    from honing.models.load import load_model
    from honing.models.save import load_adapter_model

    if adapter:
        return load_adapter_model(model_cfg, adapter, merge=True)
    return load_model(model_cfg)


def generate_file(cfg: GenerateConfig) -> dict[str, Any]:
    from honing.generate import generate

    pairs = read_prompts(cfg.prompts)
    output = Path(cfg.output)
    if output.suffix.lower() != ".jsonl":
        raise DataError(f"output {output} must be a .jsonl file")
    loaded = load_for_inference(cfg.model, cfg.adapter)
    started = time.perf_counter()
    answers = generate(loaded.model, loaded.tokenizer, [p for _, p in pairs], cfg.sampling, batch_size=cfg.batch_size,
                       chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
    elapsed = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for (record, _), answer in zip(pairs, answers):
            handle.write(json.dumps({**record, "response": answer}, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    new_tokens = sum(len(loaded.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    console.print(f"{len(answers)} answers in {elapsed:.1f} s ({len(answers) / elapsed:.2f} prompts/s, "
                  f"{new_tokens / elapsed:.0f} new tokens/s) → {output}")
    return {"output": str(output), "prompts": len(answers), "seconds": elapsed, "new_tokens": new_tokens}


run = generate_file
