"""Retrieval and groundedness metrics.

Ranking metrics take the retrieved ids (best first) and the gold ids: chunk ids (`docs/a.md#3`) or source paths
(`docs/a.md`); `gold_of` turns a retrieved chunk into the id the gold set uses. A gold set with several relevant
ids counts each once (a source retrieved twice is one hit).

    recall@k    share of the gold ids found in the top k
    MRR         1 / rank of the first gold id (0 when none is retrieved)
    nDCG@k      DCG of the top k (gain 1 per new gold id at rank r: 1 / log2(r + 1)) over the ideal DCG

Groundedness, when there is no judge: the share of the answer's sentences whose content words (lower-cased, not
stop words, at least 3 characters) are mostly (≥ `threshold`) found in the retrieved text.

Answer correctness: the expected answer or one of its aliases appears in the answer, both normalised (NFKC, so
`m³` is `m3`; case-folded; dashes made `-`; runs of spaces made one), and not inside a longer word or number
(`200` is not found in `1200`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

STOP_WORDS = frozenset("""
a an and are as at be been but by can could did do does for from had has have he her his how i if in into is it its
may might more most no not of on or our she should so than that the their them then there these they this those to
was we were what when where which who will with would you your also any each other some such only own same very
""".split())
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[^\W_]+", re.UNICODE)
DASHES = re.compile(r"[\u2010-\u2015\u2212]")


def _deduplicated(retrieved: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(retrieved))


def recall_at_k(retrieved: Sequence[str], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    if not gold:
        return 0.0
    return len(gold & set(_deduplicated(retrieved)[:k])) / len(gold)


def mrr(retrieved: Sequence[str], gold: Iterable[str]) -> float:
    gold = set(gold)
    for rank, item in enumerate(_deduplicated(retrieved), 1):
        if item in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    if not gold:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(_deduplicated(retrieved)[:k], 1) if item in gold)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def source_of(chunk_id: str) -> str:
    """`docs/a.md#3` -> `docs/a.md`: the id a gold set of sources compares with."""
    return chunk_id.rsplit("#", 1)[0]


def retrieval_scores(retrieved: Sequence[str], gold: Iterable[str], k: int) -> dict[str, float]:
    """recall@k, MRR and nDCG@k of one question; gold ids without `#` are sources, compared with each chunk's source."""
    gold = list(gold)
    ids = [source_of(item) for item in retrieved] if gold and all("#" not in g for g in gold) else list(retrieved)
    return {f"recall@{k}": recall_at_k(ids, gold, k), "mrr": mrr(ids, gold), f"ndcg@{k}": ndcg_at_k(ids, gold, k)}


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in WORD.findall(text)) if len(w) >= 3 and w not in STOP_WORDS}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text) if content_words(s)]


def groundedness(answer: str, retrieved: Iterable[str], threshold: float = 0.5) -> float:
    """Share of the answer's sentences (those with content words) whose content words are at least `threshold`
    found in the retrieved texts; an answer with no such sentence scores 0."""
    support = set().union(*(content_words(text) for text in retrieved))
    claims = sentences(answer)
    if not claims:
        return 0.0
    grounded = sum(1 for claim in claims
                   if len(content_words(claim) & support) / len(content_words(claim)) >= threshold)
    return grounded / len(claims)


def normalize_answer(text: str) -> str:
    return " ".join(DASHES.sub("-", unicodedata.normalize("NFKC", text)).casefold().split())


def contains_answer(response: str, forms: Iterable[str]) -> bool:
    """Whether any of the accepted forms (the answer and its aliases) is in the response, as a whole word or number:
    "200" is not found in "1200", "200.5", "3,200" or "-200" (a minus sign after a space), but is in "200-300"."""
    said = normalize_answer(response)
    for form in forms:
        wanted = normalize_answer(form)
        if not wanted:
            continue
        before = r"(?<![^\W_])" + (r"(?<!\d[.,])(?<!\s-)(?<!^-)" if wanted[0].isdigit() else "")
        after = r"(?![^\W_])" + (r"(?![.,]\d)" if wanted[-1].isdigit() else "")
        if re.search(before + re.escape(wanted) + after, said):
            return True
    return False
