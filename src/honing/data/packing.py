"""Packing examples into fixed-length rows, and collating examples or rows into tensors.

A packed row holds several examples back to back. Position ids restart at 0 for every example,
and with no attention mask transformers (5.x, `masking_utils.find_packed_sequence_indices`)
builds a block-diagonal causal mask from them, so no token attends across an example boundary.
The first label of every example is IGNORE_INDEX: otherwise the loss would ask the model to
predict an example's first token from the previous example's last one.

torch is imported inside the collate functions only, so that importing honing.data stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from honing.data.types import IGNORE_INDEX, TokenizedExample


def pack(examples: Sequence[TokenizedExample], max_length: int, pad_id: int) -> list[dict[str, list[int]]]:
    """Greedy first-fit-decreasing into rows of exactly max_length tokens.

    Each row is {"input_ids", "labels", "position_ids", "seq_lens"}; seq_lens lists every
    segment's length including the padding segment at the end (so it sums to max_length, as
    varlen attention kernels want). Deterministic: ties in length keep input order.
    """
    if pad_id is None:
        raise ValueError("pack needs a pad id (the tokenizer's pad_token_id)")
    too_long = [len(e.input_ids) for e in examples if len(e.input_ids) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} examples are longer than max_length={max_length} (truncate before packing)")
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    bins = _first_fit([len(examples[i].input_ids) for i in order], max_length)
    return [_row([examples[order[j]] for j in members], max_length, pad_id) for members in bins]


def _first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` per bin, each item in the first bin with room.

    A segment tree over the bins' free space finds that bin in O(log n) instead of scanning
    every open bin (millions of examples make the scan quadratic).
    """
    size = 1
    while size < max(1, len(lengths)):
        size *= 2
    free = [0] * (2 * size)  # free[size + b] = room left in bin b; inner nodes hold the max below
    for b in range(size):
        free[size + b] = capacity
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    bins: list[list[int]] = []
    for item, length in enumerate(lengths):
        if length == 0:
            continue
        node = 1
        while node < size:  # descend to the leftmost bin with enough room
            node = 2 * node if free[2 * node] >= length else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(item)
        free[node] -= length
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def _row(members: list[TokenizedExample], max_length: int, pad_id: int) -> dict[str, list[int]]:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    seq_lens: list[int] = []
    for example in members:
        length = len(example.input_ids)
        input_ids += example.input_ids
        labels += [IGNORE_INDEX, *example.labels[1:]]
        position_ids += range(length)
        seq_lens.append(length)
    padding = max_length - len(input_ids)
    if padding:
        # Its own segment (positions from 0), so real tokens never attend to padding and vice versa.
        input_ids += [pad_id] * padding
        labels += [IGNORE_INDEX] * padding
        position_ids += range(padding)
        seq_lens.append(padding)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "seq_lens": seq_lens}


def collate_padded(examples: Sequence[TokenizedExample | dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch: input_ids, labels, attention_mask, position_ids, all (B, T) int64."""
    import torch

    rows = [_ids_and_labels(e) for e in examples]
    width = max(len(ids) for ids, _ in rows)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),  # (B, T)
        "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),  # (B, T)
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),  # (B, T)
    }
    for b, (ids, labels) in enumerate(rows):
        batch["input_ids"][b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch["labels"][b, : len(ids)] = torch.tensor(labels, dtype=torch.long)
        batch["attention_mask"][b, : len(ids)] = 1
    batch["position_ids"] = torch.arange(width, dtype=torch.long).expand(len(rows), width).clone()  # (B, T)
    return batch


def collate_packed(rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """Packed rows as (B, T) int64 input_ids, labels, position_ids; deliberately no attention_mask
    (with one, transformers would not build the per-example block-diagonal mask)."""
    import torch

    return {key: torch.tensor([row[key] for row in rows], dtype=torch.long) for key in ("input_ids", "labels", "position_ids")}


def _ids_and_labels(example: TokenizedExample | dict[str, Any]) -> tuple[list[int], list[int]]:
    if isinstance(example, TokenizedExample):
        return example.input_ids, example.labels
    return list(example["input_ids"]), list(example["labels"])
