"""Which model: the one shape every stage, judge, teacher and target uses to name a model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel


class ScratchModelConfig(StrictModel):
    """A llama-style decoder built from these numbers and trained from random weights."""

    num_layers: int = Field(4, ge=1)
    """Number of transformer blocks."""
    hidden_size: int = Field(256, ge=8)
    """Width of the residual stream."""
    num_heads: int = Field(4, ge=1)
    """Attention heads (hidden_size must divide by it)."""
    num_kv_heads: int | None = Field(None, ge=1)
    """Key/value heads for grouped-query attention; null means num_heads (plain multi-head)."""
    intermediate_size: int | None = Field(None, ge=8)
    """Width of the MLP; null means about 8/3 × hidden_size rounded up to a multiple of 64."""
    vocab_size: int = Field(8192, ge=256)
    """Vocabulary size of the BPE tokenizer trained on the corpus (ignored with model.tokenizer)."""
    max_position_embeddings: int = Field(2048, ge=16)
    """Longest sequence the rotary embeddings are set up for."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the output head."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            )
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        return self


class ModelConfig(StrictModel):
    """Which model to start from. With neither `path` nor `from_config`, the embedded default
    (SmolLM2-135M-Instruct) is used."""

    path: str | None = None
    """A Hugging Face model directory, a `.gguf` file, or a run directory of an earlier stage."""
    from_config: ScratchModelConfig | None = None
    """Build a new model from these numbers instead of loading one (pre-training)."""
    tokenizer: str | None = None
    """Tokenizer directory; default: the model's own, or (from_config) a BPE trained on the corpus."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype on load: auto is float32 on CPU and bfloat16 on GPUs that support it."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel passed to transformers."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path and self.from_config:
            raise ValueError("set either model.path or model.from_config, not both")
        return self


class AdapterConfig(StrictModel):
    """How the model is trained: all weights, or a low-rank adapter."""

    method: Literal["full", "lora", "dora", "qlora"] = "lora"
    """full: every weight; lora/dora: a PEFT adapter; qlora: LoRA on a 4-bit base (CUDA + bitsandbytes)."""
    rank: int = Field(16, ge=1)
    """LoRA rank r."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator: the update is scaled by alpha / rank."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (e.g. [q_proj, v_proj]) or all-linear (every linear layer but the head)."""


class ChatModelConfig(StrictModel):
    """A model honing talks to: a local model (any honing model source, plus an adapter), or an
    OpenAI-compatible HTTP endpoint. Nothing is sent anywhere but the endpoint configured here."""

    path: str | None = None
    """A local model (HF directory, .gguf or run directory); null with no endpoint: the embedded default."""
    adapter: str | None = None
    """A PEFT adapter (or a run directory that saved one) merged into the local model."""
    endpoint: str | None = None
    """Base URL of an OpenAI-compatible API (e.g. http://localhost:8000/v1); prompts are sent there and nowhere else."""
    endpoint_model: str | None = None
    """The model name the endpoint expects."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (read at run time, never written to the record)."""
    timeout_s: float = Field(120.0, gt=0)
    """HTTP timeout per request."""

    @model_validator(mode="after")
    def _one_source(self) -> ChatModelConfig:
        if self.endpoint and (self.path or self.adapter):
            raise ValueError("set either endpoint or path/adapter, not both")
        if self.endpoint and not self.endpoint_model:
            raise ValueError("endpoint needs endpoint_model (the model name the endpoint serves)")
        return self
