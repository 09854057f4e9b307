"""Config of `honing serve`: which models, where it listens, who may call it, and the limits it enforces."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from honing.config.base import StrictModel
from honing.config.retrieval import ModelRagConfig
from honing.config.sampling import GenerationConfig

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ServedModelConfig(StrictModel):
    """One model the server answers as: weights (`path`, a `registry:NAME@ALIAS` reference, a run directory, a
    Hugging Face directory or a `.gguf`; null: the embedded default) and optionally a LoRA adapter over them.
    Adapters over the same base share one copy of it in memory."""

    path: str | None = None
    """The weights: a registry reference (followed when its alias moves), a run directory, an HF directory or a
    .gguf file; null: the embedded SmolLM2-135M-Instruct."""
    adapter: str | None = None
    """A PEFT adapter directory (or registry reference / run directory that saved one) over `path`'s weights."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: float32 on CPU, bfloat16 on a GPU that has it."""
    tokenizer: str | None = None
    """A tokenizer directory, when not the model's own."""
    system_prompt: str | None = None
    """System message added to chat requests that have none."""
    rag: ModelRagConfig | None = None
    """Answer from an index (`honing rag index`): the question (a chat request's last user message, a completion's
    prompt) is replaced by the top k chunks, labelled with their ids, the instruction to cite them, and the
    question. The index is opened when the server starts; responses and the log name the chunks in `sources`."""


class LimitsConfig(StrictModel):
    """What one request may ask for; a request beyond a limit gets a 4xx in OpenAI's error shape."""

    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest request body, in bytes (413 beyond it)."""
    max_prompt_tokens: int = Field(2048, ge=1)
    """Longest prompt after the chat template, in tokens (400 beyond it)."""
    max_tokens: int = Field(1024, ge=1)
    """Largest `max_tokens` a request may ask for (400 beyond it)."""
    default_max_tokens: int = Field(256, ge=1)
    """`max_tokens` of a request that gives none."""
    max_n: int = Field(4, ge=1)
    """Largest `n` (answers per request)."""
    request_timeout_s: float = Field(300.0, gt=0)
    """Seconds a request may wait and generate; beyond it the request is stopped and answered 408."""
    rate_per_minute: int = Field(600, ge=1)
    """Requests per minute per API key (or, without keys, per client address); 429 beyond it."""
    concurrency: int = Field(32, ge=1)
    """Requests in flight at once per API key (or client address); 429 beyond it."""


class LogConfig(StrictModel):
    """The request log: one SQLite database (WAL), written before each response completes."""

    path: str = ".honing/requests.sqlite"
    """The database file (created with its folder)."""
    redact_pii: bool = True
    """Replace emails, phones, cards, IBANs, IPs, national ids, credentials and secrets in prompts and answers
    with placeholders (<EMAIL>) before they are written, with the data workbench's detectors."""
    sync: Literal["normal", "full"] = "normal"
    """normal: each request is committed before its answer completes, which a killed server (kill -9) never
    loses; full: each commit is also fsynced, which survives a power cut too (slower: an fsync per request)."""
    store_text: bool = True
    """Keep the (redacted) prompts and answers; false keeps only the numbers (tokens, latency, finish reason)."""


class ServeConfig(StrictModel):
    """`honing serve`: an OpenAI-compatible HTTP server for local models and adapters."""

    model: str | None = None
    """Shorthand for one model: its path or registry reference (model=registry:support-bot@production), served
    under its registry name (support-bot), its directory name, or `default` for the embedded model."""
    models: dict[str, ServedModelConfig] = {}
    """Models by the name a request's `model` field picks, e.g. {support-bot: {path: registry:support-bot@production}}."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback needs API keys."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on (0: a free one, printed at start)."""
    api_keys_file: str | None = None
    """A file with one API key per line ('#' starts a comment); the keys in HONING_API_KEYS (comma-separated)
    count too. With any key set, every /v1 route needs `Authorization: Bearer KEY`."""
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()
    generation: GenerationConfig = GenerationConfig(max_batch=16)
    """The engine every model answers through (continuous batching, prefix caching); backend auto or torch."""
    reload_check_s: float = Field(1.0, ge=0)
    """How often (at most) a registry reference is looked up again to see whether its alias moved (0: every
    request)."""

    @field_validator("models", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        # models: {name: "registry:x@production"} is short for {name: {path: ...}}
        if isinstance(value, dict):
            return {name: {"path": spec} if isinstance(spec, str) else spec for name, spec in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.model is not None:
            name = served_name(self.model)
            spec = ServedModelConfig(path=None if self.model == "default" else self.model)
            if name in self.models and self.models[name] != spec:
                raise ValueError(f"model={self.model} is served as {name!r}, which models already names; give one")
            if name not in self.models:  # (this check runs again after the assignment below)
                self.models = {name: spec, **self.models}
        if not self.models:
            self.models = {"default": ServedModelConfig()}
        for name in self.models:
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"models: {name!r} is not a usable model name (no spaces, not empty)")
        if self.generation.backend not in ("auto", "torch"):
            raise ValueError(f"generation.backend={self.generation.backend}: honing serve generates with honing's "
                             "engine (auto or torch); the vLLM and transformers backends are not wired into the "
                             "server")
        if self.limits.default_max_tokens > self.limits.max_tokens:
            raise ValueError(f"limits.default_max_tokens ({self.limits.default_max_tokens}) is above limits.max_tokens "
                             f"({self.limits.max_tokens})")
        return self


def served_name(spec: str) -> str:
    """The name a model is served under when given as one path or reference."""
    if spec == "default":
        return "default"
    if spec.startswith("registry:"):
        return spec.removeprefix("registry:").partition("@")[0]
    stem = spec.rstrip("/").rsplit("/", 1)[-1]
    return stem.removesuffix(".gguf") or "default"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
