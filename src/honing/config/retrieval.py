"""How chunks are retrieved from a `honing rag index`, for `honing rag ask` and for any model entry with `rag:`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel


class RetrievalConfig(StrictModel):
    """How chunks are retrieved for a question: BM25 and dense search fused by reciprocal rank fusion, optionally
    reranked by a cross-encoder."""

    k: int = Field(4, ge=1)
    """Chunks retrieved (and, when answering, put in the prompt)."""
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    """hybrid: BM25 and dense search fused by reciprocal rank fusion; bm25 or dense: one of them alone."""
    candidates: int = Field(20, ge=1)
    """Chunks each search returns before fusion (and before reranking)."""
    rrf_k: int = Field(60, ge=1)
    """Reciprocal rank fusion's constant: a chunk scores sum(1 / (rrf_k + rank)) over the searches (ranks from 1)."""
    reranker: str | None = None
    """A local sentence-transformers cross-encoder directory that reorders the fused candidates; null: no reranking."""
    nprobe: int = Field(64, ge=1)
    """Approximate (ivf) indexes only: the inverted lists each dense search scans, of the index's nlist (≈ 4·√chunks;
    more is slower and closer to exact, nlist is exact). At 1 M chunks (nlist 4,000) recall@10 against exact search
    was 0.969 at 64 and 0.940 at 32 (`python -m bench.rag`, bench/RESULTS.md). An exact (flat) index ignores it."""

    @model_validator(mode="after")
    def _enough_candidates(self) -> RetrievalConfig:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be at least k ({self.k}): each search returns "
                             "candidates chunks, of which k are kept")
        return self


class ModelRagConfig(RetrievalConfig):
    """Retrieval in front of a model (`model.rag`): each prompt's last user turn is the question; the top k chunks,
    labelled with their ids, go into that turn with the instruction to cite them."""

    index: str
    """The index directory `honing rag index` wrote."""
    embedding_model: str | None = None
    """The query's sentence-transformers directory; null: the one the index was built with."""
