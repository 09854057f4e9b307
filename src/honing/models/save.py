"""Saving models and adapters, and merging an adapter into its base.

Every directory is written next to its destination under a temporary name and moved into
place with os.replace, so a crash mid-write never leaves a half-written model behind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from honing.config import ModelConfig
from honing.errors import ModelError
from honing.io import atomic_dir
from honing.models.adapters import is_peft_model, resolve_adapter_dir, write_adapter_base
from honing.models.load import _first_line, _strip_gguf_quantization, load_adapter_model, resolve_dtype
from honing.models.source import base_identity

log = logging.getLogger(__name__)


def base_model_path(peft_model: Any) -> str | None:
    """The directory the adapter's base model was loaded from, made absolute, if it exists."""
    config = peft_model.peft_config[peft_model.active_adapter]
    candidates = [config.base_model_name_or_path, getattr(peft_model.get_base_model().config, "_name_or_path", None)]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return str(Path(candidate).resolve())
    return None


def save_model(model: Any, tokenizer: Any, out_dir: str | Path, *,
               save: Literal["adapter", "merged", "both"] = "adapter", state_dict: dict | None = None) -> dict[str, str]:
    """Save a trained model into `out_dir`; returns {role: path}.

    A PEFT model gives `adapter/` (PEFT format, naming its base portably: see
    honing.models.adapters), `model/` (merged, plain HF), or both. The in-memory
    model is left untouched, so training can continue. A full model always gives `model/`.
    `state_dict` (full, gathered from FSDP shards) is saved instead of the model's own tensors.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_peft_model(model):
        return {"model": str(_save_full(model, tokenizer, out_dir / "model", state_dict))}

    outputs: dict[str, str] = {}
    adapter_dir = out_dir / "adapter"
    if save in ("adapter", "both"):
        outputs["adapter"] = str(save_adapter(model, tokenizer, adapter_dir, state_dict))
    if save in ("merged", "both"):
        outputs["model"] = str(_save_merged(model, tokenizer, out_dir / "model", adapter_dir if "adapter" in outputs else None))
    return outputs


def _save_full(model: Any, tokenizer: Any, target: Path, state_dict: dict | None = None) -> Path:
    _strip_gguf_quantization(model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return target


def save_adapter(peft_model: Any, tokenizer: Any, target: str | Path, state_dict: dict | None = None) -> Path:
    """The PEFT adapter (adapter_config.json + adapter_model.safetensors) and the tokenizer."""
    target = Path(target)
    base = base_model_path(peft_model)
    with atomic_dir(target) as tmp:
        peft_model.save_pretrained(tmp, state_dict=state_dict)
        if base is not None:
            write_adapter_base(tmp, base_identity(base))
        else:
            log.warning("the adapter's base model was not loaded from a directory; "
                        "set model.path to the base when loading %s", target)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return target


def _save_merged(peft_model: Any, tokenizer: Any, target: Path, adapter_dir: Path | None) -> Path:
    """Reload the base from disk and fold in the adapter as saved: the merged model is
    exactly what the saved adapter gives, and the in-memory model keeps training. Without a
    base directory (a model built in memory), a deep copy is merged instead."""
    import copy
    import tempfile

    import torch

    base = base_model_path(peft_model)
    dtype = next(peft_model.get_base_model().parameters()).dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):  # a 4-bit base
        dtype = torch.bfloat16
    if base is None:
        merged = copy.deepcopy(peft_model).merge_and_unload()
        merged.to(dtype)
        return _save_full(merged, tokenizer, target)
    if adapter_dir is not None:
        return merge_adapter(ModelConfig(path=base), adapter_dir, target, dtype=dtype)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".adapter-for-merge-") as scratch:
        save_adapter(peft_model, tokenizer, Path(scratch) / "adapter")
        return merge_adapter(ModelConfig(path=base), Path(scratch) / "adapter", target, dtype=dtype)


def merge_adapter(model_cfg: ModelConfig, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: Any = "float32") -> Path:
    """Fold an adapter into its base (merged in float32, saved in `dtype`) and save a plain
    HF model directory, with the tokenizer, at `out_dir`."""
    adapter_dir = resolve_adapter_dir(adapter_dir)
    loaded = load_adapter_model(model_cfg, adapter_dir, dtype="float32", merge=True)
    merged = loaded.model
    merged.to(resolve_dtype(dtype, "cpu"))
    try:
        return _save_full(merged, loaded.tokenizer, Path(out_dir))
    except OSError as err:
        raise ModelError(f"cannot write the merged model to {out_dir}: {_first_line(err)}") from None
