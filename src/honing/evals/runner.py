"""Run one model on one task: the model's raw outputs per example, reusing the answer cache.

Raw outputs by kind (what the cache stores; scoring is separate, in `scoring.py`):
    generation, pairwise, rubric, classification by generation   {"answer", "new_tokens"}
    classification by log-likelihood, multiple_choice            {"logprobs": [per choice]}
    perplexity                                                   {"loss_sum", "tokens"}
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.config import ChatModelConfig, EvalConfig, EvalModelConfig, EvalTaskConfig, ModelConfig
from honing.config.evaluation import generates
from honing.errors import DataError, HoningError
from honing.evals.cache import AnswerCache, key_of
from honing.evals.tasks import Example, label_set
from honing.models.chat import ChatModel

CACHE_VERSION = 1  # bump when a change here changes what a cached output means


class ModelUnderTest:
    """A model to evaluate (a ChatModel), loaded on first use and released after its tasks."""

    def __init__(self, cfg: EvalModelConfig, *, batch_size: int = 8):
        self.cfg = cfg
        self.name = cfg.name
        self.batch_size = batch_size
        self._chat: ChatModel | None = None
        self.fingerprint = model_fingerprint(cfg)
        self.source: dict[str, Any] = {}

    def load(self) -> ChatModel:
        if self._chat is None:
            self._chat = ChatModel.load(self.cfg, role=f"model {self.name}", batch_size=self.batch_size, progress=True)
            self.source = self._chat.source
        return self._chat

    def release(self) -> None:
        self._chat = None
        gc.collect()

    def run_dir(self) -> Path | None:
        """The training run behind this model (for its curves), if there is one."""
        for candidate in (self.cfg.adapter, self.cfg.path):
            if not candidate:
                continue
            path = Path(candidate).expanduser()
            for directory in (path, path.parent):
                if (directory / "run.json").is_file() and (directory / "metrics.jsonl").is_file():
                    return directory
        return None


def model_fingerprint(cfg: ChatModelConfig) -> str:
    """The content of the weights the model will run with: base weights, plus the adapter's. An endpoint's
    weights are not known: its URL and model name stand for them. With `rag`, its settings and the index's run
    record too (answers from other chunks are other answers: the answer cache must not mix them)."""
    rag = {**cfg.rag.model_dump(mode="json"), "index_record": _index_record(cfg.rag.index)} if cfg.rag else None
    if cfg.endpoint:
        return key_of(endpoint=cfg.endpoint, model=cfg.endpoint_model, **({"rag": rag} if rag else {}))
    from honing.models.adapters import resolve_adapter_dir
    from honing.models.load import adapter_base_config
    from honing.models.source import resolve_model_source, source_sha256, weight_files, weights_sha256

    model_cfg = ModelConfig(path=cfg.path)
    parts: dict[str, Any] = {}
    if cfg.adapter:
        adapter_dir = resolve_adapter_dir(cfg.adapter)
        parts["adapter"] = weights_sha256(weight_files(adapter_dir))
        model_cfg = adapter_base_config(model_cfg, adapter_dir)
    source = resolve_model_source(model_cfg)
    parts["base"] = source_sha256(source.get("base") or source)
    if source.get("adapter"):
        parts["run_adapter"] = weights_sha256(weight_files(source["adapter"]))
    loading = {"tokenizer": cfg.tokenizer, "dtype": cfg.dtype, "attn_implementation": cfg.attn_implementation}
    if loading != {"tokenizer": None, "dtype": "auto", "attn_implementation": "sdpa"}:  # defaults keep old keys valid
        parts["loading"] = loading
    if rag:  # answers from retrieved chunks: the settings and the index's content (its run record)
        parts["rag"] = rag
    import torch

    if torch.cuda.is_available():  # answers computed on a GPU are kept apart from CPU ones (kernels differ)
        parts["device"] = "cuda"
    return key_of(**parts)


def _index_record(index: str) -> str | None:
    """What the index holds, by content (documents' hashes, embedding model, chunking): it changes when an update
    changes the index, not when an update finds nothing to change."""
    from honing.rag.store import index_content_key

    return index_content_key(index)


def task_key(task: EvalTaskConfig, cfg: EvalConfig) -> str:
    """Everything that changes what the model is asked or how it answers (not how it is scored)."""
    sampling = cfg.sampling.model_dump()
    if task.max_new_tokens:
        sampling["max_new_tokens"] = task.max_new_tokens
    return key_of(version=CACHE_VERSION, kind=task.kind, chat_template=chat_template_for(task),
                  system_prompt=task.system_prompt, sampling=sampling if generates(task) else None,
                  classify_by=task.classify_by, labels=task.labels, max_length=task.max_length, format=task.format)


def chat_template_for(task: EvalTaskConfig) -> bool:
    return task.chat_template if task.chat_template is not None else task.kind != "multiple_choice"


@dataclass
class TaskOutputs:
    raw: list[dict[str, Any]]
    seconds: float = 0.0
    cached: int = 0
    new_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def throughput(self) -> dict[str, Any]:
        computed = len(self.raw) - self.cached
        rate = computed / self.seconds if self.seconds > 0 else None
        return {"seconds": round(self.seconds, 2), "examples": len(self.raw), "cached": self.cached,
                "examples_per_s": rate, "tokens_per_s": self.new_tokens / self.seconds if self.seconds > 0 else None,
                "truncated": self.truncated}

    @property
    def truncated(self) -> int:
        """Examples cut to the task's max_length (multiple choice, classification by log-likelihood, perplexity)."""
        return sum(bool(r.get("truncated")) for r in self.raw)


def run_task(model: ModelUnderTest, task: EvalTaskConfig, examples: list[Example], cfg: EvalConfig,
             cache: AnswerCache) -> TaskOutputs:
    if task.kind == "lm_eval":
        return _harness(model, task, cfg)
    key = task_key(task, cfg)
    if task.kind == "classification" and task.classify_by == "loglikelihood" and not task.labels:
        # The labels scored are the data's own: a file with another label set needs other log-likelihoods.
        key = key_of(task=key, labels=label_set(task, examples))
    found = cache.get_many(model.fingerprint, key, [e.fingerprint() for e in examples])
    missing = [e for e in examples if e.fingerprint() not in found]
    started = time.perf_counter()
    computed: dict[str, Any] = {}
    if missing:
        values = _compute(model.load(), task, missing, cfg, examples)
        computed = {e.fingerprint(): v for e, v in zip(missing, values)}
        cache.put_many(model.fingerprint, key, computed)
    seconds = time.perf_counter() - started if missing else 0.0
    raw = [found.get(e.fingerprint()) or computed[e.fingerprint()] for e in examples]
    new_tokens = sum(v.get("new_tokens", 0) for v in computed.values())
    return TaskOutputs(raw=raw, seconds=seconds, cached=len(examples) - len(missing), new_tokens=new_tokens)


def compute_outputs(chat: ChatModel, task: EvalTaskConfig, examples: list[Example], cfg: EvalConfig) -> list[dict[str, Any]]:
    """The raw outputs of a model already in memory (no cache: its weights may be changing), as run_task computes
    them; for callers that hold the weights themselves (the quickstart, before and after training)."""
    return _compute(chat, task, examples, cfg, examples)


def _harness(model: ModelUnderTest, task: EvalTaskConfig, cfg: EvalConfig) -> TaskOutputs:
    """A harness task runs whole (the harness keeps its own request cache); per-document scores come back."""
    from honing.evals.harness import run_harness_task

    chat = model.load()
    started = time.perf_counter()
    result = run_harness_task(chat.model, chat.tokenizer, task, batch_size=cfg.batch_size)
    raw = [{"doc_id": doc, "scores": {name: values[i] for name, values in result["metrics"].items()}}
           for i, doc in enumerate(result["doc_ids"])]
    return TaskOutputs(raw=raw, seconds=time.perf_counter() - started, extra={"lm_eval_version": result["version"]})


def _compute(chat: ChatModel, task: EvalTaskConfig, examples: list[Example], cfg: EvalConfig,
             all_examples: list[Example]) -> list[dict[str, Any]]:
    if generates(task):
        return _generate(chat, task, examples, cfg)
    model, tokenizer = chat.model, chat.tokenizer  # log-likelihood tasks need the weights (a local model)
    if model is None:
        raise HoningError(f"task {task.name} ({task.kind}) scores log-likelihoods, which need the weights in this "
                          f"process; {chat.role} is answered by {chat.identity.get('backend') or chat.kind} "
                          "(set its generation.backend to auto, torch or transformers)")
    if task.kind == "perplexity":
        return _perplexity(model, tokenizer, task, examples, cfg)
    if task.kind == "multiple_choice":
        return _choices(model, tokenizer, task, examples, [e.choices for e in examples], cfg)
    labels = label_set(task, all_examples)  # classification by log-likelihood
    return _choices(model, tokenizer, task, examples, [labels] * len(examples), cfg)


def _generate(chat: ChatModel, task: EvalTaskConfig, examples: list[Example], cfg: EvalConfig) -> list[dict[str, Any]]:
    sampling = cfg.sampling.model_copy(update={"max_new_tokens": task.max_new_tokens} if task.max_new_tokens else {})
    completions = chat.complete([e.prompt for e in examples], sampling, chat_template=chat_template_for(task),
                                system_prompt=task.system_prompt)
    if chat.tokenizer is None:  # an endpoint counts its own tokens
        return [{"answer": c.text, "new_tokens": c.completion_tokens} for c in completions]
    # The answer's own tokens, re-encoded (the stop token and special tokens not counted), as before.
    return [{"answer": c.text, "new_tokens": len(chat.tokenizer(c.text, add_special_tokens=False)["input_ids"])}
            for c in completions]


def _choices(model, tokenizer, task, examples, options: list[list[str]], cfg) -> list[dict[str, Any]]:
    from honing.data.prompts import render_prompt
    from honing.evals.loglik import continuation_logprobs, encode_pair

    # Grouped by whether the tokenizer adds its special tokens (plain text) or the rendered chat
    # text already holds them, so a file mixing both is tokenised right.
    groups: dict[bool, tuple[list[tuple[str, str]], list[int]]] = {True: ([], []), False: ([], [])}
    for index, (example, choices) in enumerate(zip(examples, options)):
        context, add_special = render_prompt(tokenizer, example.prompt, chat_template=chat_template_for(task),
                                             system_prompt=task.system_prompt)
        # Plain-text contexts end where the answer starts after a space (as the harness's target_delimiter);
        # a chat context already ends with the assistant header.
        delimiter = " " if not chat_template_for(task) and not context.endswith((" ", "\n")) else ""
        pairs, owners = groups[add_special]
        for choice in choices:
            if not encode_pair(tokenizer, context, delimiter + choice, add_special_tokens=add_special)[1]:
                raise DataError(f"{example.where}: the choice {choice!r} merges into the end of the question when "
                                "tokenised and has no tokens of its own; end the question with a space or newline")
            pairs.append((context, delimiter + choice))
            owners.append(index)
    scored: list[tuple[int, Any]] = []
    for add_special, (pairs, owners) in groups.items():
        if pairs:
            results = continuation_logprobs(model, tokenizer, pairs, batch_size=cfg.batch_size,
                                            max_length=task.max_length, add_special_tokens=add_special)
            scored += zip(owners, results)
    scored.sort(key=lambda item: item[0])  # stable: each example's choices stay in order
    out: list[dict[str, Any]] = [{"logprobs": [], "greedy": [], "truncated": False} for _ in examples]
    for owner, result in scored:
        out[owner]["logprobs"].append(result.logprob)
        out[owner]["greedy"].append(result.greedy)
        out[owner]["truncated"] |= result.truncated
    return out


def _perplexity(model, tokenizer, task, examples, cfg) -> list[dict[str, Any]]:
    from honing.data.formats import RecordError, detect_format, normalize
    from honing.data.templating import tokenize_conversation, tokenize_text
    from honing.evals.loglik import example_losses

    chunks, owners = [], []
    for index, example in enumerate(examples):
        try:
            fmt = task.format if task.format != "auto" else detect_format(example.record)
            record = normalize(example.record, fmt, system_prompt=task.system_prompt)
            if fmt == "text":
                pieces = tokenize_text(tokenizer, record["text"], task.max_length)
            else:
                pieces = [tokenize_conversation(tokenizer, record["messages"], max_length=task.max_length)]
        except (RecordError, ValueError) as err:
            raise DataError(f"{example.where}: {err}") from None
        chunks += pieces
        owners += [index] * len(pieces)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses = example_losses(model, chunks, batch_size=cfg.batch_size, pad_id=pad)
    out = [{"loss_sum": 0.0, "tokens": 0, "truncated": False} for _ in examples]
    for owner, chunk, (loss_sum, tokens) in zip(owners, chunks, losses):
        out[owner]["loss_sum"] += loss_sum
        out[owner]["tokens"] += tokens
        out[owner]["truncated"] |= chunk.truncated  # a conversation longer than max_length loses its end
    return out
