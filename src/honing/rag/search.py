"""Hybrid retrieval: BM25 and dense search over one index, fused by reciprocal rank fusion, optionally reranked
by a local cross-encoder.

    question ─▶ bm25s top `candidates`  ┐
             ─▶ FAISS top `candidates` ─┴▶ RRF: score(chunk) = Σ 1 / (rrf_k + rank)  ─▶ [cross-encoder] ─▶ top k

Opening a retriever checks the query's embedding model against the one the index was built with: vectors of two
models are not comparable, so a mismatch is an error naming both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.config.rag import RetrievalConfig
from honing.errors import HoningError
from honing.rag.embed import Embedder, describe, model_identity, same_model
from honing.rag.store import Store


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Any]], k: int = 60) -> list[tuple[Any, float]]:
    """Items of several rankings (best first) by Σ 1 / (k + rank), rank counted from 1; ties keep first-seen order."""
    scores: dict[Any, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


@dataclass
class Hit:
    """A retrieved chunk: its record (id, source, path, position, text), its fused score and its rank in each
    search (None: that search did not return it)."""

    chunk: dict[str, Any]
    score: float
    ranks: dict[str, int | None] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.chunk["id"]


def check_model(index: str | Path, recorded: dict[str, Any], asked: dict[str, Any]) -> None:
    if not same_model(recorded, asked):
        raise HoningError(f"index {index} was built with the embedding model {describe(recorded)}, but the query "
                          f"uses {describe(asked)}: their vectors are not comparable; query with the index's model "
                          "(leave embedding_model unset) or rebuild the index with this one")


class Retriever:
    """An open index and the query's embedding model (and reranker)."""

    def __init__(self, index: str | Path, embedding_model: str | None = None, reranker: str | None = None):
        self.store = Store.open(index)
        recorded = self.store.meta("embedding_model")
        path = embedding_model if embedding_model is not None else recorded.get("path")
        check_model(index, recorded, model_identity(path))
        self.embedder: Embedder | None = None
        self._path = path
        self.reranker = _load_reranker(reranker) if reranker else None

    def _embed_query(self, question: str):
        if self.embedder is None:
            self.embedder = Embedder(self._path)
        return self.embedder.embed([question])[0]  # (D,)

    def search(self, question: str, cfg: RetrievalConfig) -> list[Hit]:
        """The top cfg.k chunks for the question."""
        rankings: dict[str, list[int]] = {}
        if cfg.mode in ("hybrid", "bm25"):
            rankings["bm25"] = [row for row, _ in self.store.bm25_search(question, cfg.candidates)]
        if cfg.mode in ("hybrid", "dense"):
            query = self._embed_query(question)  # (D,)
            rankings["dense"] = [row for row, _ in self.store.dense_search(query, cfg.candidates, cfg.nprobe)]
        fused = reciprocal_rank_fusion(list(rankings.values()), cfg.rrf_k)
        records = self.store.chunks([row for row, _ in fused])
        hits = [Hit(records[row], score, {name: (ranking.index(row) + 1 if row in ranking else None)
                                          for name, ranking in rankings.items()}) for row, score in fused]
        if self.reranker is not None and hits:
            hits = rerank(self.reranker, question, hits)
        return hits[:cfg.k]

    def close(self) -> None:
        self.store.close()


def _load_reranker(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import CrossEncoder

    if not Path(path).is_dir():
        raise HoningError(f"reranker {path}: no such directory; give a local cross-encoder directory (nothing is "
                          "fetched from a hub)")
    try:
        return CrossEncoder(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise HoningError(f"reranker {path}: cannot be loaded as a cross-encoder ({err})") from None


def rerank(reranker: Any, question: str, hits: list[Hit]) -> list[Hit]:
    """The hits reordered by the cross-encoder's score of (question, chunk); that score replaces the fused one."""
    scores = reranker.predict([(question, hit.chunk["text"]) for hit in hits], show_progress_bar=False)
    for fused_rank, (hit, score) in enumerate(zip(hits, scores), 1):
        hit.ranks["fused"] = fused_rank
        hit.score = float(score)
    return sorted(hits, key=lambda hit: -hit.score)
