"""The models a server holds: weights in memory, the thread that generates with them, and what each name serves now.

    Worker       one set of weights and one generation thread. Requests for it queue per adapter; the thread
                 runs the engine's continuous batching (Engine.serve) for one adapter at a time, switching when
                 another adapter's oldest request has waited SWITCH_AFTER_S. Adapters over the same base are
                 loaded into one PeftModel, so the base is in memory once (as vLLM's multi-LoRA); requests of
                 different adapters are never in the same forward pass.
    Target       what one served name answers with now: a worker, an adapter on it (or none), the tokenizer, the
                 stop tokens, and the version label (support-bot@3). Counted while requests use it.
    Retrieval    a served name's index (`rag:`), opened at start on a thread of its own, where every search runs.
    Pool         names -> targets. A name given as a registry reference is looked up again (at most every
                 reload_check_s); when its alias moved, the new version is loaded (its base shared when it is
                 the same), new requests go to it, and the old target is retired once its last request ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from honing.config import ModelConfig
from honing.config.retrieval import ModelRagConfig
from honing.config.serve import ServeConfig, ServedModelConfig
from honing.errors import HoningError

log = logging.getLogger(__name__)

SWITCH_AFTER_S = 0.2
"""A worker stops admitting one adapter's requests once another adapter's request has waited this long."""
BASE = ""
"""The adapter name of requests for the base weights themselves."""


@dataclass
class Job:
    request: Any  # honing.engine.Request
    on_error: Callable[[BaseException], None]
    queued: float = field(default_factory=time.monotonic)


class Worker:
    """One set of weights in memory and the thread that generates with them."""

    def __init__(self, key: tuple, model: Any, tokenizer: Any, cfg: ServeConfig):
        self.key = key
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.capacity = _capacity(model, cfg)
        self.engines: dict[str, Any] = {}
        self.waiting: dict[str, deque[Job]] = {BASE: deque()}
        self.running: dict[int, Job] = {}
        self.controls: deque[tuple[Callable[[], Any], Future]] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.users = 0  # targets using this worker
        self.cache: Any = None
        self._build_engines()
        self.thread = threading.Thread(target=self._loop, name=f"honing-serve-{key[0][:8]}", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ adapters (on the worker thread)

    def add_adapter(self, name: str, adapter_dir: str) -> None:
        """Load a PEFT adapter over these weights (the first one wraps the model in a PeftModel)."""
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(adapter_dir, adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, adapter_dir, adapter_name=name, is_trainable=False)
        except Exception as err:
            raise HoningError(f"cannot apply the adapter in {adapter_dir}: {type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
        self.model.eval()
        self.waiting.setdefault(name, deque())
        self._build_engines()

    def remove_adapter(self, name: str) -> None:
        with self.cond:
            self.waiting.pop(name, None)
        self.engines.pop(name, None)
        if name in getattr(self.model, "peft_config", {}):
            self.model.delete_adapter(name)
            self._build_engines()

    def _build_engines(self) -> None:
        """One engine per adapter (each keeps its own prefix cache: the same prefix has other keys under another
        adapter), rebuilt whenever the model's modules change."""
        from honing.engine import Engine

        generation = self.cfg.generation
        names = [BASE] + [n for n in getattr(self.model, "peft_config", {})]
        self.engines = {name: Engine(self.model, self.tokenizer, max_batch=generation.max_batch or 16,
                                     prefix_cache_mb=generation.prefix_cache_mb, kv_cache_mb=generation.kv_cache_mb)
                        for name in names}

    def run_on_thread(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the worker thread between engine runs (adapters change only there)."""
        future: Future = Future()
        with self.cond:
            if self.closed:
                future.set_exception(HoningError("the model is shutting down"))
                return future
            self.controls.append((fn, future))
            self.cond.notify()
        return future

    # ------------------------------------------------------------------ requests

    def submit(self, adapter: str, job: Job) -> None:
        with self.cond:
            if self.closed:
                raise HoningError("the model is shutting down")
            self.waiting[adapter].append(job)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and not self.controls and not any(self.waiting.values()):
                    self.cond.wait()
                if self.closed:
                    pending = [job for queue in self.waiting.values() for job in queue]
                    for queue in self.waiting.values():
                        queue.clear()
                    controls = list(self.controls)
                    self.controls.clear()
                    break
                control = self.controls.popleft() if self.controls else None
                adapter = None if control else min((q[0].queued, name) for name, q in self.waiting.items() if q)[1]
            if control is not None:
                fn, future = control
                try:
                    future.set_result(fn())
                except BaseException as err:  # noqa: BLE001  (handed to whoever asked)
                    future.set_exception(err)
                continue
            self._serve(adapter)
        for job in pending:
            job.on_error(HoningError("the server is shutting down"))
        for _, future in controls:
            future.set_exception(HoningError("the model is shutting down"))

    def _serve(self, adapter: str) -> None:
        engine = self.engines[adapter]
        started = time.monotonic()

        def feed(free: int) -> list[Any]:
            with self.cond:
                if self.controls or self.closed:
                    return []
                queue = self.waiting.get(adapter)
                if not queue:
                    return []
                # Another adapter's turn once its oldest request has waited SWITCH_AFTER_S and this one has had
                # its turn (a run always admits what it was started for: no run ends having served nothing).
                now = time.monotonic()
                if now - started > SWITCH_AFTER_S and any(
                        q and now - q[0].queued > SWITCH_AFTER_S for name, q in self.waiting.items() if name != adapter):
                    return []
                jobs = [queue.popleft() for _ in range(min(free, len(queue)))]
            for job in jobs:
                self.running[id(job.request)] = job
                done = job.request.on_finish
                job.request.on_finish = self._finisher(job, done)
            return [job.request for job in jobs]

        try:
            with self._active(adapter):
                if self.cache is None:  # one KV cache for every adapter: only one of them runs at a time
                    self.cache = engine.serve_cache(self.capacity, self.cfg.generation.max_batch or 16)
                engine.serve(feed, capacity=self.capacity, max_batch=self.cfg.generation.max_batch or 16,
                             cache=self.cache)
        except Exception as err:  # a bug or out of memory: fail the requests in flight, keep serving
            log.exception("generation failed")
            for job in list(self.running.values()):
                job.on_error(err)
            self.running.clear()

    def _finisher(self, job: Job, done: Callable[[Any], None] | None) -> Callable[[Any], None]:
        def on_finish(result: Any) -> None:
            self.running.pop(id(job.request), None)
            if done is not None:
                done(result)
        return on_finish

    def _active(self, adapter: str) -> Any:
        """The adapter `adapter` switched on (the base: every adapter off)."""
        if not getattr(self.model, "peft_config", None):
            return nullcontext()
        if adapter == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()


def _capacity(model: Any, cfg: ServeConfig) -> int:
    """Tokens per sequence the KV cache holds: the longest prompt plus the most tokens a request may ask for,
    within the model's positions and attention window."""
    config = getattr(model, "config", None)
    limit = cfg.limits.max_prompt_tokens + cfg.limits.max_tokens
    for attr in ("max_position_embeddings", "sliding_window"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            limit = min(limit, value)
    return limit


@dataclass
class Target:
    """What a served name answers with now."""

    name: str
    worker: Worker
    adapter: str
    tokenizer: Any
    stop_ids: frozenset[int]
    version: str
    """What the log records: support-bot@3 for a registry version; otherwise the path (or "embedded default")."""
    label: str
    """What clients see (system_fingerprint, x-honing-model-version): support-bot@3, or NAME@sha256:<12 hex> of
    the weights (a server's file paths are not its clients' business)."""
    system_prompt: str | None = None
    in_flight: int = 0
    retired: bool = False
    on_idle: Callable[[], None] | None = None

    @property
    def capacity(self) -> int:
        return self.worker.capacity

    def acquire(self) -> None:
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self.retired and self.in_flight == 0 and self.on_idle is not None:
            drop, self.on_idle = self.on_idle, None
            drop()


class Retrieval:
    """The index a served name answers from, open on one thread of its own: the index's SQLite connection belongs
    to the thread that opened it, and one search at a time bounds the embedding model's memory and CPU threads
    (a search is milliseconds; the event loop never waits on one)."""

    def __init__(self, name: str, rag: ModelRagConfig):
        from concurrent.futures import ThreadPoolExecutor

        self.name, self.rag, self._closed = name, rag, False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"honing-rag-{name[:8]}")
        try:
            self.retriever = self.executor.submit(self._open).result()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise

    def _open(self) -> Any:
        from honing.rag.search import Retriever

        try:
            retriever = Retriever(self.rag.index, self.rag.embedding_model, self.rag.reranker)
            if self.rag.mode != "bm25":  # load the embedding model now, not during the first request
                retriever.search("warm-up", self.rag)
        except HoningError as err:
            raise type(err)(f"models.{self.name}.rag: {err}") from None
        return retriever

    def search(self, question: str) -> Future:
        """The top `rag.k` hits (honing.rag.search.Hit) for `question`, searched on this index's thread."""
        return self.executor.submit(self.retriever.search, question, self.rag)

    def close(self) -> None:
        """Close the index on its own thread, once (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        self.executor.submit(self.retriever.close)
        self.executor.shutdown(wait=False)


class Pool:
    """Served names -> targets, with the weights shared between them where they are the same."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.workers: dict[tuple, Worker] = {}
        self.targets: dict[str, Target] = {}
        self.checked: dict[str, float] = {}
        self.pinned: dict[str, tuple[str | None, str | None]] = {}
        self.failed: dict[str, tuple[str | None, str | None]] = {}
        """Per name, the pins whose load failed (not retried until the registry names something else)."""
        self.reloads: dict[str, asyncio.Future] = {}
        """Per name, the registry look-up (and load) in progress; requests for the name wait for it."""
        self.lock = threading.Lock()
        self._names = itertools.count(1)
        self.retrievals: dict[str, Retrieval] = {}
        """The names with `rag:`, and their open indexes (the same whichever version of the model answers)."""

    def load_all(self) -> None:
        """Open every index, then load every configured model (at start: any error stops the server before it
        listens; the indexes first, as they are quicker to find wrong)."""
        try:
            for name, spec in self.cfg.models.items():
                if spec.rag is not None:
                    self.retrievals[name] = Retrieval(name, spec.rag)
            for name, spec in self.cfg.models.items():
                self.targets[name] = self._load(name, spec)
                self.checked[name] = time.monotonic()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        for retrieval in self.retrievals.values():
            retrieval.close()

    def names(self) -> list[str]:
        return list(self.cfg.models)

    async def target(self, name: str) -> Target:
        """The target `name` serves now (reloading it first when its registry alias moved), acquired: call
        release() when the request ends."""
        spec = self.cfg.models[name]
        if _followed(spec) and time.monotonic() - self.checked.get(name, 0.0) >= self.cfg.reload_check_s:
            reload = self.reloads.get(name)
            if reload is None:
                reload = asyncio.ensure_future(asyncio.to_thread(self._load_if_moved, name, spec))
                reload.add_done_callback(lambda task: self._reloaded(name, task))
                self.reloads[name] = reload
            # Shielded: a request that gives up waiting (its deadline) leaves the load running and the swap to it.
            await asyncio.shield(reload)
        target = self.targets[name]
        target.acquire()
        return target

    def _reloaded(self, name: str, task: asyncio.Future) -> None:
        """A look-up finished (on the event loop, where release() runs too): swap in what it loaded."""
        self.reloads.pop(name, None)
        self.checked[name] = time.monotonic()
        new = None if task.cancelled() or task.exception() is not None else task.result()
        if new is not None:
            old, self.targets[name] = self.targets[name], new
            log.info("%s: now serving %s (was %s)", name, new.version, old.version)
            self._retire(old)

    # ------------------------------------------------------------------ loading

    def _load_if_moved(self, name: str, spec: ServedModelConfig) -> Target | None:
        """The new target when the registry now names another version; None to keep serving the current one
        (nothing moved, the registry cannot be read, or the new version does not load: logged)."""
        current = self.targets[name].version
        try:
            now = _pins(spec)
        except Exception as err:  # noqa: BLE001  (the registry moved away, the alias was removed, a locked file)
            log.warning("%s: cannot look up %s again (%s); still serving %s", name, spec.path or spec.adapter, err,
                        current)
            return None
        if now == self.pinned.get(name) or now == self.failed.get(name):
            return None
        try:
            return self._load(name, spec)
        except Exception as err:  # noqa: BLE001  (out of memory, a broken adapter, a file gone: keep serving)
            self.failed[name] = now
            log.warning("%s: the registry now names %s, which cannot be loaded (%s); still serving %s", name,
                        _label(now), err, current)
            return None

    def _retire(self, old: Target) -> None:
        """Drop `old` once its last request ends (now, when none is in flight). Runs on the event loop."""
        def drop() -> None:
            if old.adapter != BASE:
                old.worker.run_on_thread(lambda: old.worker.remove_adapter(old.adapter))
            self._unuse(old.worker)

        old.retired = True
        if old.in_flight == 0:
            drop()
        else:
            old.on_idle = drop

    def _unuse(self, worker: Worker) -> None:
        with self.lock:
            worker.users -= 1
            if worker.users == 0:
                worker.close()
                self.workers.pop(worker.key, None)

    def _load(self, name: str, spec: ServedModelConfig) -> Target:
        """Resolve `spec`, load or share its base, put its adapter on it."""
        from honing.generate import stop_token_ids
        from honing.models.adapters import resolve_adapter_dir
        from honing.models.load import _tokenizer_from_dir, load_model
        from honing.models.source import resolve_model_source, source_sha256

        pins = _pins(spec)
        path, adapter_ref = pins
        source = resolve_model_source(ModelConfig(path=path, dtype=spec.dtype, tokenizer=spec.tokenizer))
        adapter_dir = str(resolve_adapter_dir(adapter_ref)) if adapter_ref else source.get("adapter")
        base_source = source.get("base") or source if not spec.adapter else source
        if source.get("adapter") and spec.adapter:
            raise HoningError(f"models.{name}: {spec.path} is itself an adapter; give `path` its base model, or name "
                              "the adapter in `path` alone")
        sha = source_sha256(base_source)
        key = (sha or base_source["path"], spec.dtype, spec.tokenizer)
        with self.lock:  # found and counted at once: a worker whose last user leaves now is not handed out
            worker = self.workers.get(key)
            if worker is not None:
                worker.users += 1
        if worker is None:
            base_path = None if base_source["kind"] == "embedded" else base_source["path"]
            loaded = load_model(ModelConfig(path=base_path, dtype=spec.dtype, tokenizer=spec.tokenizer))
            _check_engine(name, loaded.model)
            made = Worker(key, loaded.model, loaded.tokenizer, self.cfg)
            with self.lock:  # (two names may have loaded the same new base at once: keep one)
                worker = self.workers.setdefault(key, made)
                worker.users += 1
            if worker is not made:
                made.close()
        try:
            tokenizer, adapter = worker.tokenizer, BASE
            if adapter_dir:
                adapter = f"a{next(self._names)}"
                worker.run_on_thread(lambda: worker.add_adapter(adapter, adapter_dir)).result()
                if (_path(adapter_dir) / "tokenizer_config.json").is_file() and not spec.tokenizer:
                    tokenizer = _tokenizer_from_dir(_path(adapter_dir))
        except BaseException:
            self._unuse(worker)
            raise
        self.pinned[name] = pins
        version = _version_label(source, pins, adapter_dir)
        label = _label(pins) if _followed(spec) else f"{name}@sha256:{_short_hash(adapter_dir, sha)}"
        return Target(name, worker, adapter, tokenizer, frozenset(stop_token_ids(tokenizer, worker.model)), version,
                      label, spec.system_prompt)


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text)


def _followed(spec: ServedModelConfig) -> bool:
    """Whether `spec` names a registry reference (looked up again to follow its alias)."""
    return any(str(p or "").startswith("registry:") for p in (spec.path, spec.adapter))


def _pins(spec: ServedModelConfig) -> tuple[str | None, str | None]:
    """(path, adapter) with each registry reference pinned to the version it names now (registry:NAME@V)."""
    from honing.registry.refs import is_ref, resolve_ref

    def pin(text: str | None) -> str | None:
        if not is_ref(text):
            return text
        version = resolve_ref(str(text), check_weights=False)
        return version.ref

    return pin(spec.path), pin(spec.adapter)


def _short_hash(adapter_dir: str | None, base_sha: str | None) -> str:
    from honing.models.source import weight_files, weights_sha256

    return (weights_sha256(weight_files(adapter_dir)) if adapter_dir else base_sha or "")[:12]


def _label(pins: tuple[str | None, str | None]) -> str:
    """NAME@V of the registry reference among the pins (the adapter's when both are)."""
    for pinned in pins[::-1]:
        if pinned and pinned.startswith("registry:"):
            return pinned.removeprefix("registry:")
    return str(pins[1] or pins[0])


def _version_label(source: dict[str, Any], pins: tuple[str | None, str | None], adapter_dir: str | None) -> str:
    if any(p and p.startswith("registry:") for p in pins):
        return _label(pins)
    if adapter_dir:
        return adapter_dir
    return "embedded default" if source["kind"] == "embedded" else str(source.get("run") or source["path"])


def _check_engine(name: str, model: Any) -> None:
    from honing.engine.decoder import unsupported

    reason = unsupported(model, None)
    if reason is not None:
        raise HoningError(f"models.{name}: honing serve generates with honing's engine (llama, mistral, qwen2, qwen3 "
                          f"families), which cannot run this model: {reason}")
