"""`honing rag index`: an incremental update embeds only new chunks and removes deleted documents, the run record
hashes every document, bad documents are skipped into rejects (or stop the run), and the one-line errors: a missing
index, an index of another embedding model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from honing.config.rag import RagAskConfig, RagIndexConfig
from honing.errors import HoningError
from honing.runs import file_sha256
from honing.stages.rag import ask, index

MANUAL = """# Zephyr 3000 manual

## Reset

To reset the Zephyr 3000, hold the blue button for ten seconds. The light blinks twice.

## Warranty

The warranty lasts 18 months from purchase. It does not cover water damage.
"""
POLICY = "<html><body><h1>Returns</h1><p>Returns are accepted within 30 days with a receipt.</p></body></html>"
CHANGELOG = '{"text": "Version 2.1 added a dark mode."}\n{"text": "Version 2.2 fixed the battery drain."}\n'


@pytest.fixture()
def corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.md").write_text(MANUAL)
    (docs / "policy.html").write_text(POLICY)
    (docs / "changelog.jsonl").write_text(CHANGELOG)
    return docs


def build(docs, **settings) -> dict:
    return index(RagIndexConfig(docs=[str(docs)], index="idx", **settings))


def test_a_rerun_embeds_only_new_chunks_and_removes_deleted_documents(corpus):
    first = build(corpus)
    assert first["documents"] == 3 and first["chunks"] == 5 and first["embedded"] == 5 and first["reused"] == 0

    unchanged = build(corpus)
    assert unchanged["embedded"] == 0 and unchanged["reused"] == 5

    (corpus / "manual.md").write_text(MANUAL + "\n## Cleaning\n\nWipe it with a dry cloth.\n")
    (corpus / "changelog.jsonl").unlink()
    updated = build(corpus)
    # one new section of the manual is the only new text; the changelog's two chunks are gone
    assert updated["embedded"] == 1 and updated["reused"] == 3 and updated["chunks"] == 4
    assert updated["removed_documents"] == 1
    record = json.loads(Path("idx/run.json").read_text())
    assert record["removed_documents"] == ["changelog.jsonl"]
    assert len(list(Path("idx/history").glob("*.json"))) == 2, "earlier runs are kept"

    hits = ask(RagAskConfig(question="battery drain", index="idx", answer=False, k=4))["chunks"]
    assert all(not hit["id"].startswith("changelog") for hit in hits)


def test_the_run_record_hashes_every_document_and_the_model(corpus):
    build(corpus)
    record = json.loads(Path("idx/run.json").read_text())
    documents = {entry["path"]: entry for entry in record["inputs"] if entry["role"] == "document"}
    assert set(documents) == {f"{corpus}/{name}" for name in ("changelog.jsonl", "manual.md", "policy.html")}
    assert all(entry["sha256"] == file_sha256(path) for path, entry in documents.items())
    model = next(entry for entry in record["inputs"] if entry["role"] == "embedding_model")
    assert model["name"] == "all-MiniLM-L6-v2" and model["sha256"] == file_sha256(model["path"])
    assert record["metrics"]["chunks"] == 5 and record["status"] == "completed"


def test_lineage_walks_from_the_index_to_its_documents(corpus):
    from honing.registry.lineage import build_lineage

    build(corpus)
    graph = build_lineage("idx", verify=True)
    files = {Path(node.path).name for node in graph.nodes.values() if node.kind == "file"}
    assert {"manual.md", "policy.html", "changelog.jsonl", "model.zip"} <= files
    assert graph.passed
    (corpus / "manual.md").write_text("changed")
    assert not build_lineage("idx", verify=True).passed, "a changed document shows"


def test_a_bad_document_is_skipped_into_rejects_or_stops_the_run(corpus):
    (corpus / "empty.md").write_text("\n")
    (corpus / "blob.txt").write_bytes(b"\x00\x00binary")
    result = build(corpus)
    assert result["rejected"] == 2 and result["documents"] == 3
    rejects = [json.loads(line) for line in Path("idx/rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"path": f"{corpus}/blob.txt", "source": "blob.txt", "reason": "binary content (NUL bytes), not text"},
                       {"path": f"{corpus}/empty.md", "source": "empty.md", "reason": "empty: no text to index"}]
    with pytest.raises(HoningError, match=r"empty\.md: empty: no text to index; fix or remove it"):
        index(RagIndexConfig(docs=[str(corpus / "empty.md"), str(corpus / "manual.md")], index="other",
                             on_bad_document="stop"))
    assert not Path("other").exists(), "a stopped run leaves no index behind"


def test_chunk_ids_name_documents_relative_to_the_given_directory(corpus, tmp_path):
    (corpus / "sub").mkdir()
    (corpus / "sub" / "notes.txt").write_text("Inside a folder.")
    (corpus / "idx").mkdir()
    (corpus / "idx" / "stray.md").write_text("An index directory is never indexed.")
    index(RagIndexConfig(docs=[str(corpus)], index=str(corpus / "idx")))
    hits = ask(RagAskConfig(question="folder", index=str(corpus / "idx"), answer=False, k=10))["chunks"]
    assert {hit["id"].split("#")[0] for hit in hits} == {"manual.md", "policy.html", "changelog.jsonl",
                                                          "sub/notes.txt"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manual.md").write_text("Another manual.")
    with pytest.raises(HoningError, match=r"manual\.md and .*other/manual\.md would both be named manual\.md"):
        index(RagIndexConfig(docs=[str(corpus), str(tmp_path / "other")], index="idx"))


def _other_model(tmp_path) -> Path:
    """A copy of the embedded model with one config file changed: another model, as far as hashes go."""
    from honing.rag.embed import embedded_model_dir

    copy = tmp_path / "other-model"
    shutil.copytree(embedded_model_dir(), copy)
    config = json.loads((copy / "config_sentence_transformers.json").read_text())
    (copy / "config_sentence_transformers.json").write_text(json.dumps({**config, "note": "changed"}))
    return copy


def test_another_embedding_model_than_the_indexs_is_an_error_naming_both(corpus, tmp_path):
    build(corpus)
    other = _other_model(tmp_path)
    with pytest.raises(HoningError, match=rf"built with the embedding model all-MiniLM-L6-v2 .*but the query uses "
                                          rf"{other} "):
        ask(RagAskConfig(question="reset", index="idx", embedding_model=str(other), answer=False))
    with pytest.raises(HoningError, match="built with the embedding model all-MiniLM-L6-v2"):
        build(corpus, embedding_model=str(other))


def test_the_embedded_model_is_extracted_once_without_importing_its_package(tmp_path):
    code = ("import sys; from honing.rag.embed import embedded_model_dir; first = embedded_model_dir(); "
            "again = embedded_model_dir(); assert first == again; "
            "assert not [m for m in sys.modules if m.startswith('all_minilm')], 'the package was imported'; "
            "print(first)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HONING_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())  # the only output: the package's own print never ran
    assert folder.parent == tmp_path / "cache" / "embeddings"
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name], "no staging folder left behind"


def test_a_missing_index_is_one_line_on_the_command_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "honing.cli", "rag", "ask", "How do I reset it?", "--index",
                             str(tmp_path / "nowhere"), "--no-answer"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: index {tmp_path / 'nowhere'} does not exist; build it with: honing rag "
                                     f"index DOCS... --index {tmp_path / 'nowhere'}")


@pytest.mark.slow
def test_rag_ask_on_the_command_line_prints_the_answer_then_its_sources(corpus, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "honing.cli", "rag"]
    built = subprocess.run([*command, "index", str(corpus), "--index", "idx"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert built.returncode == 0, built.stderr
    asked = subprocess.run([*command, "ask", "How long does the warranty last?", "--index", "idx", "k=2",
                            "sampling.max_new_tokens=60"], capture_output=True, text=True, env=env, timeout=600)
    assert asked.returncode == 0, asked.stderr
    answer, _, sources = asked.stdout.rpartition("sources:")
    assert "18 months" in answer  # the embedded SmolLM2 reads it off the retrieved chunk
    lines = [line.split() for line in sources.strip().splitlines()]
    assert lines[0][:2] == [str(corpus / "manual.md"), "manual.md#1"] and len(lines) == 2


def test_dense_index_reaches_the_store_from_the_command(corpus):
    from honing.rag.store import Store

    build(corpus, dense_index="ivf")
    store = Store.open("idx")
    try:
        assert store.dense_info()["index"] == "ivf"
    finally:
        store.close()
    build(corpus)  # auto: a few chunks are searched exactly
    store = Store.open("idx")
    try:
        assert store.dense_info()["index"] == "flat"
    finally:
        store.close()
