"""`honing ladder`: prompt → few-shot → RAG → fine-tune → fine-tune + RAG, on one held-out set.

    read the task (file:line errors) and the training data ─▶ [rag.docs: honing rag index, incremental]
    ─▶ [fine-tune rungs: reuse the finished run, or train a LoRA with honing sft (resumed when it was cut off)]
    ─▶ each rung's prompts: the task's own; + the k most similar training examples as earlier turns;
       + the top k chunks in the question's turn ─▶ answers (the base model, then the fine-tuned one; cached)
    ─▶ scores with bootstrap intervals, each rung's paired difference from the best, costs, the recommendation
    ─▶ results.json, answers.jsonl, report.md, report.html, run.json

Every rung answers the same examples with the same sampling, so differences are paired. A rung's prompt is built
here (not inside the model), so the cache keys on exactly what the model was asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from honing.config.ladder import NEEDS_RAG, RUNGS, LadderConfig
from honing.errors import DataError, HoningError
from honing.ui import console

CACHE_VERSION = 1
ANSWER_GROUP = 8
"""Prompts answered (and cached) together, in batches: batch_size × this."""
FINETUNE_RUNGS = ("finetune", "finetune_rag")


@dataclass
class RungAnswers:
    """One rung's answers, with what each cost. `seconds` is the answer's share of its batch's wall time."""

    rung: str
    rows: list[dict[str, Any]]
    computed: int = 0
    retrieval_seconds: float = 0.0


@dataclass
class Tuned:
    """The fine-tuned rungs' adapter and what training it took."""

    adapter: Path
    run_dir: Path | None
    minutes: float | None
    reused: bool

    @property
    def truncated(self) -> int | None:
        """Training examples the fine-tune cut to its max_length (its run record's data.truncated)."""
        try:
            record = json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))
            value = record["data"]["truncated"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return value if isinstance(value, int) else None


# --------------------------------------------------------------------------- inputs


def _load_task(cfg: LadderConfig) -> list[Any]:
    from honing.evals import metrics as M
    from honing.evals.tasks import data_path, load_examples, metric_names, primary_metric

    for name in metric_names(cfg.task):
        M.load_metric(name)  # an unknown metric fails before any model loads
    primary_metric(cfg.task)
    examples = load_examples(cfg.task)
    console.print(f"task {cfg.task.name}: {len(examples)} held-out examples from {data_path(cfg.task)}")
    return examples


def read_shots(path: str) -> list[tuple[str, str]]:
    """(question, answer) of every training record: its last user turn and its wanted answer."""
    from honing.data.loading import read_records
    from honing.data.prompts import as_messages, last_user_text, prompt_of
    from honing.evals.tasks import reference_of

    shots = []
    for file, line, record in read_records(Path(path)):
        where = f"{file}:{line}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: each training record must be an object, got {type(record).__name__}")
        question, answer = last_user_text(as_messages(prompt_of(record, where))), reference_of(record)
        if not question.strip() or not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where}: a training record needs a user turn and an answer (a final assistant turn, "
                            "`answer`, `output` or `reference`)")
        shots.append((question, answer))
    if not shots:
        raise DataError(f"{path} holds no training records")
    return shots


def same_text_key(text: str) -> str:
    """Two questions that differ only in case, spacing, Unicode form or end punctuation are the same question."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(" .?!")


class ShotPicker:
    """The training examples nearest a question by embedding cosine; a training example that is the question itself
    (same_text_key) is never its own example."""

    def __init__(self, shots: list[tuple[str, str]], embedding_model: str | None):
        from honing.rag.embed import Embedder

        self.shots = shots
        self.keys = [same_text_key(question) for question, _ in shots]
        self.embedder = Embedder(embedding_model)
        self.vectors = self.embedder.embed([question for question, _ in shots])  # (N, D) unit rows

    def nearest(self, questions: list[str], k: int) -> list[list[int]]:
        """For each question, the indices of its k nearest shots, the nearest last."""
        import numpy as np

        similarity = self.embedder.embed(questions) @ self.vectors.T  # (Q, N)
        picked = []
        for row, question in zip(similarity, questions):
            asked = same_text_key(question)
            order = [int(i) for i in np.argsort(-row, kind="stable") if self.keys[int(i)] != asked]
            picked.append(order[:k][::-1])
        return picked


def overlap(examples: list[Any], shots: list[tuple[str, str]]) -> list[str]:
    """Ids of held-out examples whose question is also in the training data (they inflate the fine-tuned rungs)."""
    from honing.data.prompts import as_messages, last_user_text

    trained = {same_text_key(question) for question, _ in shots}
    return [e.id for e in examples if same_text_key(last_user_text(as_messages(e.prompt))) in trained]


def _prepare_index(cfg: LadderConfig) -> Path:
    """The rag rungs' index: built or brought up to date from rag.docs, or the one given."""
    from honing.config.rag import RagIndexConfig
    from honing.rag.store import DATABASE

    rag = cfg.rag
    assert rag is not None
    if rag.docs:
        from honing.stages.rag import index

        console.print(f"indexing {', '.join(rag.docs)} into {rag.index} (only what changed is embedded)")
        index(RagIndexConfig(docs=rag.docs, index=rag.index, embedding_model=rag.embedding_model,
                             chunk_tokens=rag.chunk_tokens, overlap_tokens=rag.overlap_tokens))
    elif not (Path(rag.index) / DATABASE).is_file():
        raise HoningError(f"rag.index {rag.index} is not an index; build it with honing rag index DOCS --index "
                          f"{rag.index}, or give rag.docs so the ladder builds it")
    return Path(rag.index)


# --------------------------------------------------------------------------- the fine-tune


def _sft_config(cfg: LadderConfig, directory: str | None) -> Any:
    from honing.config import SFTConfig
    from honing.config.data import DataConfig
    from honing.config.model import ModelConfig
    from honing.config.output import OutputConfig

    tune = cfg.finetune
    model = ModelConfig(path=cfg.model.path, tokenizer=cfg.model.tokenizer, dtype=cfg.model.dtype)
    return SFTConfig(model=model, adapter=tune.adapter, train=tune.train,
                     data=DataConfig(train=cfg.train, max_length=tune.max_length, system_prompt=cfg.task.system_prompt,
                                     validation_split=tune.validation_split, train_on="all_assistant"),
                     output=OutputConfig(dir=directory, save="adapter", tensorboard=False))


def _train_data_sha(path: str) -> str:
    from honing.runs import file_sha256, tree_sha256

    train = Path(path)
    if not train.exists():
        raise DataError(f"train: {train} does not exist; give the training data file (or directory)")
    return tree_sha256(train) if train.is_dir() else file_sha256(train)


def _settings(cfg: LadderConfig) -> dict[str, Any]:
    settings = _sft_config(cfg, None).model_dump(mode="json", exclude={"output"})
    if cfg.finetune.with_context:  # the training prompts depend on what the index holds and how it is searched
        from honing.rag.store import index_content_key

        settings["with_context"] = {**cfg.rag.model_dump(mode="json", exclude={"docs", "index"}),
                                    "index": index_content_key(cfg.rag.index)}
    return settings


def with_context_records(cfg: LadderConfig) -> list[dict[str, Any]]:
    """The training records with each question's retrieved chunks in its turn, as the RAG rungs ask it."""
    from honing.data.loading import read_records
    from honing.data.prompts import as_messages, last_user_text, prompt_of, with_question
    from honing.evals.tasks import reference_of
    from honing.rag.ask import rag_prompt
    from honing.rag.search import Retriever

    retriever = Retriever(cfg.rag.index, cfg.rag.embedding_model, cfg.rag.reranker)
    records = []
    try:
        for file, line, record in read_records(Path(cfg.train)):
            where = f"{file}:{line}"
            if not isinstance(record, dict):
                raise DataError(f"{where}: each training record must be an object, got {type(record).__name__}")
            messages = as_messages(prompt_of(record, where), cfg.task.system_prompt)
            question, answer = last_user_text(messages), reference_of(record)
            if not question.strip() or not isinstance(answer, str):
                raise DataError(f"{where}: a training record needs a user turn and an answer")
            hits = retriever.search(question, cfg.rag)
            grounded = with_question(messages, rag_prompt(question, hits, cfg.rag.instruction))
            records.append({"messages": [*grounded, {"role": "assistant", "content": answer}]})
    finally:
        retriever.close()
    return records


def finetune_dir(cfg: LadderConfig) -> Path:
    """runs/ladder-finetune-<12 hex>: the hash of the fine-tune's settings and of the training data's bytes."""
    from honing.evals.cache import key_of

    if cfg.finetune.dir:
        return Path(cfg.finetune.dir)
    return Path("runs") / f"ladder-finetune-{key_of(settings=_settings(cfg), data=_train_data_sha(cfg.train))[:12]}"


def finetune_key(cfg: LadderConfig) -> str:
    """What the fine-tune is a function of: its settings, the training data's bytes and the base model's weights
    (written beside the run as ladder.json, checked before it is reused or resumed)."""
    from honing.evals.cache import key_of

    return key_of(settings=_settings(cfg), data=_train_data_sha(cfg.train), base=_fingerprint(cfg, None))


def _run_minutes(run_dir: Path) -> float | None:
    """Training minutes of a run: its train_seconds (summed over resumes), else started → finished; None unknown."""
    import datetime as dt

    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        train_seconds = (record.get("metrics") or {}).get("train_seconds")
        if isinstance(train_seconds, (int, float)) and train_seconds > 0:
            return train_seconds / 60
        started, finished = dt.datetime.fromisoformat(record["started"]), dt.datetime.fromisoformat(record["finished"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (finished - started).total_seconds() / 60


def _given_run(cfg: LadderConfig) -> Tuned:
    """finetune.run: its adapter, checked to be trained on the ladder's model."""
    from honing.config.model import ModelConfig
    from honing.errors import ModelError
    from honing.models.adapters import read_adapter_base, resolve_adapter_dir
    from honing.models.source import resolve_model_source, source_sha256

    try:
        adapter = resolve_adapter_dir(cfg.finetune.run)
        trained_on = read_adapter_base(adapter)
    except ModelError as err:
        raise HoningError(f"finetune.run: {err}") from None
    base_sha = source_sha256(resolve_model_source(ModelConfig(path=cfg.model.path)))
    if trained_on.get("sha256") and base_sha and trained_on["sha256"] != base_sha:
        named = trained_on.get("model_id") or trained_on.get("path")
        raise HoningError(f"finetune.run: {adapter} was trained on {named} (weights sha256 {trained_on['sha256'][:12]}…), "
                          f"not on the ladder's model {cfg.model.path or 'embedded SmolLM2-135M-Instruct'}; set "
                          "model.path to the adapter's base so every rung starts from the same weights")
    run_dir = next((d for d in (adapter, adapter.parent) if (d / "run.json").is_file()), None)
    console.print(f"fine-tuned rungs: the adapter of {cfg.finetune.run} (given; not trained again)")
    return Tuned(adapter, run_dir, _run_minutes(run_dir) if run_dir else None, reused=True)


def _status(directory: Path) -> str | None:
    record = directory / "run.json"
    if not record.is_file():
        return None
    try:
        status = json.loads(record.read_text(encoding="utf-8")).get("status")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        status = "unreadable"
    return status if isinstance(status, str) else "unreadable"


def _prepare_finetune(cfg: LadderConfig) -> Tuned:
    """Reuse the finished fine-tune with the same key, resume an interrupted one, or train it."""
    from honing.config.stages import STAGES
    from honing.models.adapters import resolve_adapter_dir

    if cfg.finetune.run:
        return _given_run(cfg)
    directory, key = finetune_dir(cfg), finetune_key(cfg)
    status, stamp = _status(directory), directory / "ladder.json"
    if status is not None:
        try:
            recorded = json.loads(stamp.read_text(encoding="utf-8")).get("key") if stamp.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            recorded = None
        if recorded != key:
            raise HoningError(f"finetune.dir {directory} holds a fine-tune of other settings, training data or base "
                              "model; delete it or choose another finetune.dir")
        if status in ("completed", "early_stopped"):
            console.print(f"fine-tuned rungs: reusing the finished fine-tune in {directory}")
            return Tuned(resolve_adapter_dir(directory), directory, _run_minutes(directory), reused=True)
        if status != "interrupted":
            raise HoningError(f"the fine-tune in {directory} is {status} (not finished, not interrupted); delete the "
                              "directory to train it again, or wait for the process that is training it")
    resume = directory if status == "interrupted" else None
    console.print(f"fine-tuned rungs: {'resuming' if resume else 'training'} a LoRA fine-tune on {cfg.train} in "
                  f"{directory}")
    if resume is None:
        from honing.io import write_json_atomic

        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp, {"key": key})
    sft_cfg = _sft_config(cfg, str(directory))
    if cfg.finetune.with_context:  # the same records, each question's chunks in its turn
        from honing.io import write_jsonl_atomic

        grounded = write_jsonl_atomic(directory / "train-with-context.jsonl", with_context_records(cfg))
        sft_cfg = sft_cfg.model_copy(update={"data": sft_cfg.data.model_copy(update={"train": str(grounded)})})
        console.print(f"training prompts carry each question's top {cfg.rag.k} chunks: {grounded}")
    result = STAGES["sft"].run(sft_cfg, resume=resume)
    if result.get("status") not in ("completed", "early_stopped"):
        raise HoningError(f"the fine-tune in {directory} stopped ({result.get('status')}); run the ladder again to "
                          "resume it")
    return Tuned(resolve_adapter_dir(directory), directory, _run_minutes(directory), reused=False)


# --------------------------------------------------------------------------- the rungs


def rung_prompts(rung: str, examples: list[Any], cfg: LadderConfig, picker: ShotPicker | None,
                 retriever: Any) -> tuple[list[list[dict[str, str]]], list[list[Any]], float]:
    """Every example's conversation on this rung, the chunks put in it (Hits), and the seconds retrieval took."""
    from honing.data.prompts import as_messages, last_user_text, with_question

    prompts = [as_messages(e.prompt, cfg.task.system_prompt) for e in examples]
    if rung == "few_shot":
        assert picker is not None
        questions = [last_user_text(p) for p in prompts]
        nearest = picker.nearest(questions, cfg.few_shot.k)
        for i, picked in enumerate(nearest):
            turns = [turn for s in picked for turn in ({"role": "user", "content": picker.shots[s][0]},
                                                        {"role": "assistant", "content": picker.shots[s][1]})]
            lead = 1 if prompts[i][0].get("role") == "system" else 0  # examples right after the system turn
            prompts[i] = [*prompts[i][:lead], *turns, *prompts[i][lead:]]
    sources: list[list[Any]] = [[] for _ in prompts]
    seconds = 0.0
    if rung in NEEDS_RAG:
        from honing.rag.ask import rag_prompt

        started = time.perf_counter()
        for i, prompt in enumerate(prompts):
            question = last_user_text(prompt)
            hits = retriever.search(question, cfg.rag)
            sources[i] = hits
            prompts[i] = with_question(prompt, rag_prompt(question, hits, cfg.rag.instruction))
        seconds = time.perf_counter() - started
    return prompts, sources, seconds


class _Lazy:
    """A model loaded the first time it is asked for an answer (a ladder whose answers are all cached loads none)."""

    def __init__(self, load: Any):
        self._load, self._model = load, None

    def complete(self, prompts: list[Any], sampling: Any) -> list[Any]:
        if self._model is None:
            self._model = self._load()
        return self._model.complete(prompts, sampling)


def answer(chat: Any, fingerprint: str, rung: str, prompts: list[list[dict[str, str]]], cfg: LadderConfig,
           cache: Any) -> tuple[list[dict[str, Any]], int]:
    """The model's answer to each prompt (cached by weights, sampling and the exact prompt), and how many were
    computed now."""
    from honing.evals.cache import key_of

    sampling = cfg.sampling.model_copy(update={"max_new_tokens": cfg.task.max_new_tokens}
                                       if cfg.task.max_new_tokens else {})
    settings = key_of(version=CACHE_VERSION, stage="ladder", sampling=sampling.model_dump())
    keys = [key_of(prompt=p) for p in prompts]
    found = cache.get_many(fingerprint, settings, keys)
    todo = [i for i, key in enumerate(keys) if key not in found]
    if todo:
        console.print(f"{rung}: answering {len(todo)} of {len(prompts)} prompts ({len(prompts) - len(todo)} cached)")
    step = cfg.batch_size * ANSWER_GROUP
    for start in range(0, len(todo), step):  # each group is cached as it ends: Ctrl-C loses at most one group
        group = todo[start:start + step]
        started = time.perf_counter()
        completions = chat.complete([prompts[i] for i in group], sampling)
        share = (time.perf_counter() - started) / len(group)
        new = {keys[i]: {"answer": c.text, "prompt_tokens": c.prompt_tokens, "new_tokens": c.completion_tokens,
                         "finish_reason": c.finish_reason, "seconds": share} for i, c in zip(group, completions)}
        cache.put_many(fingerprint, settings, new)
        found.update(new)
    return [found[key] for key in keys], len(todo)


def _fingerprint(cfg: LadderConfig, adapter: Path | None) -> str:
    from honing.evals.runner import model_fingerprint

    model = cfg.model.model_copy(update={"adapter": str(adapter) if adapter else None, "rag": None})
    return model_fingerprint(model)


def run_rungs(cfg: LadderConfig, examples: list[Any], picker: ShotPicker | None, index: Path | None,
              tuned: Tuned | None) -> dict[str, RungAnswers]:
    from honing.evals.cache import AnswerCache
    from honing.models.chat import ChatModel

    ordered = [r for r in RUNGS if r in cfg.rungs]
    retriever = None
    if index is not None:
        from honing.rag.search import Retriever

        retriever = Retriever(index, cfg.rag.embedding_model, cfg.rag.reranker)
        retriever.search("warm-up", cfg.rag)  # loads the query's embedding model now, not inside the timed rung
    cache = AnswerCache(enabled=cfg.cache)
    results: dict[str, RungAnswers] = {}
    try:
        for weights in ("base", "tuned"):
            rungs = [r for r in ordered if (r in FINETUNE_RUNGS) == (weights == "tuned")]
            if not rungs:
                continue
            adapter = tuned.adapter if weights == "tuned" else None
            model_cfg = cfg.model.model_copy(update={"adapter": str(adapter) if adapter else None})
            model = _Lazy(partial(ChatModel.load, model_cfg, cfg.sampling, role=f"{weights} model",
                                  batch_size=cfg.batch_size, progress=True))
            fingerprint = _fingerprint(cfg, adapter)
            for rung in rungs:
                prompts, sources, seconds = rung_prompts(rung, examples, cfg, picker, retriever)
                rows, computed = answer(model, fingerprint, rung, prompts, cfg, cache)
                for row, prompt, hits in zip(rows, prompts, sources):
                    row.update(prompt=prompt, sources=[hit.id for hit in hits],
                               context=[hit.chunk["text"] for hit in hits])
                results[rung] = RungAnswers(rung, rows, computed, seconds)
            model = None  # the base's weights go before the fine-tuned ones load
    finally:
        cache.close()
        if retriever is not None:
            retriever.close()
    return results


# --------------------------------------------------------------------------- the stage


def ladder(cfg: LadderConfig) -> dict[str, Any]:
    from honing.evals.ladder import score_ladder, write_ladder_reports
    from honing.evals.tasks import data_path
    from honing.io import write_json_atomic, write_jsonl_atomic
    from honing.runs import Run, file_sha256

    examples = _load_task(cfg)
    picker, leaked = None, []
    trains_here = any(r in FINETUNE_RUNGS for r in cfg.rungs) and not cfg.finetune.run
    if cfg.train and ("few_shot" in cfg.rungs or trains_here):
        shots = read_shots(cfg.train)
        leaked = overlap(examples, shots)
        if leaked:
            console.print(f"[yellow]{len(leaked)} of {len(examples)} held-out questions are also in the training data "
                          f"{cfg.train} ({', '.join(leaked[:5])}{', …' if len(leaked) > 5 else ''}): the fine-tuned "
                          "rungs have seen their answers (few-shot never shows a question as its own example)[/]",
                          soft_wrap=True)
        if "few_shot" in cfg.rungs:
            console.print(f"few-shot pool: {len(shots)} training examples from {cfg.train}; {cfg.few_shot.k} per "
                          "prompt")
            picker = ShotPicker(shots, cfg.few_shot.embedding_model)
    grounds_training = cfg.finetune.with_context and trains_here
    index = _prepare_index(cfg) if any(r in NEEDS_RAG for r in cfg.rungs) or grounds_training else None
    tuned = _prepare_finetune(cfg) if any(r in FINETUNE_RUNGS for r in cfg.rungs) else None

    run = Run.create("ladder", cfg, cfg.output.dir)
    run.add_input("task", data_path(cfg.task))
    if cfg.train:
        run.add_input("train", cfg.train)
    if index is not None:
        record = index / "run.json"
        run.add_input("rag_index", index, sha256=file_sha256(record) if record.is_file() else None, k=cfg.rag.k,
                      mode=cfg.rag.mode)
    if tuned is not None:
        run.add_input("adapter", tuned.adapter, run_dir=str(tuned.run_dir) if tuned.run_dir else None,
                      reused=tuned.reused)
    try:
        answers = run_rungs(cfg, examples, picker, index, tuned)
    except BaseException as err:  # the record says the run did not finish; the answers so far stay cached
        run.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        raise
    results = score_ladder(cfg, examples, answers, tuned)
    results["run_dir"], results["train_overlap"] = str(run.dir), leaked
    write_json_atomic(run.dir / "results.json", results)
    write_jsonl_atomic(run.dir / "answers.jsonl", [
        {"rung": rung, "id": e.id, "answer": row["answer"], "scores": scores, "prompt_tokens": row["prompt_tokens"],
         "new_tokens": row["new_tokens"], "sources": row["sources"]}
        for rung, done in answers.items()
        for e, row, scores in zip(examples, done.rows, results["per_example"][rung])])
    paths = write_ladder_reports(results, run.dir)
    for role, path in [("results", run.dir / "results.json"), ("answers", run.dir / "answers.jsonl"), *paths.items()]:
        run.add_output(role, path)
    run.finish("completed", metrics={"quality": {r: v["quality"]["mean"] for r, v in results["rungs"].items()},
                                     "recommended": results["recommendation"]["rung"]})
    _print_summary(results, paths)
    return {"run_dir": str(run.dir), "rungs": results["rungs"], "recommendation": results["recommendation"]}


def _print_summary(results: dict[str, Any], paths: dict[str, Path]) -> None:
    from rich import box
    from rich.table import Table

    from honing.evals.ladder import LABELS, difference_text, interval_text, is_share

    metric, share = results["metric"], is_share(results)
    table = Table(title=f"{results['task']}: {results['examples']} held-out examples, {metric}", box=box.SIMPLE_HEAD,
                  padding=(0, 1))
    unit = " (%)" if share else ""
    for column in ("rung", f"score{unit}", f"vs best{' (points)' if share else ''}", "prompt", "s/ans"):
        table.add_column(column, justify="left" if column == "rung" else "right", no_wrap=True)
    for rung, row in results["rungs"].items():
        score = interval_text(row["quality"], share).replace("%", "")
        table.add_row(LABELS[rung], score,
                      "best" if rung == results["best"] else difference_text(row["vs_best"], share),
                      f"{row['cost']['prompt_tokens']:.0f}", f"{row['cost']['seconds_per_answer']:.2f}")
    console.print(table)
    console.print(f"[bold]recommended: {LABELS[results['recommendation']['rung']]}[/] — "
                  f"{results['recommendation']['why']}", soft_wrap=True)
    console.print(f"report: {paths['html']} (and {paths['markdown'].name}); answers: answers.jsonl")


run = ladder
