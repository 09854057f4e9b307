"""`honing rag index` and `honing rag ask`.

    index   find the documents ─▶ read each (bad ones skipped into rejects, or stop) ─▶ load the embedding model
            (checked against the index's) ─▶ chunk by its tokens ─▶ update the store: embed only chunks whose hash
            is new, drop removed documents ─▶ run.json: every document with its sha256, counts, the model
    ask     open the index (its embedding model checked) ─▶ hybrid search ─▶ answer=false: print the chunks;
            else the model answers from them ─▶ the answer, which cited ids were retrieved, then the sources
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from honing.config.rag import RagAskConfig, RagIndexConfig
from honing.errors import HoningError
from honing.ui import console

REJECTS = "rejects.jsonl"


# --------------------------------------------------------------------------- index


def read_documents(cfg: RagIndexConfig) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(documents read, by source name; rejects); a bad document stops the run when on_bad_document is stop."""
    from honing.rag.documents import BadDocument, find_documents, read_document

    documents, rejects = {}, []
    for source, path in find_documents(cfg.docs, exclude=Path(cfg.index)).items():
        try:
            documents[source] = read_document(path, cfg.text_field)
        except (BadDocument, OSError) as err:
            reason = str(err) if isinstance(err, BadDocument) else f"unreadable ({err.strerror or err})"
            if cfg.on_bad_document == "stop":
                raise HoningError(f"{path}: {reason}; fix or remove it, or set on_bad_document=skip") from None
            console.print(f"[yellow]skipped {path}: {reason}[/]", soft_wrap=True)
            rejects.append({"path": str(path), "source": source, "reason": reason})
    if not documents:
        raise HoningError(f"no readable document in {', '.join(cfg.docs)} (.md, .txt, .html, .jsonl, .pdf)")
    return documents, rejects


def check_index_model(index: str, identity: dict[str, Any]) -> None:
    """An existing index must have been built with this embedding model (nothing is written before this check)."""
    from honing.rag.search import check_model
    from honing.rag.store import DATABASE, Store

    if not (Path(index) / DATABASE).is_file():
        return
    store = Store.create_or_open(index)
    try:
        recorded = store.meta("embedding_model")
        if recorded is not None:  # None: an earlier first update never completed
            check_model(index, recorded, identity)
    finally:
        store.close()


def chunk_all(documents: dict[str, Any], embedder: Any, cfg: RagIndexConfig) -> tuple[list[Any], dict[str, dict]]:
    """Every chunk, and the document table (source -> path, sha256, chunks)."""
    from honing.rag.chunking import chunk_document
    from honing.runs import file_sha256

    chunks, table = [], {}
    for source, document in documents.items():
        found = chunk_document(document, source, embedder.spans, cfg.chunk_tokens, cfg.overlap_tokens)
        chunks.extend(found)
        table[source] = {"path": str(document.path), "sha256": file_sha256(document.path), "chunks": len(found)}
    return chunks, table


def _start_run(cfg: RagIndexConfig, index: Path):
    """The index's run record; the previous one moves to history/ (the index is updated in place)."""
    import json

    from honing.runs import RUN_FILE, Run

    previous = index / RUN_FILE
    if previous.is_file():
        run_id = json.loads(previous.read_text(encoding="utf-8")).get("run_id", "previous")
        (index / "history").mkdir(exist_ok=True)
        shutil.move(str(previous), index / "history" / f"{run_id}.json")
    return Run.create("rag-index", cfg, index)


def _write_rejects(index: Path, rejects: list[dict[str, str]]) -> Path | None:
    from honing.io import write_jsonl_atomic

    path = index / REJECTS
    if not rejects:
        path.unlink(missing_ok=True)
        return None
    return write_jsonl_atomic(path, rejects)


def index(cfg: RagIndexConfig) -> dict[str, Any]:
    """Build or update the index; returns its directory and the counts (embedded: chunks embedded this run)."""
    from honing.rag.embed import Embedder, model_identity
    from honing.rag.store import Store

    documents, rejects = read_documents(cfg)
    check_index_model(cfg.index, model_identity(cfg.embedding_model))
    embedder = Embedder(cfg.embedding_model, batch_size=cfg.batch_size)
    chunks, table = chunk_all(documents, embedder, cfg)
    console.print(f"{len(documents)} documents, {len(chunks)} chunks of at most {cfg.chunk_tokens} tokens "
                  f"(overlap {cfg.overlap_tokens}); embedding model {embedder.identity['name']}", soft_wrap=True)
    store = Store.create_or_open(cfg.index)
    try:
        run = _start_run(cfg, store.dir)
        settings = {"embedding_model": embedder.identity, "chunk_tokens": cfg.chunk_tokens,
                    "overlap_tokens": cfg.overlap_tokens}
        counts = store.update(chunks, table, embedder, settings)
    finally:
        store.close()
    return _record_index(run, cfg, embedder, table, rejects, counts)


def _record_index(run: Any, cfg: RagIndexConfig, embedder: Any, table: dict[str, dict], rejects: list[dict],
                  counts: Any) -> dict[str, Any]:
    identity = embedder.identity
    run.add_input("embedding_model", identity["file"], sha256=identity["sha256"], name=identity["name"])
    for source, entry in table.items():
        run.add_input("document", entry["path"], sha256=entry["sha256"], source=source, chunks=entry["chunks"])
    rejects_path = _write_rejects(run.dir, rejects)
    if rejects_path:
        run.add_output("rejects", rejects_path)
    run.add_output("index", run.dir)
    metrics = {"documents": counts.documents, "chunks": counts.chunks, "embedded": counts.embedded,
               "reused": counts.reused, "removed_documents": len(counts.removed_documents), "rejected": len(rejects)}
    run.set("removed_documents", counts.removed_documents)
    run.finish("completed", metrics=metrics)
    console.print(f"index {run.dir}: {counts.chunks} chunks from {counts.documents} documents; embedded "
                  f"{counts.embedded}, reused {counts.reused}, removed {len(counts.removed_documents)} documents, "
                  f"rejected {len(rejects)}", soft_wrap=True, markup=False)
    return {"index": str(run.dir), **metrics}


# --------------------------------------------------------------------------- ask


def retrieve(cfg: RagAskConfig) -> list[Any]:
    from honing.rag.search import Retriever

    retriever = Retriever(cfg.index, cfg.embedding_model, cfg.reranker)
    try:
        return retriever.search(cfg.question, cfg)
    finally:
        retriever.close()


def answer_question(cfg: RagAskConfig, hits: list[Any], model: Any = None) -> str:
    from honing.models.chat import ChatModel
    from honing.rag.ask import rag_prompt

    model = model or ChatModel.load(cfg.model, cfg.sampling, role="model")
    return model.texts([rag_prompt(cfg.question, hits)], cfg.sampling)[0].strip()


def say(text: str = "") -> None:
    """The command's result (the chunks, the answer, its sources) goes to stdout; progress and warnings to stderr."""
    print(text, flush=True)


def _print_chunks(hits: list[Any]) -> None:
    for rank, hit in enumerate(hits, 1):
        heading = " > ".join(hit.chunk["headings"])
        say(f"[{rank}] {hit.id}  ({hit.chunk['path']}{', ' + heading if heading else ''}; score {hit.score:.4f})")
        say(hit.chunk["text"].strip())
        say()


def _print_sources(hits: list[Any], citations: Any) -> None:
    say("sources:")
    for hit in hits:
        mark = "cited" if hit.id in citations.retrieved else "retrieved"
        say(f"  {hit.chunk['path']}  {hit.id}  ({mark})")
    if citations.unknown:
        console.print(f"[yellow]the answer cites ids that were not retrieved: {', '.join(citations.unknown)}[/]",
                      soft_wrap=True)


def ask(cfg: RagAskConfig, *, model: Any = None) -> dict[str, Any]:
    """Retrieve, then (answer=true) answer; returns the chunks, and the answer and its citations. `model`: a
    ChatModel already loaded (default: the one cfg.model names)."""
    from honing.rag.ask import check_citations

    hits = retrieve(cfg)
    chunks = [{"id": hit.id, "path": hit.chunk["path"], "score": hit.score, "ranks": hit.ranks,
               "text": hit.chunk["text"]} for hit in hits]
    if not cfg.answer:
        _print_chunks(hits)
        return {"chunks": chunks}
    if not hits:
        raise HoningError(f"index {cfg.index}: nothing retrieved for the question; the index is empty")
    answer = answer_question(cfg, hits, model)
    citations = check_citations(answer, hits)
    say(answer)
    say()
    _print_sources(hits, citations)
    return {"answer": answer, "chunks": chunks, "cited": citations.retrieved, "cited_unknown": citations.unknown}
