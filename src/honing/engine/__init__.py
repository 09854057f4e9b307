"""honing's generation engine: what answers when a local model is asked (ChatModel.complete, ChatModel.sample).

    decoder.py   a lean forward pass over a static KV cache for llama-family models (the same modules, the
                 same arithmetic as transformers, without its per-call bookkeeping)
    sampling.py  per-request sampling settings and random streams
    core.py      the scheduler: continuous batching, shared prefixes prefilled once and kept
    vllm.py      vLLM, on a CUDA machine where it is installed

`backend_for(model, generation)` chooses, and says why; `engine_for(model, tokenizer, generation)` keeps one
engine per model object (its prefix cache lives as long as the model and is dropped when the weights change).
A model the decoder does not know falls back to transformers' `generate` (honing.generate), which is also
`generation.backend: transformers`.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from honing.config import GenerationConfig
from honing.engine.core import Engine, Request, Result, RunStats
from honing.engine.decoder import unsupported
from honing.engine.sampling import Sampling

__all__ = ["Engine", "Request", "Result", "RunStats", "Sampling", "backend_for", "engine_for"]

log = logging.getLogger(__name__)
_ENGINES: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()


def backend_for(model: Any, generation: GenerationConfig, max_length: int | None = None) -> tuple[str, str]:
    """("torch" or "transformers", why) for weights already in memory. vLLM loads its own weights, so it is
    chosen where a model is loaded (ChatModel.load), not here."""
    if generation.backend == "transformers":
        return "transformers", "generation.backend is transformers"
    reason = unsupported(model, max_length)
    if reason is None:
        return "torch", "the engine runs this model family"
    if generation.backend == "torch":
        from honing.errors import HoningError

        raise HoningError(f"generation.backend=torch: honing's engine cannot run this model ({reason}); use "
                          "generation.backend=auto or transformers")
    return "transformers", f"honing's engine cannot run this model ({reason})"


def engine_for(model: Any, tokenizer: Any, generation: GenerationConfig, max_batch: int) -> Engine:
    """The engine of `model` (one per model object, kept while the model lives)."""
    engine = _ENGINES.get(model)
    if engine is None or engine.tokenizer is not tokenizer:
        engine = Engine(model, tokenizer, max_batch=max_batch, prefix_cache_mb=generation.prefix_cache_mb,
                        kv_cache_mb=generation.kv_cache_mb)
        _ENGINES[model] = engine
    engine.max_batch = generation.max_batch or max_batch
    engine.prefixes.budget = generation.prefix_cache_mb * 2**20
    engine.kv_budget = generation.kv_cache_mb * 2**20
    return engine
