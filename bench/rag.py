"""Retrieval benchmark: embedding rate, index build, query latency and approximate-search recall at scale.

    python -m bench.rag                                              # 1 M chunks, 2,000 of them embedded for real
    python -m bench.rag --chunks 100000 --embed-sample 2000
    python -m bench.rag --chunks 1000000 --embed-sample 1000000      # every vector real (a GPU, or a patient run)

Phases: split the bundled corpus (src/honing/rag/data/corpus, our own text) into sentences and embed each with
the embedded all-MiniLM-L6-v2 → compose `--chunks` chunk texts from them → embed the first `--embed-sample`
chunks for real, timed (chunks/s at this chunk length) → the other chunks' vectors, synthetic (below) → one
`Store.update` into a fresh index (SQLite, BM25 and the ivf index, the code `honing rag index` runs; each part
timed) → an exact IndexFlatIP over the same vectors, for comparison → queries through `Retriever.search` (bm25,
dense exact, dense ivf at `--nprobe`, hybrid) → recall@10 of ivf against exact for an nprobe sweep → tables and
JSON (bench/results-rag-<chunks>.json).

Chunk texts: each is a few runs of one to six consecutive sentences, each run from a randomly chosen corpus
document (seeded), packed to a random length between half of and all of `--chunk-tokens` tokens (counted with
the model's tokenizer, sentence by sentence); every text is distinct. The texts are real sentences recombined, so SQLite and BM25 index
`--chunks` real-looking texts (over the corpus's vocabulary, recorded as corpus_vocabulary: far narrower than a
real collection of this size).

Synthetic vectors: embedding 1 M chunks with MiniLM on 2 CPU cores takes about a day, so beyond the sample a
chunk's vector is the normalised, token-weighted mean of the real MiniLM embeddings of its sentences (what a
mean-pooling model gives when context across sentences is ignored). The sample checks the approximation: the
cosine between each sampled chunk's real and synthetic vector, and the recall of an ivf index built over the
sample's real vectors against one over the same chunks' synthetic vectors. Queries are real: the 120 bundled
questions (latency, through the Retriever, which embeds each) and, for recall, those plus corpus sentences.
With --embed-sample equal to --chunks every vector is real.

Query latency is one question at a time, end to end through `Retriever.search` (query embedding, search,
fusion, the chunks read from SQLite): bm25; dense exact (the exact index swapped in for the ivf one); dense
ivf; hybrid (bm25 + ivf, RRF). Dense rows also give the FAISS search alone. Peak memory is the process's peak
RSS (getrusage) after each phase. The machine's load average is recorded at the start and the end: on a shared
machine other jobs slow every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.generate import percentiles
from bench.train import REPO, hardware, versions

LIBRARIES = ("faiss-cpu", "bm25s", "sentence-transformers", "torch", "numpy", "scipy", "honing")
CHUNKS_PER_DOCUMENT = 100
TARGET_RECALL = 0.95  # issue #19: recall@10 of the approximate index against exact search
RECALL_K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from honing.config.rag import RagIndexConfig
    from honing.config.retrieval import RetrievalConfig

    parser = argparse.ArgumentParser(prog="python -m bench.rag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=1_000_000, help="chunks in the index")
    parser.add_argument("--embed-sample", type=int, default=2_000,
                        help="chunks embedded for real (the rate is measured on them); the rest get synthetic vectors")
    parser.add_argument("--chunk-tokens", type=int, default=RagIndexConfig.model_fields["chunk_tokens"].default,
                        help="most tokens of a chunk (honing rag index's chunk_tokens)")
    parser.add_argument("--nprobe", type=int, default=RetrievalConfig.model_fields["nprobe"].default,
                        help="ivf lists searched per query for the latency rows (RetrievalConfig.nprobe's default)")
    parser.add_argument("--sweep", default="1,2,4,8,16,32,64,128", help="comma-separated nprobe values for recall")
    parser.add_argument("--latency-queries", type=int, default=120, help="bundled questions timed per mode (≤ 120)")
    parser.add_argument("--recall-queries", type=int, default=500,
                        help="queries for recall: the bundled questions, then corpus sentences")
    parser.add_argument("--pieces", type=int,
                        help="tiny runs: only the corpus documents (in path order) up to the one holding sentence N")
    parser.add_argument("--batch-size", type=int, default=32, help="chunks embedded together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="build the index in this directory and keep it (default: a temporary one)")
    parser.add_argument("--out", help="result JSON (default: bench/results-rag-<chunks>.json)")
    args = parser.parse_args(argv)
    args.sweep = sorted({int(n) for n in args.sweep.split(",") if n.strip()} | {args.nprobe})
    if args.chunks < 1 or not 0 < args.embed_sample <= args.chunks:
        parser.error("--chunks must be positive and --embed-sample between 1 and --chunks")
    if min(args.sweep) < 1 or args.latency_queries < 1 or args.recall_queries < 1 or args.chunk_tokens < 8:
        parser.error("--nprobe, --sweep, the query counts need positive integers, --chunk-tokens at least 8")
    return args


# --------------------------------------------------------------------------- the texts


@dataclass
class Piece:
    """A corpus sentence: its text, its document's index, its token count."""

    text: str
    document: int
    tokens: int


def corpus_pieces(embedder: Any, chunk_tokens: int, limit: int | None) -> tuple[list[Piece], list[list[int]]]:
    """(every sentence of the bundled corpus that fits in a chunk, each document's sentence indexes in order)."""
    from importlib.resources import files

    from honing.rag.chunking import PARAGRAPH_BREAK, SENTENCE_END, split_on
    from honing.rag.documents import read_document

    corpus = Path(str(files("honing.rag") / "data" / "corpus"))
    pieces: list[Piece] = []
    by_document: list[list[int]] = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        indexes: list[int] = []
        if limit is not None and len(pieces) >= limit:
            break
        for section in read_document(path).sections:
            text = section.text
            for start, end in split_on(PARAGRAPH_BREAK, text, 0, len(text)):
                for s, e in split_on(SENTENCE_END, text, start, end):
                    sentence = " ".join(text[s:e].split())
                    tokens = len(embedder.spans(sentence))
                    if 0 < tokens <= chunk_tokens:
                        indexes.append(len(pieces))
                        pieces.append(Piece(sentence, len(by_document), tokens))
        if indexes:
            by_document.append(indexes)
    return pieces, by_document


def compose(pieces: list[Piece], by_document: list[list[int]], count: int, chunk_tokens: int,
            seed: int) -> tuple[list[str], list[list[int]]]:
    """(chunk texts, each chunk's sentence indexes): runs of one to six consecutive sentences from random
    documents, packed to a random length between chunk_tokens / 2 and chunk_tokens; every text distinct (a repeat
    is drawn again), so the index holds `count` different chunks and vectors."""
    rng = random.Random(seed)
    texts, members, seen = [], [], set()
    while len(texts) < count:
        target = rng.randint(chunk_tokens // 2, chunk_tokens)
        chosen: list[int] = []
        tokens = 0
        for _run in range(8):
            document = by_document[rng.randrange(len(by_document))]
            position = rng.randrange(len(document))
            for _ in range(rng.randint(1, 6)):
                if position >= len(document) or tokens + pieces[document[position]].tokens > target:
                    break
                chosen.append(document[position])
                tokens += pieces[document[position]].tokens
                position += 1
            if tokens >= 0.75 * target:
                break
        if not chosen:  # the first sentence drawn was longer than the target: that sentence alone
            chosen = [document[rng.randrange(len(document))]]
        text = " ".join(pieces[i].text for i in chosen)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            members.append(chosen)
    return texts, members


def synthetic_vectors(members: list[list[int]], pieces: list[Piece], piece_vectors: Any, block: int = 100_000):
    """(N, D) unit vectors: each chunk's token-weighted mean of its sentences' real embeddings, normalised."""
    import numpy as np
    from scipy.sparse import csr_matrix

    out = np.empty((len(members), piece_vectors.shape[1]), dtype=np.float32)
    weights = np.array([p.tokens for p in pieces], dtype=np.float32)
    for start in range(0, len(members), block):
        rows = members[start:start + block]
        indptr = np.cumsum([0] + [len(r) for r in rows])
        indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
        mix = csr_matrix((weights[indices], indices, indptr), shape=(len(rows), len(pieces)))  # (B, P)
        part = np.asarray(mix @ piece_vectors, dtype=np.float32)  # (B, D)
        out[start:start + len(rows)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


class PlannedEmbedder:
    """What Store.update embeds with: each chunk's text gets its precomputed vector (real or synthetic)."""

    def __init__(self, texts: list[str], vectors: Any):
        self.texts, self.vectors = texts, vectors
        self.dimension = int(vectors.shape[1])

    def embed(self, texts: list[str]):
        row = {text: i for i, text in enumerate(self.texts)}
        return self.vectors[[row[text] for text in texts]]  # (N, D)


def chunk_records(texts: list[str]) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Chunks (CHUNKS_PER_DOCUMENT per made-up document) and the document table Store.update takes."""
    from honing.rag.chunking import Chunk

    chunks, documents = [], {}
    for i, text in enumerate(texts):
        source = f"bench/doc-{i // CHUNKS_PER_DOCUMENT:06d}.md"
        chunks.append(Chunk(f"{source}#{i % CHUNKS_PER_DOCUMENT}", source, i % CHUNKS_PER_DOCUMENT, 0, len(text), (),
                            text, 0, hashlib.sha256(text.encode()).hexdigest()))
        entry = documents.setdefault(source, {"path": source, "sha256": "0" * 64, "chunks": 0})
        entry["chunks"] += 1
    return chunks, documents


# --------------------------------------------------------------------------- measuring


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def directory_mib(path: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in path.glob(pattern) for p in ([p] if p.is_file() else p.rglob("*"))
               if p.is_file()) / 2**20


def recall_at(found_scores: Any, true_scores: Any, k: int = RECALL_K) -> list[float]:
    """Per query, the share of the k found chunks that score at least the exact k-th best: the ids recall, except
    that a tie at the k-th place (equal vectors: recombined texts repeat) is not counted as a miss."""
    return [float((f[:k] >= t[k - 1] - 1e-6).sum()) / k for f, t in zip(found_scores, true_scores)]


def recall_sweep(index: Any, queries: Any, truth: Any, sweep: list[int]) -> list[dict[str, Any]]:
    """recall@10 and search ms a query (the queries searched as one batch) at each nprobe."""
    import numpy as np

    rows = []
    for nprobe in sweep:
        index.nprobe = min(nprobe, index.nlist)
        started = time.perf_counter()
        found, _ = index.search(queries, RECALL_K)
        rows.append({"nprobe": nprobe, "recall_at_10": float(np.mean(recall_at(found, truth))),
                     "batch_ms_per_query": 1000 * (time.perf_counter() - started) / len(queries)})
    return rows


def timed_searches(retriever: Any, questions: list[str], cfg: Any) -> dict[str, Any]:
    """Per-question ms through Retriever.search, and of the store's BM25 and FAISS searches alone (the rest is the
    query's embedding, fusion and reading the chunks)."""
    store = retriever.store
    alone: dict[str, list[float]] = {"bm25_search": [], "dense_search": []}

    def timing(name: str):
        method = getattr(store, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                alone[name].append(1000 * (time.perf_counter() - started))
        return wrapper

    for name in alone:
        setattr(store, name, timing(name))  # instance attributes: Retriever.search calls these
    total_ms = []
    try:
        retriever.search(questions[0], cfg)  # untimed: loads the BM25 and FAISS files
        for times in alone.values():
            times.clear()
        for question in questions:
            started = time.perf_counter()
            retriever.search(question, cfg)
            total_ms.append(1000 * (time.perf_counter() - started))
    finally:
        for name in alone:
            delattr(store, name)
    return {"ms": percentiles(total_ms), "queries": len(questions),
            **{f"{name}_ms": percentiles(times) if times else None for name, times in alone.items()}}


class PhaseTimer:
    """Seconds and peak RSS after each named phase."""

    def __init__(self):
        self.phases: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, seconds: float) -> None:
        self.phases[name] = {"seconds": round(seconds, 3), "peak_rss_mib_after": round(peak_rss_mib(), 1)}
        print(f"  {name}: {seconds:.1f} s (peak RSS so far {peak_rss_mib():,.0f} MiB)", flush=True)


# --------------------------------------------------------------------------- the run


def embed_phase(args, timer: PhaseTimer) -> dict[str, Any]:
    """The corpus sentences and their vectors, the chunk texts, the real sample's vectors and the rate."""
    import numpy as np

    from honing.rag.embed import Embedder

    started = time.perf_counter()
    embedder = Embedder(None, batch_size=args.batch_size)
    embedder.embed(["warm-up"] * 4)
    timer("load the embedding model", time.perf_counter() - started)
    started = time.perf_counter()
    pieces, by_document = corpus_pieces(embedder, args.chunk_tokens, args.pieces)
    piece_vectors = embedder.embed([p.text for p in pieces])  # (P, D)
    timer(f"split and embed {len(pieces):,} corpus sentences", time.perf_counter() - started)
    started = time.perf_counter()
    texts, members = compose(pieces, by_document, args.chunks, args.chunk_tokens, args.seed)
    timer(f"compose {len(texts):,} chunk texts", time.perf_counter() - started)
    sample = texts[:args.embed_sample]
    sample_tokens = [len(embedder.spans(t)) for t in sample]
    started = time.perf_counter()
    real = embedder.embed(sample)  # (S, D)
    embed_s = time.perf_counter() - started
    timer(f"embed {len(sample):,} chunks (real)", embed_s)
    started = time.perf_counter()
    vectors = synthetic_vectors(members, pieces, piece_vectors)  # (N, D)
    synthetic_sample = vectors[:len(sample)].copy()
    vectors[:len(sample)] = real
    timer(f"synthetic vectors for {len(texts) - len(sample):,} chunks", time.perf_counter() - started)
    cosines = np.sum(real * synthetic_sample, axis=1)
    rate = len(sample) / embed_s
    embedding = {
        "model": embedder.identity["name"], "device": str(embedder.model.device), "batch_size": args.batch_size,
        "chunks": len(sample), "seconds": round(embed_s, 2), "chunks_per_s": rate,
        "tokens_per_chunk": percentiles([float(t) for t in sample_tokens]),
        "tokens_per_s": sum(sample_tokens) / embed_s,
        "extrapolated_hours_for_all_chunks": args.chunks / rate / 3600,
        "corpus_sentences": len(pieces), "corpus_documents": len(by_document),
        "corpus_vocabulary": len({w for p in pieces for w in re.findall(r"\w+", p.text.lower())})}
    synthetic = {
        "chunks": len(texts) - len(sample), "real": len(sample),
        "method": "normalised token-weighted mean of the chunk's sentences' real MiniLM embeddings",
        "cosine_real_vs_synthetic": {**percentiles([float(c) for c in cosines]),
                                     "min": float(cosines.min())}}
    return {"embedder": embedder, "pieces": pieces, "piece_vectors": piece_vectors, "texts": texts,
            "vectors": vectors, "real_sample": real, "synthetic_sample": synthetic_sample, "embedding": embedding,
            "synthetic": synthetic}


def build_phase(args, data: dict[str, Any], directory: Path, timer: PhaseTimer) -> tuple[dict[str, Any], Any]:
    """One Store.update (dense_index ivf) with its parts timed, then the exact index over the same vectors."""
    import faiss

    from honing.rag.store import Store, build_dense

    started = time.perf_counter()
    chunks, documents = chunk_records(data["texts"])
    timer("chunk records", time.perf_counter() - started)
    store = Store.create_or_open(directory)
    parts: dict[str, float] = {}
    captured: dict[str, Any] = {}

    def timing(name: str, method):
        def wrapper(*a, **kw):
            began = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                parts[name] = time.perf_counter() - began
                if name == "dense_ivf":
                    captured["matrix"] = a[0]  # the vectors as the store holds them, row order = chunk rows
        return wrapper

    store._write_dense = timing("dense_ivf", store._write_dense)  # the parts of one update, timed in place
    store._write_bm25 = timing("bm25", store._write_bm25)
    embedder = PlannedEmbedder(data["texts"], data["vectors"])
    settings = {"embedding_model": data["embedder"].identity, "chunk_tokens": args.chunk_tokens,
                "overlap_tokens": 0}
    started = time.perf_counter()
    store.update(chunks, documents, embedder, settings, dense_index="ivf")
    update_s = time.perf_counter() - started
    info = store.dense_info()
    store.close()
    timer("Store.update (SQLite + BM25 + ivf)", update_s)
    del chunks, documents, embedder
    data["vectors"] = None  # the store holds them now (and `matrix` below)
    matrix = captured.pop("matrix")
    started = time.perf_counter()
    exact, _ = build_dense(matrix, "flat")
    faiss.write_index(exact, str(directory / "exact-comparison.faiss"))
    flat_s = time.perf_counter() - started
    timer("exact IndexFlatIP (comparison)", flat_s)
    build = {"update_s": update_s, "bm25_s": parts["bm25"], "dense_ivf_s": parts["dense_ivf"],
             "sqlite_s": update_s - parts["bm25"] - parts["dense_ivf"], "dense_flat_s": flat_s,
             "ivf": info}
    disk = {"sqlite_mib": directory_mib(directory, "chunks.sqlite*"),
            "bm25_mib": directory_mib(directory, "bm25-*"), "dense_ivf_mib": directory_mib(directory, "dense-*.faiss"),
            "dense_flat_mib": directory_mib(directory, "exact-comparison.faiss")}
    disk["index_mib"] = disk["sqlite_mib"] + disk["bm25_mib"] + disk["dense_ivf_mib"]
    (directory / "exact-comparison.faiss").unlink()
    return {"build": build, "disk": disk}, (exact, matrix)


def query_phase(args, data: dict[str, Any], directory: Path, exact: Any, timer: PhaseTimer) -> dict[str, Any]:
    import faiss
    import numpy as np

    from honing.config.retrieval import RetrievalConfig
    from honing.rag.search import Retriever
    from honing.rag.store import build_dense

    questions = [q["question"] for q in bundled_questions()]
    timed = questions[:args.latency_queries]
    started = time.perf_counter()
    latency: dict[str, Any] = {}
    retriever = Retriever(directory)
    retriever.embedder = data["embedder"]  # the model already loaded (the same one the index records)
    plans = [("bm25", "bm25", False), ("dense_exact", "dense", True), ("dense_ivf", "dense", False),
             ("hybrid", "hybrid", False)]
    for name, mode, use_exact in plans:
        cfg = RetrievalConfig(mode=mode, k=RECALL_K, candidates=20, nprobe=args.nprobe)
        if use_exact:
            retriever.store._dense, ivf = exact, retriever.store._dense  # the same search, over the exact index
        latency[name] = timed_searches(retriever, timed, cfg)
        if use_exact:
            retriever.store._dense = ivf
        print(f"    {name}: p50 {latency[name]['ms']['p50']:.1f} ms, p95 {latency[name]['ms']['p95']:.1f} ms",
              flush=True)
    ivf = faiss.downcast_index(retriever.store._dense)
    retriever.close()
    timer(f"latency: {len(timed)} questions × {len(plans)} modes", time.perf_counter() - started)

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    extra = max(0, args.recall_queries - len(questions))
    sentences = rng.choice(len(data["pieces"]), size=min(extra, len(data["pieces"])), replace=False)
    question_vectors = data["embedder"].embed(questions[:args.recall_queries])
    queries = np.concatenate([question_vectors, data["piece_vectors"][sentences]]).astype(np.float32)  # (Q, D)
    truth, _ = exact.search(queries, RECALL_K)  # (Q, 10) exact scores
    sweep = recall_sweep(ivf, queries, truth, args.sweep)
    ivf.nprobe = min(args.nprobe, ivf.nlist)
    found, _ = ivf.search(question_vectors, RECALL_K)
    at_default = {"nprobe": args.nprobe, "recall_at_10": next(r["recall_at_10"] for r in sweep
                                                              if r["nprobe"] == args.nprobe),
                  "recall_at_10_questions_only": float(np.mean(recall_at(found, truth[:len(question_vectors)]))),
                  "queries": len(queries), "questions": len(question_vectors), "sentences": len(sentences)}
    at_default["target"] = {"recall_at_10": TARGET_RECALL, "met": at_default["recall_at_10"] >= TARGET_RECALL}
    # the same index size over the sample's real vectors and over those chunks' synthetic ones
    check = {}
    for name, sample in (("real", data["real_sample"]), ("synthetic", data["synthetic_sample"])):
        small_exact, _ = build_dense(sample, "flat")
        small_ivf, info = build_dense(sample, "ivf")
        small_truth, _ = small_exact.search(queries, RECALL_K)
        check[name] = {"nlist": info["nlist"], "sweep": recall_sweep(small_ivf, queries, small_truth, args.sweep)}
    timer(f"recall: {len(queries)} queries, nprobe {args.sweep}", time.perf_counter() - started)
    return {"latency": latency, "recall": {**at_default, "sweep": sweep, "sample_check": {
        "chunks": len(data["real_sample"]), **check}}}


def threads() -> dict[str, int]:
    import faiss
    import torch

    return {"faiss": faiss.omp_get_max_threads(), "torch": torch.get_num_threads()}


def bundled_questions() -> list[dict[str, Any]]:
    from importlib.resources import files

    lines = (Path(str(files("honing.rag") / "data")) / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out or REPO / "bench" / f"results-rag-{args.chunks}.json")
    report: dict[str, Any] = {
        "command": "python -m bench.rag " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"chunks": args.chunks, "embed_sample": args.embed_sample, "chunk_tokens": args.chunk_tokens,
                     "nprobe": args.nprobe, "sweep": args.sweep, "seed": args.seed},
        "hardware": hardware("cpu"), "versions": versions(LIBRARIES), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_start": os.getloadavg()}
    print(f"{args.chunks:,} chunks of ≤ {args.chunk_tokens} tokens, {args.embed_sample:,} embedded for real "
          f"(the rest synthetic); {report['hardware'].get('cpu')} × {os.cpu_count()} cores, load average "
          f"{report['load_average_start'][0]:.2f}", flush=True)
    timer = PhaseTimer()
    began = time.perf_counter()
    data = embed_phase(args, timer)
    report.update(embedding=data["embedding"], synthetic=data["synthetic"], threads=threads())
    with tempfile.TemporaryDirectory(prefix="honing-bench-rag-") as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp) / "index"
        if directory.exists() and any(directory.iterdir()):
            raise SystemExit(f"--keep {directory}: not empty; give a new directory")
        built, (exact, _matrix) = build_phase(args, data, directory, timer)
        report.update(built)
        report.update(query_phase(args, data, directory, exact, timer))
    report.update(phases=timer.phases, peak_rss_mib=peak_rss_mib(), wall_s=time.perf_counter() - began,
                  load_average_end=os.getloadavg(), finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render(report)
    print(f"wrote {out}")
    return report


# --------------------------------------------------------------------------- output


def _ms(value: dict[str, Any] | None) -> str:
    return "-" if not value else f"{value['p50']:.1f} / {value['p95']:.1f}"


def render(report: dict[str, Any], console=None):
    """The build, the queries and the recall sweep (what main prints; the test renders it too)."""
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=170))
    settings, embedding, build, disk = report["settings"], report["embedding"], report["build"], report["disk"]
    synthetic = report["synthetic"]
    console.print(f"embedding: {embedding['chunks_per_s']:.1f} chunks/s ({embedding['tokens_per_s']:,.0f} tokens/s; "
                  f"chunks of {embedding['tokens_per_chunk']['mean']:.0f} tokens on average, {embedding['model']} on "
                  f"{embedding['device']}, batch {embedding['batch_size']}): {settings['chunks']:,} chunks would take "
                  f"{embedding['extrapolated_hours_for_all_chunks']:.1f} h; {synthetic['real']:,} vectors real, "
                  f"{synthetic['chunks']:,} synthetic (cosine to the real vector on the sample: mean "
                  f"{synthetic['cosine_real_vs_synthetic']['mean']:.3f}, p50 "
                  f"{synthetic['cosine_real_vs_synthetic']['p50']:.3f})", soft_wrap=True)
    table = Table(title=f"build: {settings['chunks']:,} chunks (Store.update, then the exact index for comparison)")
    for column in ("part", "seconds", "on disk (MiB)"):
        table.add_column(column, justify="left" if column == "part" else "right")
    table.add_row("SQLite (chunks, vectors, one commit)", f"{build['sqlite_s']:.1f}", f"{disk['sqlite_mib']:,.0f}")
    table.add_row("BM25 (bm25s: tokenise, index, save)", f"{build['bm25_s']:.1f}", f"{disk['bm25_mib']:,.0f}")
    table.add_row(f"dense ivf (IndexIVFFlat, nlist {build['ivf']['nlist']}: train, add, write)",
                  f"{build['dense_ivf_s']:.1f}", f"{disk['dense_ivf_mib']:,.0f}")
    table.add_row("dense exact (IndexFlatIP: add, write)", f"{build['dense_flat_s']:.1f}",
                  f"{disk['dense_flat_mib']:,.0f}")
    table.add_row("index (SQLite + BM25 + ivf)", f"{build['update_s']:.1f}", f"{disk['index_mib']:,.0f}")
    console.print(table)
    recall = report["recall"]
    queries = Table(title=f"queries, one at a time through Retriever.search (k = {RECALL_K}, 20 candidates a "
                          f"search; ivf at nprobe {recall['nprobe']})")
    for column in ("mode", "p50 / p95 (ms)", "BM25 search alone", "FAISS search alone", "questions"):
        queries.add_column(column, justify="left" if column == "mode" else "right")
    for name, row in report["latency"].items():
        queries.add_row(name.replace("_", " "), _ms(row["ms"]), _ms(row["bm25_search_ms"]),
                        _ms(row["dense_search_ms"]), str(row["queries"]))
    console.print(queries)
    sweep = Table(title=f"recall@10 of ivf against exact search ({recall['queries']} queries: {recall['questions']} "
                        f"questions + {recall['sentences']} corpus sentences); the last two columns: an index over "
                        f"the {recall['sample_check']['chunks']:,} sampled chunks' real vs synthetic vectors")
    for column in ("nprobe", "recall@10", "ms a query (batched)", "sample real", "sample synthetic"):
        sweep.add_column(column, justify="right")
    check = recall["sample_check"]
    for row, real, fake in zip(recall["sweep"], check["real"]["sweep"], check["synthetic"]["sweep"]):
        sweep.add_row(str(row["nprobe"]), f"{row['recall_at_10']:.3f}", f"{row['batch_ms_per_query']:.2f}",
                      f"{real['recall_at_10']:.3f}", f"{fake['recall_at_10']:.3f}")
    console.print(sweep)
    console.print(f"recall@10 at nprobe {recall['nprobe']}: {recall['recall_at_10']:.3f} (questions alone "
                  f"{recall['recall_at_10_questions_only']:.3f}); target ≥ {TARGET_RECALL}: "
                  f"{'met' if recall['target']['met'] else 'missed'}. Peak RSS {report['peak_rss_mib']:,.0f} MiB; "
                  f"wall {report['wall_s']:.0f} s; load average {report['load_average_start'][0]:.2f} at the start, "
                  f"{report['load_average_end'][0]:.2f} at the end", soft_wrap=True)
    return console


if __name__ == "__main__":
    main()
