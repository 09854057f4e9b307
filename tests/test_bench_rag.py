"""The retrieval benchmark at tiny scale, so it cannot rot: the real embedder, Store.update, Retriever and FAISS
over 3,000 chunks (30 embedded for real); the JSON has every figure, recall is a share, the table renders."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import rag as bench_rag

pytest.importorskip("faiss")
pytest.importorskip("bm25s")


def test_arguments():
    args = bench_rag.parse_args(["--chunks", "500", "--embed-sample", "10", "--nprobe", "24", "--sweep", "1,64"])
    assert args.chunks == 500 and args.embed_sample == 10 and args.sweep == [1, 24, 64]
    assert bench_rag.parse_args([]).chunks == 1_000_000 and bench_rag.parse_args([]).nprobe == 64
    for bad in (["--chunks", "10", "--embed-sample", "11"], ["--embed-sample", "0"], ["--sweep", "0"]):
        with pytest.raises(SystemExit):
            bench_rag.parse_args(bad)


def test_recall_counts_ties_at_the_kth_place_as_found():
    import numpy as np

    exact = np.array([[0.9, 0.8, 0.7]])
    assert bench_rag.recall_at(np.array([[0.9, 0.8, 0.7]]), exact, k=3) == [1.0]  # same scores, any ids
    assert bench_rag.recall_at(np.array([[0.9, 0.7, 0.6]]), exact, k=3) == [pytest.approx(2 / 3)]


def test_tiny_run_writes_every_figure(tmp_path):
    out = tmp_path / "rag.json"
    report = bench_rag.main(["--chunks", "3000", "--embed-sample", "30", "--pieces", "120", "--latency-queries", "3",
                             "--recall-queries", "140", "--sweep", "1,8,64", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m bench.rag --chunks 3000")
    for key in ("settings", "hardware", "versions", "embedding", "synthetic", "build", "disk", "latency", "recall",
                "phases", "threads", "peak_rss_mib", "wall_s", "load_average_start", "load_average_end", "started", "finished"):
        assert key in saved, key
    assert saved["hardware"]["cpu_count"] >= 1 and "faiss-cpu" in saved["versions"]
    embedding = saved["embedding"]
    assert embedding["chunks"] == 30 and embedding["chunks_per_s"] > 0 and embedding["tokens_per_chunk"]["mean"] > 0
    assert saved["synthetic"] == {**saved["synthetic"], "chunks": 2970, "real": 30}
    assert -1 <= saved["synthetic"]["cosine_real_vs_synthetic"]["mean"] <= 1
    build = saved["build"]
    assert build["ivf"] == {"index": "ivf", "nlist": round(4 * 3000 ** 0.5), "requested": "ivf"}
    assert all(build[k] >= 0 for k in ("update_s", "sqlite_s", "bm25_s", "dense_ivf_s", "dense_flat_s"))
    assert saved["disk"]["index_mib"] > 0 and saved["disk"]["dense_flat_mib"] > 0
    assert set(saved["latency"]) == {"bm25", "dense_exact", "dense_ivf", "hybrid"}
    for mode, row in saved["latency"].items():
        assert row["queries"] == 3 and 0 < row["ms"]["p50"] <= row["ms"]["p95"], mode
    assert saved["latency"]["bm25"]["dense_search_ms"] is None and saved["latency"]["hybrid"]["dense_search_ms"]
    recall = saved["recall"]
    assert recall["nprobe"] == 64 and recall["queries"] == 140 and recall["questions"] == 120
    assert [row["nprobe"] for row in recall["sweep"]] == [1, 8, 64]
    for value in [row["recall_at_10"] for row in recall["sweep"]] + [recall["recall_at_10"],
                                                                     recall["recall_at_10_questions_only"]]:
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert recall["sweep"][0]["recall_at_10"] <= recall["sweep"][-1]["recall_at_10"]
    assert set(recall["sample_check"]) == {"chunks", "real", "synthetic"}

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    bench_rag.render(report, console)
    text = console.file.getvalue()
    assert "recall@10 at nprobe 64" in text and "dense exact" in text and "chunks/s" in text
