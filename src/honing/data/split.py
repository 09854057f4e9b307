"""Deterministic train/validation split."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split_records(records: Sequence[T], validation_split: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, validation): a seeded permutation picks round(n × validation_split) records, at
    least one when validation_split > 0 and there are two or more records.

    A private `random.Random(seed)` is used, so the split depends only on the records' order
    and the seed, never on torch's or the global RNG state. Both parts keep the input order.
    """
    count = len(records)
    if validation_split <= 0 or count < 2:
        return list(records), []
    held_out = min(count - 1, max(1, round(count * validation_split)))
    chosen = set(random.Random(seed).sample(range(count), held_out))
    train = [record for index, record in enumerate(records) if index not in chosen]
    validation = [record for index, record in enumerate(records) if index in chosen]
    return train, validation
