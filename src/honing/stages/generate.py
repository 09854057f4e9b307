"""`honing generate`: answer every prompt of a file and write the answers to a JSONL file.

    read prompts (file:line errors) ─▶ the model (local + adapter merged for speed, or an endpoint)
    ─▶ batched completions ─▶ output written atomically: each input record plus `response`
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from honing.config import GenerateConfig
from honing.data.prompts import read_prompts
from honing.errors import DataError
from honing.io import write_jsonl_atomic
from honing.ui import console


def generate_file(cfg: GenerateConfig) -> dict[str, Any]:
    from honing.models.chat import ChatModel

    pairs = read_prompts(cfg.prompts)
    output = Path(cfg.output)
    if output.suffix.lower() != ".jsonl":
        raise DataError(f"output {output} must be a .jsonl file")
    model = ChatModel.load(cfg.model, cfg.sampling, role="model", batch_size=cfg.batch_size, progress=True)
    started = time.perf_counter()
    completions = model.complete([p for _, p in pairs], chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
    elapsed = time.perf_counter() - started
    write_jsonl_atomic(output, ({**record, "response": completion.text} for (record, _), completion in zip(pairs, completions)))
    new_tokens = _new_tokens(model, completions)
    console.print(f"{len(completions)} answers in {elapsed:.1f} s ({len(completions) / elapsed:.2f} prompts/s, "
                  f"{new_tokens / elapsed:.0f} new tokens/s) → {output}")
    return {"output": str(output), "prompts": len(completions), "seconds": elapsed, "new_tokens": new_tokens}


def _new_tokens(model: Any, completions: list[Any]) -> int:
    """Tokens of the answers as written (re-encoded locally; an endpoint's own count otherwise)."""
    if model.tokenizer is None:
        return sum(c.completion_tokens for c in completions)
    return sum(len(model.tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in completions)


run = generate_file
