"""The on-disk index: FAISS for the vectors, SQLite for the chunks, bm25s for the words.

    <index>/chunks.sqlite       meta (embedding model, chunking, generation), documents (source, path, sha256),
                                chunks (id, source, position, headings, text, hash), vectors (one per chunk hash)
    <index>/dense-<g>.faiss     the inner-product index over chunk rows (unit vectors, so cosine): exact (IndexFlatIP)
                                or approximate (IndexIVFFlat); meta `dense` records which, and its nlist
    <index>/bm25-<g>/           the bm25s index over the same rows, and rows.npy (its document order)
    <index>/run.json            the latest `honing rag index` run; earlier ones in history/

Why FAISS + SQLite, not LanceDB. Measured on this machine (2 CPU cores, shared with other jobs; 5,000 chunks of
~150 words with 384-d unit vectors, 200 queries of the top 20; faiss-cpu 1.15.1, lancedb 0.40.0, 2026-12-01):
installed size 65 MB (faiss + its libs) against 186 MB (lancedb + lance-namespace; pyarrow, which datasets already
brings, not counted); writing the index 0.12 s (SQLite inserts + an exact FAISS index, written to disk) against
0.26 s (a LanceDB table); a query 0.4 ms (FAISS search + the 20 chunks from SQLite) against 11 ms (LanceDB's
brute-force search to Python records). Both are embedded and on disk; FAISS is exact here and offers IVF/HNSW
for indexes that outgrow exact search, and SQLite makes the incremental update one transaction.

An update is atomic: new FAISS and BM25 files are written under the next generation number, then one SQLite
transaction commits the chunks and that number; a crash before the commit leaves the last index usable (the
orphaned files are removed by the next update).

Exact or approximate dense search (`dense_index`). flat: IndexFlatIP, every vector compared with the query. ivf:
IndexIVFFlat, the vectors split by k-means into nlist ≈ 4·√N inverted lists (trained on at most 64 vectors a list,
10 iterations, seed 0), a query compared with the vectors of its `nprobe` nearest lists only. auto: flat below
AUTO_IVF_ROWS chunks, ivf from there. An ivf index is retrained on every update (the lists follow the data; the
update stays one generation and one commit). Measured by `python -m bench.rag` over 1 M chunks on 2 shared cores
(bench/RESULTS.md, "Retrieval"; 999,000 of the vectors synthetic): exact search 349 ms a query, ivf (nlist 4,000)
at nprobe 64 7 ms with recall@10 0.969 against exact; building the ivf index 195 s of the update's 408 s.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.rag.chunking import Chunk

DATABASE = "chunks.sqlite"
DENSE_KINDS = ("flat", "ivf", "auto")
AUTO_IVF_ROWS = 100_000
"""dense_index auto: an exact index below this many chunks, ivf from there."""
IVF_POINTS_PER_LIST = 64
"""k-means trains on at most this many vectors per inverted list (a seeded random subset beyond that)."""
IVF_ITERATIONS = 10
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (source TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL,
                                      chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, source TEXT NOT NULL,
                                   idx INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                                   headings TEXT NOT NULL, text TEXT NOT NULL, tokens INTEGER NOT NULL,
                                   sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""


def index_content_key(directory: str | Path) -> str | None:
    """Store.content_key of the index in `directory`; None when there is no index there."""
    if not (Path(directory) / DATABASE).is_file():
        return None
    store = Store.open(directory)
    try:
        return store.content_key()
    finally:
        store.close()


@dataclass
class UpdateCounts:
    """What an update did, for the run record."""

    documents: int
    chunks: int
    embedded: int
    """Chunks whose text was new to the index and so were embedded."""
    reused: int
    removed_documents: list[str]


def ivf_lists(rows: int) -> int:
    """nlist of an ivf index over this many vectors: ≈ 4·√rows, and at least one vector per list."""
    return max(1, min(round(4 * rows ** 0.5), rows))


def dense_kind(requested: str, rows: int) -> str:
    """flat or ivf, for dense_index `requested` over this many vectors."""
    if requested not in DENSE_KINDS:
        raise HoningError(f"dense_index {requested!r}: use one of {', '.join(DENSE_KINDS)}")
    if requested == "auto":
        return "ivf" if rows >= AUTO_IVF_ROWS else "flat"
    return requested


def build_dense(matrix: Any, kind: str) -> tuple[Any, dict[str, Any]]:
    """(the FAISS index over the matrix's rows, what meta records about it: index, nlist)."""
    import faiss

    dimension = matrix.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dimension)
        index.add(matrix)
        return index, {"index": "flat"}
    nlist = ivf_lists(len(matrix))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = IVF_ITERATIONS
    index.cp.seed = 0
    index.cp.max_points_per_centroid = IVF_POINTS_PER_LIST
    index.cp.min_points_per_centroid = 1  # a small index has few vectors a list: no warning, it is still correct
    if len(matrix):
        index.train(matrix)
        index.add(matrix)
    return index, {"index": "ivf", "nlist": nlist}


def bm25_tokens(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


class Store:
    """An index directory, open for reading or updating."""

    def __init__(self, directory: Path, conn: sqlite3.Connection):
        self.dir = directory
        self.conn = conn
        self._dense: Any = None
        self._bm25: Any = None
        self._bm25_rows: Any = None

    @classmethod
    def create_or_open(cls, directory: str | Path) -> Store:
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise HoningError(f"index {path} is a file; give a directory for the index (--index DIR)")
        path.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path / DATABASE)
        conn.executescript(SCHEMA)
        return cls(path, conn)

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        path = Path(directory)
        if not (path / DATABASE).is_file():
            what = "does not exist" if not path.exists() else f"is not an index (no {DATABASE})"
            raise HoningError(f"index {path} {what}; build it with: honing rag index DOCS... --index {path}")
        store = cls(path, sqlite3.connect(f"{(path / DATABASE).resolve().as_uri()}?mode=ro", uri=True))
        if store.meta("generation") is None:
            raise HoningError(f"index {path} holds no completed update; rebuild it with honing rag index")
        return store

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ metadata

    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def documents(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute("SELECT source, path, sha256, chunks FROM documents ORDER BY source")
        return {source: {"path": path, "sha256": sha, "chunks": n} for source, path, sha, n in rows}

    def content_key(self) -> str:
        """What the index holds, by content: every document's sha256, the embedding model, the chunking and the
        dense index kind; the same after an update that changed nothing (unlike its run.json)."""
        import hashlib

        dense = self.meta("dense") or {"index": "flat"}
        state = {"documents": {source: entry["sha256"] for source, entry in self.documents().items()},
                 "embedding_model": self.meta("embedding_model"), "chunk_tokens": self.meta("chunk_tokens"),
                 "overlap_tokens": self.meta("overlap_tokens"),
                 "dense": {key: dense.get(key) for key in ("index", "nlist")}}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    # ------------------------------------------------------------------ updating

    def update(self, chunks: list[Chunk], documents: dict[str, dict[str, Any]], embedder: Any,
               settings: dict[str, Any], dense_index: str = "auto") -> UpdateCounts:
        """Make the index hold exactly these chunks: embed those whose hash it lacks, drop the rest, rebuild
        the FAISS (dense_index: flat, ivf or auto) and BM25 files, and commit."""
        import numpy as np

        dense_kind(dense_index, 0)  # a bad value fails before anything is embedded or written

        previous = set(self.documents())
        known = {sha for (sha,) in self.conn.execute("SELECT sha256 FROM vectors")}
        fresh: dict[str, str] = {}
        for chunk in chunks:
            if chunk.sha256 not in known:
                fresh.setdefault(chunk.sha256, chunk.embedded_text)
        vectors = embedder.embed(list(fresh.values()))  # (N_new, D)
        generation = (self.meta("generation") or 0) + 1
        with self.conn:
            self.conn.executemany("INSERT INTO vectors VALUES (?, ?)",
                                  [(sha, vector.tobytes()) for sha, vector in zip(fresh, vectors)])
            self.conn.execute("DELETE FROM chunks")
            self.conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (row, c.id, c.source, c.index, c.start, c.end, json.dumps(list(c.headings)), c.text, c.tokens, c.sha256)
                for row, c in enumerate(chunks)])
            self.conn.execute("DELETE FROM vectors WHERE sha256 NOT IN (SELECT sha256 FROM chunks)")
            self.conn.execute("DELETE FROM documents")
            self.conn.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)",
                                  [(s, d["path"], d["sha256"], d["chunks"]) for s, d in documents.items()])
            matrix = self._matrix(embedder.dimension, np)
            dense = self._write_dense(matrix, generation, dense_kind(dense_index, len(matrix)))
            self._write_bm25([c.embedded_text for c in chunks], generation)
            dense["requested"] = dense_index
            for key, value in {**settings, "generation": generation, "dimension": embedder.dimension,
                               "dense": dense}.items():
                self._set_meta(key, value)
        self._remove_other_generations(generation)
        return UpdateCounts(len(documents), len(chunks), len(fresh), len(chunks) - sum(
            1 for c in chunks if c.sha256 in fresh), sorted(previous - set(documents)))

    def _matrix(self, dimension: int, np: Any):
        rows = self.conn.execute("SELECT v.vector FROM chunks c JOIN vectors v ON v.sha256 = c.sha256 ORDER BY c.row")
        blobs = [blob for (blob,) in rows]
        return (np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension) if blobs
                else np.zeros((0, dimension), dtype=np.float32))  # (rows, D)

    def _write_dense(self, matrix: Any, generation: int, kind: str) -> dict[str, Any]:
        import faiss

        index, info = build_dense(matrix, kind)
        faiss.write_index(index, str(self.dir / f"dense-{generation}.faiss"))
        return info

    def _write_bm25(self, texts: list[str], generation: int) -> None:
        import bm25s
        import numpy as np

        folder = self.dir / f"bm25-{generation}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        if texts:
            retriever = bm25s.BM25()
            retriever.index(bm25_tokens(texts), show_progress=False)
            retriever.save(str(folder))
        np.save(folder / "rows.npy", np.arange(len(texts), dtype=np.int64))

    def _remove_other_generations(self, generation: int) -> None:
        for path in self.dir.glob("dense-*.faiss"):
            if path.name != f"dense-{generation}.faiss":
                path.unlink(missing_ok=True)
        for path in self.dir.glob("bm25-*"):
            if path.name != f"bm25-{generation}":
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ searching

    def dense_info(self) -> dict[str, Any]:
        """What the dense index is: {"index": "flat"} or {"index": "ivf", "nlist": ...} (and the requested
        dense_index); an index written before the choice existed is flat."""
        return self.meta("dense") or {"index": "flat"}

    def dense_search(self, query_vector: Any, k: int, nprobe: int | None = None) -> list[tuple[int, float]]:
        """(row, cosine) of the k nearest chunks; an ivf index searches its nprobe nearest lists (None: all of
        them, i.e. exact), a flat one ignores nprobe."""
        import faiss

        if self._dense is None:
            self._dense = faiss.read_index(str(self.dir / f"dense-{self.meta('generation')}.faiss"))
        if self._dense.ntotal == 0:
            return []
        if isinstance(self._dense, faiss.IndexIVF):
            self._dense.nprobe = min(nprobe or self._dense.nlist, self._dense.nlist)
        scores, rows = self._dense.search(query_vector.reshape(1, -1), min(k, self._dense.ntotal))
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def bm25_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, BM25 score) of the best k chunks that share a word with the query."""
        import bm25s
        import numpy as np

        folder = self.dir / f"bm25-{self.meta('generation')}"
        if self._bm25_rows is None:
            self._bm25_rows = np.load(folder / "rows.npy")
            self._bm25 = bm25s.BM25.load(str(folder)) if len(self._bm25_rows) else None
        if self._bm25 is None:
            return []
        tokens = bm25_tokens([query])
        if not tokens.ids or not tokens.ids[0]:
            return []
        found, scores = self._bm25.retrieve(tokens, k=min(k, len(self._bm25_rows)), show_progress=False)
        return [(int(self._bm25_rows[i]), float(s)) for i, s in zip(found[0], scores[0]) if s > 0]

    def chunks(self, rows: list[int]) -> dict[int, dict[str, Any]]:
        """The chunks at these rows, as records (id, source, path, position, headings, text)."""
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        found = self.conn.execute(
            f"SELECT c.row, c.id, c.source, d.path, c.idx, c.start, c.end, c.headings, c.text, c.tokens, c.sha256 "
            f"FROM chunks c JOIN documents d ON d.source = c.source WHERE c.row IN ({marks})", rows)
        keys = ("row", "id", "source", "path", "index", "start", "end", "headings", "text", "tokens", "sha256")
        records = {}
        for values in found:
            record = dict(zip(keys, values))
            record["headings"] = json.loads(record["headings"])
            records[record["row"]] = record
        return records
