"""Retrieval metrics and overlap groundedness against hand-computed values."""

from __future__ import annotations

import math

import pytest

from honing.rag.metrics import groundedness, mrr, ndcg_at_k, recall_at_k, retrieval_scores


def test_recall_at_k():
    retrieved = ["a#0", "b#1", "c#0", "a#2"]
    assert recall_at_k(retrieved, {"b#1", "a#2"}, 2) == 0.5
    assert recall_at_k(retrieved, {"b#1", "a#2"}, 4) == 1.0
    assert recall_at_k(retrieved, {"z#9"}, 4) == 0.0


def test_mrr_is_one_over_the_first_gold_rank():
    assert mrr(["x", "y", "g"], {"g"}) == pytest.approx(1 / 3)
    assert mrr(["g", "x"], {"g", "x"}) == 1.0
    assert mrr(["x"], {"g"}) == 0.0


def test_ndcg_by_hand():
    # gold {g1, g2}; retrieved g1 at rank 2, g2 at rank 3: DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / 2) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "g1", "g2"], {"g1", "g2"}, 3) == pytest.approx(expected)
    assert ndcg_at_k(["g1", "g2", "x"], {"g1", "g2"}, 3) == pytest.approx(1.0)
    # k cuts: only g1 counts at k=2, the ideal for k=2 still has two gold ids
    assert ndcg_at_k(["x", "g1", "g2"], {"g1", "g2"}, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_gold_sources_compare_with_each_chunks_source_once():
    retrieved = ["docs/a.md#3", "docs/a.md#1", "docs/b.md#0"]
    scores = retrieval_scores(retrieved, ["docs/b.md"], 2)
    # sources: a, a, b -> deduplicated a, b: b is at rank 2
    assert scores == {"recall@2": 1.0, "mrr": 0.5, "ndcg@2": pytest.approx(1 / math.log2(3))}
    assert retrieval_scores(retrieved, ["docs/a.md#1"], 1) == {"recall@1": 0.0, "mrr": 0.5, "ndcg@1": 0.0}


def test_groundedness_counts_sentences_mostly_found_in_the_retrieved_text():
    retrieved = ["The warranty lasts 18 months from purchase.", "Water damage is not covered."]
    answer = ("The warranty lasts 18 months. "        # warranty, lasts, months: 3/3 found
              "Water damage is excluded entirely. "  # water, damage, excluded, entirely: 2/4 = 0.5 found
              "Batteries explode during thunderstorms.")  # 0/4 found
    assert groundedness(answer, retrieved) == pytest.approx(2 / 3)
    assert groundedness(answer, retrieved, threshold=0.75) == pytest.approx(1 / 3)
    assert groundedness("", retrieved) == 0.0
