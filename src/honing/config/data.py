"""Where training data comes from and how it becomes token sequences."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from honing.config.base import StrictModel


class DataConfig(StrictModel):
    """Where the data comes from and how it becomes token sequences."""

    train: str | None = None
    """Training data: a .jsonl/.json/.csv/.parquet/.txt file, a directory of them, or a `datasets` save_to_disk directory."""
    validation: str | None = None
    """Validation data; null splits `validation_split` off the training data, deterministically."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt", "preference"] = "auto"
    """Record format: text {text}, instruction {instruction,input,output} (Alpaca), chat {messages},
    sharegpt {conversations}, preference {prompt,chosen,rejected}; auto detects it from the first record."""
    text_field: str = "text"
    """Field holding the document in text data (not used for .txt files)."""
    validation_split: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of the training records held out for validation when no validation file is given."""
    split_seed: int = 0
    """Seed of the train/validation split (independent of the training seed)."""
    max_length: int = Field(1024, ge=8)
    """Longest token sequence; longer examples are truncated (and counted), or rejected if no target token survives."""
    packing: bool = False
    """Pack several examples into each row of max_length tokens (position ids restart per example, no attention across)."""
    train_on: Literal["all_assistant", "last_assistant", "everything"] = "all_assistant"
    """Which tokens the loss covers: every assistant turn with its end-of-turn token, only the last one, or all tokens."""
    system_prompt: str | None = None
    """System message added to conversations that have none."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """fail: stop at the first invalid record (file:line); skip: write it to rejects.jsonl in the run directory and go on."""
    cache_dir: str | None = None
    """Where tokenised data is cached; default ~/.cache/honing/data (HONING_CACHE overrides)."""
