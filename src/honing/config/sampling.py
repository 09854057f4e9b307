"""How tokens are drawn during generation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from honing.config.base import StrictModel


class SamplingConfig(StrictModel):
    """How tokens are drawn during generation."""

    max_new_tokens: int = Field(256, ge=1)
    """Most tokens generated per answer."""
    temperature: float = Field(0.0, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens; 0 disables."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """Penalty on tokens already present (1.0 disables)."""
    seed: int = 0
    """Seed for sampling."""
    stop: list[str] = []
    """Strings that end an answer (OpenAI's `stop`); the answer stops before the first one."""


class GenerationConfig(StrictModel):
    """How a local model generates: which engine, and how many sequences it keeps in flight."""

    backend: Literal["auto", "torch", "transformers", "vllm"] = "auto"
    """torch: honing's engine (continuous batching over a static KV cache, shared prefixes prefilled once) for
    llama, mistral, qwen2 and qwen3 models; transformers: `model.generate` in fixed batches; vllm: vLLM, on a CUDA
    machine where it is installed (only when asked for: its model has no weights in this process, so it answers
    generation only); auto: torch where the model's family is supported, else transformers."""
    max_batch: int | None = Field(None, ge=1)
    """Sequences in flight at once (default: the stage's batch_size)."""
    prefix_cache_mb: int = Field(512, ge=0)
    """Memory for prefilled shared prefixes (system prompts, few-shot blocks, a GRPO group's prompt), kept between
    calls until the weights change; 0 turns prefix caching off (every prompt is prefilled whole)."""
    draft_tokens: int = Field(4, ge=0, le=16)
    """Greedy answers: up to this many next tokens guessed per step from the prompt and the answer so far
    (prompt lookup: what followed the latest earlier occurrence of the last 3 or 2 tokens) and checked in
    the same forward pass; the answer is exactly greedy decoding's, in fewer steps. 0 turns it off."""
    kv_cache_mb: int = Field(4096, ge=64)
    """Most memory the engine's KV cache may take; fewer sequences run at once when it would take more."""
