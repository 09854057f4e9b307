"""Packing: full rows, restarting positions, masked first labels, and no attention across examples."""

from __future__ import annotations

import torch

from honing.data.packing import collate_packed, collate_padded, pack
from honing.data.types import IGNORE_INDEX, TokenizedExample

PAD = 2


def example(length: int, start: int) -> TokenizedExample:
    ids = list(range(start, start + length))
    return TokenizedExample(ids, [IGNORE_INDEX] * (length // 2) + ids[length // 2 :])


def test_rows_are_full_length_with_restarting_positions_and_a_padding_segment():
    examples = [example(5, 100), example(9, 200), example(3, 300), example(6, 400), example(2, 500)]
    rows = pack(examples, max_length=12, pad_id=PAD)

    # First-fit-decreasing: 9+3, then 6+5 (+1 padding), then 2 (+10 padding).
    assert [row["seq_lens"] for row in rows] == [[9, 3], [6, 5, 1], [2, 10]]
    for row in rows:
        assert all(len(row[key]) == 12 for key in ("input_ids", "labels", "position_ids"))
        assert sum(row["seq_lens"]) == 12
    second = rows[1]
    assert second["position_ids"] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0]
    assert second["input_ids"] == list(range(400, 406)) + list(range(100, 105)) + [PAD]
    # Each example's first label is masked, so nothing is predicted across a boundary.
    assert second["labels"][0] == IGNORE_INDEX and second["labels"][6] == IGNORE_INDEX
    assert second["labels"][3:6] == [403, 404, 405] and second["labels"][8:11] == [102, 103, 104]
    assert rows[2]["labels"][2:] == [IGNORE_INDEX] * 10 and rows[2]["input_ids"][2:] == [PAD] * 10
    assert rows[2]["position_ids"][2:] == list(range(10))


def test_packing_is_deterministic_and_keeps_every_example():
    examples = [example(n, 1000 * i + 10) for i, n in enumerate([7, 3, 7, 1, 12, 5, 5, 2, 9, 4])]
    rows = pack(examples, max_length=12, pad_id=PAD)
    assert rows == pack(examples, max_length=12, pad_id=PAD)
    packed = sorted(t for row in rows for t in row["input_ids"] if t != PAD)
    assert packed == sorted(t for e in examples for t in e.input_ids)
    assert [row["seq_lens"] for row in rows] == [[12], [9, 3], [7, 5], [7, 5], [4, 2, 1, 5]]


def test_collate_padded_right_pads():
    batch = collate_padded([example(3, 10), example(5, 20)], pad_id=PAD)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids"}
    assert all(t.shape == (2, 5) and t.dtype == torch.int64 for t in batch.values())
    assert batch["input_ids"][0].tolist() == [10, 11, 12, PAD, PAD]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 11, 12, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_collate_packed_has_no_attention_mask():
    batch = collate_packed(pack([example(3, 10), example(5, 20)], max_length=10, pad_id=PAD))
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.shape == (1, 10) and t.dtype == torch.int64 for t in batch.values())


def test_packed_logits_equal_logits_alone(tiny_model):
    """The reference: an example's logits inside a packed row are its logits on its own."""
    generator = torch.Generator().manual_seed(0)
    lengths = [17, 11, 23, 6, 14, 9]
    examples = []
    for length in lengths:
        ids = torch.randint(3, tiny_model.config.vocab_size, (length,), generator=generator).tolist()
        examples.append(TokenizedExample(ids, list(ids)))
    rows = pack(examples, max_length=32, pad_id=PAD)
    assert any(len(row["seq_lens"]) >= 3 for row in rows)  # some examples sit in the middle of a row
    batch = collate_packed(rows)

    tiny_model.eval()
    with torch.no_grad():
        packed_logits = tiny_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits  # (B, T, V)
        checked = 0
        for b, row in enumerate(rows):
            start = 0
            for length in row["seq_lens"]:
                ids = row["input_ids"][start : start + length]
                if ids[0] != PAD or length in lengths:
                    alone = tiny_model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]  # (T, V)
                    torch.testing.assert_close(packed_logits[b, start : start + length], alone, atol=1e-5, rtol=1e-5)
                    checked += 1
                start += length
    assert checked >= len(lengths)

    # Control: with an attention mask the block-diagonal mask is not built and examples leak into each other.
    with torch.no_grad():
        leaky = tiny_model(**batch_without_labels(batch), attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits
    assert not torch.allclose(leaky, packed_logits, atol=1e-3)


def batch_without_labels(batch):
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
