"""Saving models and adapters, and merging an adapter into its base.

Every directory is written next to its destination under a temporary name and moved into
place with os.replace, so a crash mid-write never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from honing.config import ModelConfig
from honing.errors import ModelError
from honing.models.load import (
    LoadedModel,
    _first_line,
    _strip_gguf_quantization,
    adapter_base_path,
    attach_adapter,
    load_model,
    resolve_dtype,
)

log = logging.getLogger(__name__)


@contextmanager
def atomic_dir(final: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `final`; on success it replaces `final`.

    keep_existing=True (caches): if `final` appeared meanwhile, keep it and drop ours.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if keep_existing:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        # Linux cannot rename over a non-empty directory: move the old one aside first.
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(tmp, final)
        except OSError:
            if keep_existing and final.exists():  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise


def is_peft_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


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

    A PEFT model gives `adapter/` (PEFT format, naming its base by absolute path so plain
    PeftModel.from_pretrained reloads it), `model/` (merged, plain HF), or both. The in-memory
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
            config_file = tmp / "adapter_config.json"
            config = json.loads(config_file.read_text())
            config["base_model_name_or_path"] = base
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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


# --------------------------------------------------------------------------- adapters from disk


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter directory, or a run directory holding one in `adapter/`."""
    path = Path(path).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    if not path.exists():
        raise ModelError(f"adapter {path} does not exist; give a PEFT adapter directory or a run directory with adapter/")
    raise ModelError(f"{path} holds no PEFT adapter (no adapter_config.json, nor adapter/adapter_config.json)")


def _base_config(model_cfg: ModelConfig, adapter_dir: Path) -> ModelConfig:
    """model.path wins; with no model set, the base the adapter names (when it exists)."""
    if model_cfg.path or model_cfg.from_config is not None:
        return model_cfg
    base = adapter_base_path(adapter_dir)
    if Path(base).exists():
        return model_cfg.model_copy(update={"path": base})
    log.warning("the adapter's base %s does not exist here; using the embedded default model", base)
    return model_cfg


def load_adapter_model(model_cfg: ModelConfig, adapter_dir: str | Path, *, device: str = "cpu",
                       dtype: Any = None, merge: bool = False) -> LoadedModel:
    """Base model + a saved adapter: a PeftModel (merge=False) or a plain merged model."""
    adapter_dir = resolve_adapter_dir(adapter_dir)
    base_cfg = _base_config(model_cfg, adapter_dir)
    loaded = load_model(base_cfg, device=device, dtype=dtype)
    loaded.model = attach_adapter(loaded.model, adapter_dir, merge=merge)
    loaded.model.eval()
    if (adapter_dir / "tokenizer_config.json").is_file() and not base_cfg.tokenizer:
        from honing.models.load import _tokenizer_from_dir

        loaded.tokenizer = _tokenizer_from_dir(adapter_dir)
    from honing.models.load import weight_files, weights_sha256

    loaded.source = {**loaded.source, "adapter": str(adapter_dir),
                     "adapter_sha256": weights_sha256(weight_files(adapter_dir))}
    return loaded


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
