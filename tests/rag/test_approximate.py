"""The approximate dense index (dense_index: ivf): recall@10 against exact search on clustered unit vectors at the
default nprobe, the choice recorded in the index and honoured when it is reopened, auto's threshold, an update that
switches kinds, and bad values as config errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import ValidationError

from honing.config.rag import RagAskConfig, RagIndexConfig
from honing.config.retrieval import RetrievalConfig
from honing.errors import HoningError
from honing.rag import store as store_module
from honing.rag.chunking import Chunk
from honing.rag.store import Store, build_dense, dense_kind, ivf_lists

ROWS, DIMENSION, CLUSTERS = 3000, 48, 60


def clustered(rows: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around CLUSTERS random centres (spread 0.6: clusters overlap, as topics do)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIMENSION)).astype(np.float32)
    points = centres[rng.integers(0, CLUSTERS, rows)] + 0.6 * rng.standard_normal((rows, DIMENSION))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)  # (rows, D)


class TableEmbedder:
    """Embeds "chunk <i>" as row i of a fixed matrix."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.dimension = vectors.shape[1]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[int(text.split()[1]) for text in texts]] if texts else self.vectors[:0]


def chunks_of(rows: int) -> tuple[list[Chunk], dict]:
    chunks = [Chunk(f"doc.md#{i}", "doc.md", i, 0, 0, (), f"chunk {i}", 2,
                    hashlib.sha256(f"chunk {i}".encode()).hexdigest()) for i in range(rows)]
    return chunks, {"doc.md": {"path": "doc.md", "sha256": "0" * 64, "chunks": rows}}


def build(directory, vectors: np.ndarray, dense_index: str) -> None:
    chunks, documents = chunks_of(len(vectors))
    store = Store.create_or_open(directory)
    store.update(chunks, documents, TableEmbedder(vectors), {"embedding_model": {"name": "table"}}, dense_index)
    store.close()


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(ROWS)


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory, vectors):
    directory = tmp_path_factory.mktemp("approximate") / "idx"
    build(directory, vectors, "ivf")
    return directory


def test_ivf_recall_at_10_against_exact_at_the_default_nprobe(ivf_index, vectors):
    queries = clustered(200, seed=1)  # new points from the same clusters
    exact, _ = build_dense(vectors, "flat")
    _, truth = exact.search(queries, 10)  # (Q, 10)
    store = Store.open(ivf_index)
    nprobe = RetrievalConfig().nprobe
    found = [[row for row, _ in store.dense_search(query, 10, nprobe)] for query in queries]
    store.close()
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95
    assert nprobe < ivf_lists(ROWS)  # it really is approximate: not every list is scanned


def test_the_choice_survives_reopening(ivf_index, vectors):
    store = Store.open(ivf_index)
    assert store.dense_info() == {"index": "ivf", "nlist": ivf_lists(ROWS), "requested": "ivf"} == {
        "index": "ivf", "nlist": round(4 * ROWS ** 0.5), "requested": "ivf"}
    query = vectors[7]
    # every list scanned (nprobe None, or more than nlist): the same answer as exact search
    exact = store_module.build_dense(vectors, "flat")[0].search(query.reshape(1, -1), 5)[1][0].tolist()
    assert [row for row, _ in store.dense_search(query, 5)] == exact
    assert [row for row, _ in store.dense_search(query, 5, 10 ** 6)] == exact
    assert store.dense_search(query, 1, 1)[0][0] == 7  # a stored vector is its own nearest chunk
    store.close()


def test_auto_is_exact_below_the_threshold_and_ivf_from_it(tmp_path, vectors, monkeypatch):
    assert dense_kind("auto", store_module.AUTO_IVF_ROWS - 1) == "flat"
    assert dense_kind("auto", store_module.AUTO_IVF_ROWS) == "ivf"
    build(tmp_path / "small", vectors[:500], "auto")
    assert Store.open(tmp_path / "small").dense_info() == {"index": "flat", "requested": "auto"}
    monkeypatch.setattr(store_module, "AUTO_IVF_ROWS", 400)
    build(tmp_path / "large", vectors[:500], "auto")
    assert Store.open(tmp_path / "large").dense_info() == {"index": "ivf", "nlist": ivf_lists(500),
                                                           "requested": "auto"}


def test_an_update_switches_kind_in_a_new_generation(tmp_path, vectors):
    directory = tmp_path / "idx"
    build(directory, vectors[:300], "ivf")
    build(directory, vectors[:300], "flat")
    store = Store.open(directory)
    assert store.meta("generation") == 2 and store.dense_info()["index"] == "flat"
    assert sorted(p.name for p in directory.glob("dense-*.faiss")) == ["dense-2.faiss"]
    assert store.dense_search(vectors[3], 1, 4)[0][0] == 3  # a flat index ignores nprobe
    store.close()


def test_tiny_and_empty_ivf_indexes(tmp_path, vectors):
    build(tmp_path / "one", vectors[:1], "ivf")
    store = Store.open(tmp_path / "one")
    assert store.dense_info()["nlist"] == 1 and store.dense_search(vectors[0], 4, 32)[0][0] == 0
    store.close()
    build(tmp_path / "none", vectors[:0], "ivf")
    assert Store.open(tmp_path / "none").dense_search(vectors[0], 4) == []


def test_bad_values_are_config_errors(tmp_path, vectors):
    with pytest.raises(ValidationError, match="dense_index"):
        RagIndexConfig(docs=["d"], index="i", dense_index="hnsw")
    for bad in (0, -3):
        with pytest.raises(ValidationError, match="nprobe"):
            RetrievalConfig(nprobe=bad)
    with pytest.raises(ValidationError, match="nprobe"):
        RagAskConfig(question="q", index="i", nprobe=0)
    assert RagIndexConfig(docs=["d"], index="i").dense_index == "auto"
    with pytest.raises(HoningError, match="dense_index 'hnsw': use one of flat, ivf, auto"):
        build(tmp_path / "bad", vectors[:10], "hnsw")
    assert not (tmp_path / "bad" / "dense-1.faiss").exists()  # nothing written
