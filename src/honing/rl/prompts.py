"""The prompts RL samples from: loaded and tokenised as generation renders them (file:line errors
or a rejects file), split for validation, and walked in seeded epoch orders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.config import RLConfig
from honing.data.types import PreparedData, Reject
from honing.errors import DataError


@dataclass
class PromptItem:
    record: dict[str, Any]
    prompt: str | list[dict[str, Any]]
    ids: list[int]


def load_prompts(cfg: RLConfig, tokenizer: Any) -> PreparedData:
    """Prompt items for training and validation, each tokenised as generation renders it."""
    from honing.data.split import split_records
    from honing.rl.tasks import BUILTIN
    from honing.runs import file_sha256

    rejects: list[Reject] = []
    if cfg.data.prompts in BUILTIN:
        generated = BUILTIN[cfg.data.prompts](cfg.data.builtin_examples, cfg.data.split_seed)
        records = [(cfg.data.prompts, i + 1, r) for i, r in enumerate(generated)]
        digest = hashlib.sha256("".join(json.dumps(r, sort_keys=True) + "\n" for r in generated).encode()).hexdigest()
        inputs = [{"role": "prompts", "path": cfg.data.prompts, "sha256": digest,
                   "generator": {"examples": cfg.data.builtin_examples, "seed": cfg.data.split_seed}}]
    else:
        records = list(_read(cfg.data.prompts))
        inputs = [{"role": "prompts", "path": cfg.data.prompts, "sha256": file_sha256(cfg.data.prompts)}]
    train = _tokenise(records, cfg, tokenizer, rejects)
    if cfg.data.validation:
        validation = _tokenise(list(_read(cfg.data.validation)), cfg, tokenizer, rejects)
        inputs.append({"role": "validation", "path": cfg.data.validation, "sha256": file_sha256(cfg.data.validation)})
    else:
        train, validation = split_records(train, cfg.data.validation_split, cfg.data.split_seed)
    if not train:
        raise DataError(f"{cfg.data.prompts}: no prompt is left to train on")
    stats = {"records": len(records), "rejected": len(rejects), "train_examples": len(train),
             "validation_examples": len(validation), "prompt_tokens": sum(len(p.ids) for p in train)}
    return PreparedData(train, validation, "prompts", inputs, rejects, stats)


def _read(path: str):
    from honing.data.loading import read_records, read_text

    if not Path(path).exists():
        raise DataError(f"{path} does not exist")
    if Path(path).suffix.lower() == ".txt":
        for line, text in enumerate(read_text(path).splitlines(), start=1):
            if text.strip():
                yield path, line, {"prompt": text.strip()}
        return
    yield from read_records(path)


def _tokenise(records, cfg: RLConfig, tokenizer: Any, rejects: list[Reject]) -> list[PromptItem]:
    from honing.data.prompts import encode_prompts, prompt_of

    items = []
    for file, line, record in records:
        try:
            prompt = prompt_of(record, f"{file}:{line}")
            ids = encode_prompts(tokenizer, [prompt], system_prompt=cfg.data.system_prompt)[0]
            if len(ids) > cfg.data.max_prompt_tokens:
                raise DataError(f"{file}:{line}: the prompt has {len(ids)} tokens, more than "
                                f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}")
        except DataError as err:
            reason = str(err).removeprefix(f"{file}:{line}: ")
            if cfg.data.on_bad_record != "skip":
                raise DataError(f"{file}:{line}: {reason}") from None
            rejects.append(Reject(file, line, reason, record))
            continue
        items.append(PromptItem(record if isinstance(record, dict) else {"prompt": record}, prompt, ids))
    return items


def prompts_for_step(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """The prompts of an RL step: consecutive positions in seeded epoch orders, so a resumed run
    takes the same prompts as an uninterrupted one."""
    from honing.train.engine import epoch_order

    orders: dict[int, list[int]] = {}
    chosen = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, position = divmod(k, n_items)
        if epoch not in orders:
            orders[epoch] = epoch_order(n_items, seed, epoch)
        chosen.append(orders[epoch][position])
    return chosen
