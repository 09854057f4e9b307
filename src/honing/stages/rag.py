"""`honing rag index`, `honing rag ask` and `honing rag eval`.

    index   find the documents ─▶ read each (bad ones skipped into rejects, or stop) ─▶ load the embedding model
            (checked against the index's) ─▶ chunk by its tokens ─▶ update the store: embed only chunks whose hash
            is new, drop removed documents ─▶ run.json: every document with its sha256, counts, the model
    ask     open the index (its embedding model checked) ─▶ hybrid search ─▶ answer=false: print the chunks;
            else the model answers from them ─▶ the answer, which cited ids were retrieved, then the sources
    eval    read the QA set (file:line errors) ─▶ open the index; warn about gold ids it cannot hold ─▶ [load the
            model and judge] ─▶ retrieve for every question ─▶ recall@k, MRR, nDCG@k ─▶ [answer from the chunks ─▶
            found, citations, groundedness (judge or overlap)] ─▶ bootstrap means, per kind ─▶ results.json, report.md
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from honing.config.rag import RagAskConfig, RagEvalConfig, RagIndexConfig
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
        counts = store.update(chunks, table, embedder, settings, dense_index=cfg.dense_index)
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


# --------------------------------------------------------------------------- eval


def _check_gold(cfg: RagEvalConfig, retriever: Any, questions: list[Any]) -> dict[str, list[str]]:
    """The gold ids whose document the index lacks, per question; warned once with the count."""
    from honing.rag.evaluate import missing_gold

    missing = missing_gold(questions, set(retriever.store.documents()))
    if missing:
        absent = sorted({g for ids in missing.values() for g in ids})
        console.print(f"[yellow]{len(absent)} gold ids of {len(missing)} questions name documents the index "
                      f"{cfg.index} does not hold (e.g. {', '.join(absent[:3])}): they can never be retrieved; index "
                      "the directory the gold paths are relative to (builtin:kestrelmark: "
                      "src/honing/rag/data/corpus)[/]", soft_wrap=True)
    return missing


def _load_models(cfg: RagEvalConfig, model: Any, judge: Any) -> tuple[Any, Any]:
    """The answering model and the judge (None: overlap groundedness), both loaded before any answer is asked."""
    from honing.evals.judges import build_judge
    from honing.models.chat import ChatModel

    if not cfg.answer:
        return None, None
    model = model or ChatModel.load(cfg.model, cfg.sampling, role="model", batch_size=cfg.batch_size, progress=True)
    if judge is None and cfg.judge is not None:
        judge = build_judge(cfg.judge, batch_size=cfg.batch_size)
    return model, judge


def _answer_all(cfg: RagEvalConfig, questions: list[Any], hits: list[list[Any]], records: list[dict[str, Any]],
                model: Any, judge: Any) -> dict[str, Any]:
    """Each question answered from its chunks and scored into its record; returns how groundedness was measured."""
    from honing.rag.ask import rag_prompt
    from honing.rag.evaluate import judge_groundedness, model_name, overlap_groundedness, score_answer

    console.print(f"answering {len(questions)} questions with {model_name(model.identity)}", soft_wrap=True,
                  markup=False)
    responses = [text.strip() for text in model.texts([rag_prompt(q.question, h) for q, h in zip(questions, hits)],
                                                      cfg.sampling)]
    grounded = (judge_groundedness(judge, responses, hits) if judge is not None
                else overlap_groundedness(responses, hits, cfg.overlap_threshold))
    for record, question, found, response, verdict in zip(records, questions, hits, responses, grounded):
        record.update(score_answer(question, found, response), **verdict)
    return {"groundedness_method": "judge" if judge is not None else "overlap",
            "groundedness_unparsed": sum(1 for g in grounded if g["groundedness"] is None),
            "model": model.identity, "judge": judge.identity if judge is not None else None}


def _print_summary(summary: dict[str, Any], names: list[str]) -> None:
    from rich.table import Table

    table = Table(title="honing rag eval (means, 95% bootstrap intervals)")
    columns = ["all", *summary["by_kind"]]
    table.add_column("metric")
    for column in columns:
        n = (summary["all"] if column == "all" else summary["by_kind"][column])[names[0]]["n"]
        table.add_column(f"{column} (n={n})", justify="right")
    for name in names:
        cells = []
        for column in columns:
            value = (summary["all"] if column == "all" else summary["by_kind"][column])[name]
            cells.append("–" if value["n"] == 0 else f"{value['mean']:.3f} [{value['low']:.2f}, {value['high']:.2f}]")
        table.add_row(name, *cells)
    console.print(table)


def _record_eval(cfg: RagEvalConfig, data: Path, results: dict[str, Any]) -> dict[str, Any]:
    from honing.io import write_json_atomic, write_text_atomic
    from honing.rag.evaluate import report_markdown
    from honing.runs import RUN_FILE, Run, file_sha256

    run = Run.create("rag-eval", cfg, cfg.output)
    index_record = Path(cfg.index) / RUN_FILE
    run.add_input("rag_index", cfg.index, sha256=file_sha256(index_record) if index_record.is_file() else None,
                  run_json=str(index_record))
    run.add_input("data", data, split=cfg.split)
    if results.get("model"):
        run.set("model", results["model"])
    if results.get("judge"):
        run.set("judge", results["judge"])
    run.add_output("results", write_json_atomic(run.dir / "results.json", results))
    run.add_output("report", write_text_atomic(run.dir / "report.md", report_markdown(results)))
    overall = results["summary"]["all"]
    metrics = {name: overall[name]["mean"] for name in results["metrics"]}
    run.finish("completed", metrics={**metrics, "questions": results["questions"],
                                     "missing_gold": len(results["missing_gold"]),
                                     **({"groundedness_unparsed": results["groundedness_unparsed"]}
                                        if results.get("groundedness_method") else {})})
    console.print(f"rag eval {run.dir}: results.json, report.md", soft_wrap=True, markup=False)
    return {"run_dir": str(run.dir), "metrics": metrics, "summary": results["summary"]}


def evaluate(cfg: RagEvalConfig, *, model: Any = None, judge: Any = None) -> dict[str, Any]:
    """Score retrieval (and, answer=true, the answers) on a QA set; returns the run directory and the means.
    `model`, `judge`: ChatModels already loaded (default: the ones cfg names)."""
    from honing.rag.evaluate import load_questions, metric_names, score_retrieval, summarize
    from honing.rag.search import Retriever

    data, questions = load_questions(cfg.data, cfg.split)
    retriever = Retriever(cfg.index, cfg.embedding_model, cfg.reranker)
    try:
        missing = _check_gold(cfg, retriever, questions)
        model, judge = _load_models(cfg, model, judge)
        console.print(f"{len(questions)} questions from {data}; retrieving {cfg.mode}, k={cfg.k}", soft_wrap=True)
        hits = [retriever.search(q.question, cfg) for q in questions]
    finally:
        retriever.close()
    records = [score_retrieval(q, found, cfg.k) for q, found in zip(questions, hits)]
    answers = _answer_all(cfg, questions, hits, records, model, judge) if cfg.answer else {}
    names = metric_names(cfg.k, cfg.answer)
    summary = summarize(records, names)
    _print_summary(summary, names)
    results = {"data": str(data), "split": cfg.split, "index": cfg.index, "questions": len(questions),
               "retrieval": {"k": cfg.k, "mode": cfg.mode, "candidates": cfg.candidates, "rrf_k": cfg.rrf_k,
                             "reranker": cfg.reranker},
               "metrics": names, "summary": summary, "missing_gold": missing, **answers,
               **({"overlap_threshold": cfg.overlap_threshold} if answers.get("groundedness_method") == "overlap"
                  else {}),
               "per_question": records}
    return _record_eval(cfg, data, results)
