"""Loading a model and its tokenizer from wherever `honing.models.source` says it is (a Hugging
Face directory, a `.gguf` file, a run directory, the embedded default), with or without a saved
adapter on top; or building a new model from numbers.

GGUF files (the embedded default included) are de-quantised once and cached as a plain
safetensors directory under the cache (HONING_CACHE or ~/.cache/honing), so every later load
takes about a second instead of twenty.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.config import AdapterConfig, ModelConfig, ScratchModelConfig
from honing.errors import ModelError
from honing.io import atomic_dir, write_text_atomic
from honing.models.adapters import attach_adapter, quantization_config_for, read_adapter_base, resolve_adapter_dir
from honing.models.source import (
    GGUF_SOURCE_FILE,
    gguf_model_cache,
    gguf_tokenizer_cache,
    record_gguf_source,
    resolve_base,
    resolve_model_source,
    source_sha256,
    weight_files,
    weights_sha256,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for use (eval mode), its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    source: dict[str, Any] = field(default_factory=dict)
    """kind, path, gguf_file, sha256 of the weights (plus adapter and adapter_sha256 for base + adapter)."""


def _strip_gguf_quantization(model: Any) -> None:
    """A model de-quantised from GGUF still says quant_method=gguf; saved like that, the
    directory would not reload as a plain model."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF file into a float32 safetensors HF directory (cached; atomic)."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    target = gguf_model_cache(gguf)
    if (target / "config.json").is_file() and weight_files(target):
        if not (target / GGUF_SOURCE_FILE).is_file():  # a cache written before the record existed
            write_text_atomic(target / GGUF_SOURCE_FILE, json.dumps(record_gguf_source(gguf), indent=2) + "\n")
        return target
    log.info("de-quantising %s once into %s (later loads read the cache)", gguf, target)
    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # transformers raises many kinds for unsupported GGUF layouts
        raise ModelError(f"cannot load GGUF {gguf}: {type(err).__name__}: {_first_line(err)}") from None
    tokenizer = load_gguf_tokenizer(gguf)
    _strip_gguf_quantization(model)
    with atomic_dir(target, keep_existing=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / GGUF_SOURCE_FILE).write_text(json.dumps(record_gguf_source(gguf), indent=2) + "\n")
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)
    return target


def load_gguf_tokenizer(gguf: Path) -> Any:
    """The tokenizer of a GGUF file, converted once and cached as an HF directory."""
    from transformers import AutoTokenizer

    for cached in (gguf_model_cache(gguf), gguf_tokenizer_cache(gguf)):
        if (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:
        raise ModelError(f"cannot read the tokenizer of {gguf}: {type(err).__name__}: {_first_line(err)}") from None
    with atomic_dir(gguf_tokenizer_cache(gguf), keep_existing=True) as tmp:
        tokenizer.save_pretrained(tmp)
    return tokenizer


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer alone (cheap): cfg.tokenizer if set, else the model's own. A pad token is
    guaranteed (eos is used, and logged, when the tokenizer has none)."""
    if cfg.tokenizer:
        return _tokenizer_from_dir(Path(cfg.tokenizer).expanduser())
    source = resolve_model_source(cfg)
    return _tokenizer_for_source(source)


def _tokenizer_for_source(source: dict[str, Any]) -> Any:
    kind = source["kind"]
    if kind == "scratch":
        raise ModelError(
            "a model built from model.from_config has no tokenizer yet: set model.tokenizer, "
            "or let pretrain train one on the corpus (model.from_config.vocab_size)"
        )
    if source.get("adapter") and _has_tokenizer(Path(source["adapter"])):
        return _tokenizer_from_dir(Path(source["adapter"]))
    if source.get("base"):
        return _tokenizer_for_source(source["base"])
    if kind in ("gguf", "embedded"):
        return ensure_pad_token(load_gguf_tokenizer(Path(source["path"])))
    return _tokenizer_from_dir(Path(source["path"]))


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file() or (directory / "tokenizer.json").is_file()


def _tokenizer_from_dir(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not directory.exists():
        raise ModelError(f"tokenizer directory {directory} does not exist; set model.tokenizer to a tokenizer directory")
    if not _has_tokenizer(directory):
        raise ModelError(f"{directory} holds no tokenizer (no tokenizer.json or tokenizer_config.json); set model.tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as err:
        raise ModelError(f"cannot load the tokenizer in {directory}: {type(err).__name__}: {_first_line(err)}") from None
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("the tokenizer has neither a pad nor an eos token; add one (e.g. with tokenizer.add_special_tokens) and save it")
        log.info("tokenizer has no pad token: using its eos token %r for padding", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------- model


def resolve_dtype(name: str | None, device: str) -> Any:
    """auto: float32 on CPU, bfloat16 on CUDA devices that support it (float32 otherwise)."""
    import torch

    if name is None or name == "auto":
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(cfg: ModelConfig, *, device: str = "cpu", dtype: Any = None, adapter: AdapterConfig | None = None,
               quantization_config: Any = None, merge_adapter: bool = True) -> LoadedModel:
    """Load the model `cfg` points at, in eval mode, with its tokenizer and content hash.

    A run directory whose output is an adapter loads its base plus the adapter; with
    merge_adapter=True (the default) the adapter is folded into the weights in memory, so the
    result is a plain model (faster to generate from, and trainable with a new adapter).
    `adapter` is the adapter that will be trained on top: with method=qlora the base is loaded
    in 4 bits (an explicit `quantization_config` does the same).
    """
    if adapter is not None and quantization_config is None:
        quantization_config = quantization_config_for(adapter)
    source = resolve_model_source(cfg)
    if source["kind"] == "scratch":
        raise ModelError("model.from_config describes a new model: build it with build_scratch_model (honing pretrain)")
    torch_dtype = resolve_dtype(dtype if dtype is not None else cfg.dtype, device)
    tokenizer = load_tokenizer(cfg) if cfg.tokenizer else _tokenizer_for_source(source)

    base_source = source.get("base") or source
    model = _load_weights(base_source, torch_dtype, cfg.attn_implementation, device, quantization_config)
    record = {"kind": source["kind"], "path": source["path"], "gguf_file": source.get("gguf_file"),
              "sha256": source_sha256(base_source)}
    if source.get("run"):
        record["run"] = source["run"]
    if source.get("registry"):
        record["registry"] = source["registry"]
    if source.get("adapter"):
        model = attach_adapter(model, source["adapter"], merge=merge_adapter and quantization_config is None)
        record["adapter"] = source["adapter"]
        record["adapter_sha256"] = weights_sha256(weight_files(source["adapter"]))
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=record)


def _load_weights(source: dict[str, Any], torch_dtype: Any, attn: str, device: str, quantization_config: Any) -> Any:
    from transformers import AutoModelForCausalLM

    directory = Path(source["path"])
    if source["kind"] in ("gguf", "embedded"):
        directory = convert_gguf(directory)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": attn}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except Exception as err:
        raise ModelError(f"cannot load the model in {directory}: {type(err).__name__}: {_first_line(err)}") from None
    if quantization_config is None:
        model.to(device)
    return model


def adapter_base_config(model_cfg: ModelConfig, adapter_dir: Path) -> ModelConfig:
    """model.path wins; with no model set, the base the adapter names, found on this machine
    (`resolve_base`: its path, the embedded model, or a local model with the same hash)."""
    if model_cfg.path or model_cfg.from_config is not None:
        return model_cfg
    return model_cfg.model_copy(update={"path": resolve_base(read_adapter_base(adapter_dir), adapter_dir)})


def load_adapter_model(model_cfg: ModelConfig, adapter_dir: str | Path, *, device: str = "cpu",
                       dtype: Any = None, merge: bool = False) -> LoadedModel:
    """Base model + a saved adapter: a PeftModel (merge=False) or a plain merged model."""
    adapter_dir = resolve_adapter_dir(adapter_dir)
    base_cfg = adapter_base_config(model_cfg, adapter_dir)
    loaded = load_model(base_cfg, device=device, dtype=dtype)
    loaded.model = attach_adapter(loaded.model, adapter_dir, merge=merge)
    loaded.model.eval()
    if (adapter_dir / "tokenizer_config.json").is_file() and not base_cfg.tokenizer:
        loaded.tokenizer = _tokenizer_from_dir(adapter_dir)
    loaded.source = {**loaded.source, "adapter": str(adapter_dir),
                     "adapter_sha256": weights_sha256(weight_files(adapter_dir))}
    return loaded


# --------------------------------------------------------------------------- scratch


def default_intermediate_size(hidden_size: int) -> int:
    """About 8/3 × hidden_size (the SwiGLU convention), rounded up to a multiple of 64."""
    return math.ceil(8 * hidden_size / 3 / 64) * 64


def build_scratch_model(cfg: ScratchModelConfig, tokenizer: Any, *, seed: int) -> Any:
    """A llama-style decoder with random weights drawn from `seed` (the global RNG is untouched)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size or default_intermediate_size(cfg.hidden_size),
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
