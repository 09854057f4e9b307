"""The data types that pass between the data layer, the stages and the training engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
"""Label value of a token the loss does not cover (prompt, padding, the first token of a packed example)."""


@dataclass
class TokenizedExample:
    """One training example. `labels[i]` is the target *at* position i (unshifted, the
    Hugging Face convention): the loss compares logits[i - 1] with labels[i]."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class Reject:
    """A record that did not validate, kept with where it came from."""

    file: str
    line: int
    reason: str
    record: Any = None

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class PreparedData:
    """What a stage trains and validates on, plus the evidence for the run record."""

    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    format: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    """One entry per data file: {"role": "train"|"validation", "path": ..., "sha256": ...}."""
    rejects: list[Reject] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    """records, rejected, truncated, train_examples, validation_examples, tokens, target_tokens, ..."""
