"""From data files to tokenised training and validation examples, with stats and evidence.

    prepare_data(cfg.data, tokenizer, purpose="sft")  ->  PreparedData

Phases: hash the inputs and look in the cache; load and validate the records; split off
validation (or load the validation file); tokenise (conversations with their loss mask, or
text chunks); count; cache. Packing is left to the engine: it depends on the batch layout,
is cheap, and keeps cached examples reusable with packing on or off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from honing.config.data import DataConfig
from honing.data import cache
from honing.data.formats import CONVERSATION_FORMATS, FORMAT_KEYS
from honing.data.loading import Sourced, load_sourced
from honing.data.split import split_records
from honing.data.templating import tokenize_conversation, tokenize_text
from honing.data.types import PreparedData, Reject, TokenizedExample
from honing.errors import DataError

logger = logging.getLogger(__name__)

PURPOSES = ("sft", "pretrain")


def prepare_data(cfg: DataConfig, tokenizer: Any, *, purpose: str = "sft") -> PreparedData:
    """Training and validation examples for `purpose` (sft: conversations; pretrain: text)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    inputs = _inputs(cfg)
    key = _cache_key(cfg, tokenizer, purpose, inputs)
    root = cache.cache_root(cfg.cache_dir)
    cached = cache.load(root, key, ("train", "validation"))
    if cached is not None:
        splits, meta = cached
        logger.info("tokenised data from the cache (%s)", cache.cache_file(root, key))
        rejects = [Reject(**r) for r in meta["rejects"]]
        stats = {**meta["stats"], "cache_hit": True}
        return PreparedData(splits["train"], splits["validation"], meta["format"], inputs, rejects, stats)

    train_items, validation_items, fmt, rejects, validation_source = _load(cfg, purpose)
    train = _tokenize_all(train_items, tokenizer, cfg, purpose, rejects)
    validation = _tokenize_all(validation_items, tokenizer, cfg, purpose, rejects)
    if not train:
        raise DataError(f"{cfg.train}: no training example is left after tokenisation; the first problem: {rejects[0].where()}: {rejects[0].reason}")
    stats = _stats(train, validation, len(train_items) + len(validation_items), rejects, fmt, purpose, cfg, validation_source)
    _log(stats, cfg)
    meta = {"format": fmt, "stats": {**stats, "cache_hit": False}, "rejects": [vars(r) for r in rejects]}
    cache.save(root, key, {"train": train, "validation": validation}, meta)
    return PreparedData(train, validation, fmt, inputs, rejects, {**stats, "cache_hit": False})


# --------------------------------------------------------------------------- phases


def _inputs(cfg: DataConfig) -> list[dict[str, Any]]:
    if not cfg.train:
        raise DataError("data.train is required: the path of the training data")
    inputs = []
    for role, path in (("train", cfg.train), ("validation", cfg.validation)):
        if path is None:
            continue
        if not Path(path).exists():
            raise DataError(f"{path} does not exist (data.{role})")
        inputs.append({"role": role, "path": str(path), "sha256": cache.path_sha256(path)})
    return inputs


def _cache_key(cfg: DataConfig, tokenizer: Any, purpose: str, inputs: list[dict[str, Any]]) -> str:
    return cache.cache_key(
        inputs=[(item["role"], item["sha256"]) for item in inputs],
        tokenizer=cache.tokenizer_fingerprint(tokenizer),
        chat_template=getattr(tokenizer, "chat_template", None),
        purpose=purpose,
        format=cfg.format,
        text_field=cfg.text_field,
        max_length=cfg.max_length,
        train_on=cfg.train_on,
        system_prompt=cfg.system_prompt,
        on_bad_record=cfg.on_bad_record,
        # The split only matters when it happens.
        split=None if cfg.validation else (cfg.validation_split, cfg.split_seed),
    )


def _load(cfg: DataConfig, purpose: str) -> tuple[list[Sourced], list[Sourced], str, list[Reject], str]:
    options = {"on_bad_record": cfg.on_bad_record, "text_field": cfg.text_field, "system_prompt": cfg.system_prompt}
    train, fmt, rejects = load_sourced(cfg.train, cfg.format, **options)
    _check_format(fmt, purpose, cfg.train)
    if cfg.validation:
        # The validation file must hold the same kind of records as the training file.
        validation, _, validation_rejects = load_sourced(cfg.validation, fmt, **options)
        return train, validation, fmt, rejects + validation_rejects, "file"
    train, validation = split_records(train, cfg.validation_split, cfg.split_seed)
    return train, validation, fmt, rejects, "split" if validation else "none"


def _check_format(fmt: str, purpose: str, path: str) -> None:
    if purpose == "sft" and fmt not in CONVERSATION_FORMATS:
        hint = "train on it with `honing pretrain`" if fmt == "text" else "it is for preference training (dpo)"
        raise DataError(
            f"{path}: sft needs instruction {FORMAT_KEYS['instruction']}, chat {FORMAT_KEYS['chat']} or "
            f"sharegpt {FORMAT_KEYS['sharegpt']} records, but this is {fmt} data; {hint}"
        )
    if purpose == "pretrain" and fmt != "text":
        raise DataError(f"{path}: pretrain reads text records {FORMAT_KEYS['text']}, but this is {fmt} data")


def _tokenize_all(
    items: list[Sourced], tokenizer: Any, cfg: DataConfig, purpose: str, rejects: list[Reject]
) -> list[TokenizedExample]:
    examples: list[TokenizedExample] = []
    for item in items:
        try:
            if purpose == "pretrain":
                examples += tokenize_text(tokenizer, item.record["text"], cfg.max_length)
            else:
                examples.append(
                    tokenize_conversation(tokenizer, item.record["messages"], train_on=cfg.train_on, max_length=cfg.max_length)
                )
        except ValueError as err:  # PromptTooLong, or a template that hides an assistant turn
            reject = Reject(item.file, item.line, str(err), item.record)
            if cfg.on_bad_record != "skip":
                raise DataError(f"{reject.where()}: {reject.reason}") from None
            rejects.append(reject)
    return examples


def _stats(
    train: list[TokenizedExample],
    validation: list[TokenizedExample],
    records: int,
    rejects: list[Reject],
    fmt: str,
    purpose: str,
    cfg: DataConfig,
    validation_source: str,
) -> dict[str, Any]:
    tokens = sum(len(e.input_ids) for e in train)
    target_tokens = sum(e.target_tokens for e in train)
    return {
        "format": fmt,
        "purpose": purpose,
        "records": records,
        "rejected": len(rejects),
        "truncated": sum(e.truncated for e in train) + sum(e.truncated for e in validation),
        "train_examples": len(train),
        "validation_examples": len(validation),
        "validation": validation_source if validation else "none",
        "validation_empty": not validation,
        "tokens": tokens,
        "target_tokens": target_tokens,
        "masked_share": round(1 - target_tokens / tokens, 4) if tokens else 0.0,
        "validation_tokens": sum(len(e.input_ids) for e in validation),
        "validation_target_tokens": sum(e.target_tokens for e in validation),
        "max_length": cfg.max_length,
        "train_on": "everything" if purpose == "pretrain" else cfg.train_on,
    }


def _log(stats: dict[str, Any], cfg: DataConfig) -> None:
    logger.info(
        "%s data: %d records (%d rejected) -> %d train / %d validation examples, %d tokens, %d trained (%.0f%% masked)",
        stats["format"], stats["records"], stats["rejected"], stats["train_examples"], stats["validation_examples"],
        stats["tokens"], stats["target_tokens"], 100 * stats["masked_share"],
    )
    if stats["truncated"]:
        # The stage prints this to the user (and records it in run.json); here it is for library callers.
        logger.info("%d examples were longer than data.max_length=%d and were truncated", stats["truncated"], cfg.max_length)
    if stats["validation_empty"]:
        logger.info("no validation examples (data.validation unset and data.validation_split=%s); validation is skipped", cfg.validation_split)
