"""Deduplication: exact after normalisation, MinHash LSH near duplicates, contamination checks, parallel signatures."""

from __future__ import annotations

import multiprocessing
import random
import re
from functools import partial

import numpy as np
import pytest
from pydantic import ValidationError

from honing.data.dedup import (
    DedupConfig,
    Deduplicator,
    band_probability,
    fingerprint,
    minhash_signature,
    normalize_for_hash,
    record_dedup_text,
    shingles,
)

VOCABULARY = [f"word{i}" for i in range(500)] + "the of and to in a is was for on that with as by at from".split()


def paragraph(seed: int, words: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def with_changed_words(text: str, positions: list[int]) -> str:
    words = text.split()
    for position in positions:
        words[position] = "CHANGED"
    return " ".join(words)


@pytest.fixture(scope="module")
def default_dedup_cfg() -> DedupConfig:
    return DedupConfig()


def test_normalisation_collapses_trivial_variations():
    assert normalize_for_hash("Hello,  World!") == "hello world"
    assert normalize_for_hash("  HELLO\tworld…  ") == "hello world"
    assert normalize_for_hash("Ｈｅｌｌｏ — «world»") == "hello world"


def test_exact_duplicates_after_normalisation():
    dedup = Deduplicator(DedupConfig(near=False))
    assert not dedup.add("a", "Hello,  World!").is_duplicate
    result = dedup.add("b", "hello world")
    assert (result.is_duplicate, result.kind, result.of, result.similarity) == (True, "exact", "a", 1.0)
    assert not dedup.add("c", "hello there world").is_duplicate
    assert dedup.counts == {"added": 3, "kept": 2, "exact": 1, "near": 0}
    assert len(dedup) == 2


def test_near_duplicate_caught_and_unrelated_text_kept(default_dedup_cfg):
    dedup = Deduplicator(default_dedup_cfg)
    original = paragraph(0)
    assert not dedup.add("original", original).is_duplicate
    near = dedup.add("edited", with_changed_words(original, [40, 200]))
    assert (near.is_duplicate, near.kind, near.of) == (True, "near", "original")
    assert 0.8 <= near.similarity < 1.0
    assert not dedup.add("unrelated", paragraph(1)).is_duplicate
    assert dedup.counts == {"added": 3, "kept": 2, "exact": 0, "near": 1}


def test_duplicates_are_not_indexed_so_later_copies_point_to_the_first(default_dedup_cfg):
    dedup = Deduplicator(default_dedup_cfg)
    original = paragraph(2)
    dedup.add("first", original)
    dedup.add("second", with_changed_words(original, [10]))
    assert dedup.add("third", with_changed_words(original, [10, 250])).of == "first"
    assert len(dedup) == 1


def test_check_finds_contamination_without_indexing(default_dedup_cfg):
    dedup = Deduplicator(default_dedup_cfg)
    train = [paragraph(seed) for seed in range(10, 15)]
    for index, text in enumerate(train):
        dedup.add(f"train:{index}", text)
    leaked = dedup.check(with_changed_words(train[3], [5, 150]))
    assert (leaked.is_duplicate, leaked.kind, leaked.of, leaked.of_group) == (True, "near", "train:3", "train")
    assert dedup.check(train[1].upper() + "!").kind == "exact"
    assert not dedup.check(paragraph(99)).is_duplicate
    assert len(dedup) == 5 and dedup.counts["added"] == 5
    # Within-validation duplicates: add with a group; of_group tells where the original is.
    assert not dedup.add("val:0", paragraph(50), group="validation").is_duplicate
    assert dedup.add("val:1", paragraph(50), group="validation").of_group == "validation"


def test_short_texts_use_character_shingles():
    assert shingles("what is 22", 5) == {"what ", "hat i", "at is", "t is ", " is 2", "is 22"}
    assert shingles("hi", 5) == {"hi"}
    assert shingles("", 5) == set()
    assert shingles("a b c d e f", 5) == {"a b c d e", "b c d e f"}


def test_empty_texts_are_never_near_duplicates():
    dedup = Deduplicator(DedupConfig(exact=False, bands=16, rows=8))
    dedup.add("a", "!!!")
    assert not dedup.add("b", "...").is_duplicate


def test_signatures_are_deterministic_per_seed(default_dedup_cfg):
    text = paragraph(3)
    first = minhash_signature(text, default_dedup_cfg)
    assert first.dtype == np.uint64 and first.shape == (128,)
    assert np.array_equal(first, minhash_signature(text, default_dedup_cfg))
    other_seed = minhash_signature(text, DedupConfig(seed=2))
    assert not np.array_equal(first, other_seed)


def test_signatures_from_a_process_pool_equal_in_process(default_dedup_cfg):
    texts = [paragraph(seed, words=60) for seed in range(8)] + ["short one", ""]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pooled = pool.map(partial(fingerprint, cfg=default_dedup_cfg), texts, chunksize=3)
    for text, found in zip(texts, pooled):
        local = fingerprint(text, default_dedup_cfg)
        assert found.exact_hash == local.exact_hash
        assert np.array_equal(found.signature, minhash_signature(text, default_dedup_cfg))
    # The parallel path gives the same decisions as add(key, text).
    serial, parallel = Deduplicator(default_dedup_cfg), Deduplicator(default_dedup_cfg)
    stream = texts + [with_changed_words(texts[0], [3]), texts[4]]
    prints = pooled + [fingerprint(t, default_dedup_cfg) for t in stream[len(texts):]]
    for index, (text, found) in enumerate(zip(stream, prints)):
        assert serial.add(str(index), text) == parallel.add_signature(str(index), found.exact_hash, found.signature)


def test_band_probability_and_documented_table(default_dedup_cfg):
    dedup = Deduplicator(default_dedup_cfg)
    assert (dedup.bands, dedup.rows) == (9, 13)
    assert band_probability(0.8, 9, 13) == pytest.approx(1 - (1 - 0.8**13) ** 9)
    assert band_probability(0.0, 9, 13) == 0.0 and band_probability(1.0, 9, 13) == 1.0
    assert dedup.params()["bands"] == 9 and dedup.params()["catch_probability"]["0.9"] == pytest.approx(0.9286)
    # The table in DedupConfig.threshold's docstring is what the formula gives.
    doc = DedupConfig.model_fields["threshold"].description
    table = re.findall(r"(\d\.\d+): (\d+\.\d)%", doc)
    assert len(table) >= 6
    for s, percent in table:
        assert round(100 * band_probability(float(s), 9, 13), 1) == float(percent)


def test_explicit_bands_and_rows():
    dedup = Deduplicator(DedupConfig(bands=32, rows=4))
    assert (dedup.bands, dedup.rows) == (32, 4)
    with pytest.raises(ValidationError, match="both"):
        DedupConfig(bands=8)
    with pytest.raises(ValidationError, match="num_perm"):
        DedupConfig(bands=20, rows=10)
    with pytest.raises(ValidationError, match="nothing to do"):
        DedupConfig(exact=False, near=False)
    for name, info in DedupConfig.model_fields.items():
        assert info.description, name


def test_record_dedup_text_by_fields():
    record = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
    assert record_dedup_text(record) == "Name a colour.\n\nBlue."
    assert record_dedup_text(record, ["instruction"]) == "Name a colour."
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert record_dedup_text(chat) == "Hi\nHello"


def test_band_index_finds_what_datasketch_lsh_finds():
    """The compact band index returns the same candidates as datasketch's MinHashLSH on the same bands."""
    from datasketch import MinHashLSH

    from honing.data.dedup import SCHEME, _BandIndex

    rng = np.random.default_rng(0)
    bands, rows, num_perm = 9, 13, 128
    base = rng.integers(0, 2**63, size=(40, num_perm), dtype=np.uint64)
    queries = base.copy()
    # Each query shares a random subset of whole bands with one stored signature.
    for i, query in enumerate(queries):
        changed = rng.random(bands) < 0.8
        for band in np.flatnonzero(changed):
            query[band * rows:(band + 1) * rows] = rng.integers(0, 2**63, size=rows, dtype=np.uint64)
    ours, theirs = _BandIndex(bands, rows), MinHashLSH(num_perm=num_perm, params=(bands, rows))
    for index, signature in enumerate(base):
        ours.insert(index, signature)
        from datasketch import MinHash

        theirs.insert(index, MinHash(num_perm=num_perm, hashvalues=signature, scheme=SCHEME), check_duplication=False)
    found_any = 0
    for query in queries:
        from datasketch import MinHash

        expected = set(theirs.query(MinHash(num_perm=num_perm, hashvalues=query, scheme=SCHEME)))
        assert ours.query(query) == expected
        found_any += bool(expected)
    assert 0 < found_any < len(queries)  # both outcomes occur
