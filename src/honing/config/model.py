"""Which model: the one shape every stage, judge, teacher and target uses to name a model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.retrieval import ModelRagConfig
from honing.config.sampling import GenerationConfig


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
    """Which model: the one shape every stage, judge, teacher, target and attacker names a model in. A local
    model (`path`, + `adapter`; with neither `path` nor `endpoint`, the embedded SmolLM2-135M-Instruct), or an
    OpenAI-compatible HTTP endpoint (`endpoint` + `endpoint_model`). Nothing is sent anywhere but that endpoint."""

    path: str | None = None
    """A local model: a Hugging Face directory, a `.gguf` file, or a run directory of an earlier stage."""
    adapter: str | None = None
    """A PEFT adapter directory (a run's `adapter/` folder, or the run directory that saved it) on top of the model."""
    endpoint: str | None = None
    """Base URL of an OpenAI-compatible API (e.g. http://localhost:8000/v1); prompts are sent there and nowhere else."""
    endpoint_model: str | None = None
    """The model name the endpoint serves."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (read at run time, never written anywhere)."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds an endpoint request may take before it fails (or is retried)."""
    concurrency: int = Field(8, ge=1)
    """Endpoint requests in flight at once."""
    rag: ModelRagConfig | None = None
    """Retrieval-augmented answers: {index: DIR, k: 4, mode: hybrid, ...} puts the top k chunks of a `honing rag
    index` into each prompt's last user turn (with the instruction to cite their ids); null: none."""
    max_retries: int = Field(3, ge=0)
    """Retries of an endpoint request after a 429, a 5xx, a timeout or a dropped connection, with exponential backoff."""
    tokenizer: str | None = None
    """Tokenizer directory of a local model; default: the model's own."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype of a local model on load: auto is float32 on CPU and bfloat16 on GPUs that support it."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel of a local model, passed to transformers."""
    generation: GenerationConfig = GenerationConfig()
    """How a local model generates (engine, sequences in flight, prefix cache)."""

    @model_validator(mode="after")
    def _one_source(self) -> ChatModelConfig:
        if self.endpoint and (self.path or self.adapter):
            raise ValueError("set either endpoint or path/adapter, not both")
        if self.endpoint and not self.endpoint_model:
            raise ValueError("endpoint needs endpoint_model (the model name the endpoint serves)")
        return self


class ModelConfig(ChatModelConfig):
    """Which model a stage loads the weights of itself (training, merge, inspect): a local model, or one built
    from `from_config`. With neither `path` nor `from_config`, the embedded default (SmolLM2-135M-Instruct)."""

    from_config: ScratchModelConfig | None = None
    """Build a new model from these numbers instead of loading one (pre-training)."""

    @model_validator(mode="after")
    def _local(self) -> ModelConfig:
        if self.endpoint:
            raise ValueError("model.endpoint: this stage needs the weights themselves, which an endpoint does not "
                             "give; set model.path (a model directory, .gguf or run directory) instead")
        if self.path and self.from_config:
            raise ValueError("set either model.path or model.from_config, not both")
        if self.adapter and self.from_config:
            raise ValueError("model.adapter goes on top of a trained model (model.path), not on model.from_config")
        return self


def no_adapter_to_load(model: ModelConfig, stage: str) -> None:
    """Training stages train an adapter (the `adapter:` section) rather than load one: reject model.adapter."""
    if model.adapter:
        raise ValueError(f"{stage} trains a new adapter (the adapter: section) and takes no model.adapter "
                         f"({model.adapter}): set model.path to the run directory that saved it (its adapter is merged "
                         "into the base on load), or merge it first (honing merge ADAPTER -o DIR)")


def starts_from_trained(model: ModelConfig, stage: str) -> None:
    """Fine-tuning stages start from trained weights (a path, or the embedded default), not from_config or an adapter."""
    if model.from_config is not None:
        raise ValueError(f"{stage} starts from a trained model: set model.path (or nothing, for the default), "
                         "not model.from_config")
    no_adapter_to_load(model, stage)
