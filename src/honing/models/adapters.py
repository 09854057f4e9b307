"""What gets trained: every weight (full), or a low-rank adapter (LoRA, DoRA, QLoRA) via peft;
and adapters on disk: finding one, the base model it names, and putting it on a model.

QLoRA needs CUDA and bitsandbytes; that is checked once, here, in `qlora_available`.

A saved adapter names its base portably. `adapter_config.json`'s `base_model_name_or_path` holds
the base's upstream model id when honing knows it (the embedded default's Hugging Face id), else
its local path, never a file in honing's cache; `honing_base.json` beside it holds the id, the
path and the base's sha256 (as run records give it), which `honing.models.source.resolve_base`
turns back into a model on this machine.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from honing.config import AdapterConfig
from honing.errors import ModelError

log = logging.getLogger(__name__)

MIN_BITSANDBYTES = "0.45"


@functools.lru_cache(maxsize=1)
def qlora_available() -> tuple[bool, str]:
    """(True, "") when 4-bit QLoRA can run here, else (False, why not)."""
    import torch
    from packaging.version import Version

    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    try:
        import bitsandbytes
    except Exception as err:  # ImportError, or a broken CUDA setup raising at import
        return False, f"bitsandbytes does not import ({type(err).__name__}: {err})"
    version = getattr(bitsandbytes, "__version__", "0")
    if Version(version) < Version(MIN_BITSANDBYTES):
        return False, f"bitsandbytes {version} is older than {MIN_BITSANDBYTES}"
    return True, ""


def _require_qlora() -> None:
    ok, reason = qlora_available()
    if not ok:
        raise ModelError(
            "adapter.method=qlora needs a CUDA GPU and bitsandbytes (pip install bitsandbytes): "
            f"{reason}; use adapter.method=lora on this machine"
        )


def quantization_config_for(cfg: AdapterConfig) -> Any:
    """The BitsAndBytesConfig to load the base with (NF4, double quantisation, bf16 compute)
    for qlora; None for every other method. Pass it to load_model(quantization_config=...)."""
    if cfg.method != "qlora":
        return None
    _require_qlora()
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def lora_config_for(cfg: AdapterConfig) -> Any:
    from peft import LoraConfig, TaskType

    target = cfg.target_modules if cfg.target_modules == "all-linear" else list(cfg.target_modules)
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target,
        use_dora=cfg.method == "dora",
        task_type=TaskType.CAUSAL_LM,
    )


def apply_adapter(model: Any, cfg: AdapterConfig) -> Any:
    """full: the model itself, every parameter trainable. lora/dora/qlora: a PeftModel whose
    only trainable parameters are the adapter's (for qlora the model must come from
    load_model(..., quantization_config=quantization_config_for(cfg)))."""
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    from peft import get_peft_model

    if cfg.method == "qlora":
        _require_qlora()
        from peft import prepare_model_for_kbit_training

        if not getattr(model, "is_loaded_in_4bit", False):
            raise ModelError("adapter.method=qlora needs the base loaded in 4 bits: load it with quantization_config_for(adapter)")
        # Gradient checkpointing is the engine's choice (train.activation_checkpointing).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        return get_peft_model(model, lora_config_for(cfg))
    except ValueError as err:
        raise ModelError(f"cannot put a {cfg.method} adapter on this model: {err} (check adapter.target_modules)") from None


def count_parameters(model: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts; tied weights are counted once (parameters() dedups)."""
    total = trainable = 0
    for param in model.parameters():
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":  # bitsandbytes packs two 4-bit values per byte
            count *= 2
        total += count
        if param.requires_grad:
            trainable += count
    return total, trainable


# --------------------------------------------------------------------------- adapters on disk

ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "honing_base.json"
"""Beside adapter_config.json: {"model_id", "path", "sha256"} of the adapter's base model."""


def is_peft_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter directory, a run directory holding one in `adapter/`, or a registered version (registry:NAME@V)."""
    if str(path).startswith("registry:"):
        from honing.registry.refs import resolve_ref

        path = resolve_ref(str(path)).run_dir
    path = Path(path).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        return path
    if (path / "adapter" / ADAPTER_CONFIG).is_file():
        return path / "adapter"
    if not path.exists():
        raise ModelError(f"adapter {path} does not exist; give a PEFT adapter directory or a run directory with adapter/")
    raise ModelError(f"{path} holds no PEFT adapter (no {ADAPTER_CONFIG}, nor adapter/{ADAPTER_CONFIG})")


def read_adapter_base(adapter_dir: str | Path) -> dict[str, str | None]:
    """The base an adapter names: {"model_id", "path", "sha256"} from honing_base.json, or, for
    an adapter saved before it (or by another tool), {"path": base_model_name_or_path}."""
    adapter_dir = Path(adapter_dir)
    base_file = adapter_dir / BASE_FILE
    if base_file.is_file():
        identity = _read_json(base_file)
        if any(identity.get(key) for key in ("model_id", "path", "sha256")):
            return {key: identity.get(key) for key in ("model_id", "path", "sha256")}
    config_file = adapter_dir / ADAPTER_CONFIG
    base = _read_json(config_file).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{config_file} names no base_model_name_or_path; set model.path to the adapter's base model")
    return {"model_id": None, "path": str(base), "sha256": None}


def write_adapter_base(adapter_dir: str | Path, identity: dict[str, str | None]) -> None:
    """Record `identity` (see read_adapter_base) in honing_base.json, and name the base in
    adapter_config.json by its model id, else its path, so other PEFT tools see the same."""
    adapter_dir = Path(adapter_dir)
    record = {key: identity.get(key) for key in ("model_id", "path", "sha256")}
    (adapter_dir / BASE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    config_file = adapter_dir / ADAPTER_CONFIG
    config = _read_json(config_file)
    config["base_model_name_or_path"] = record["model_id"] or record["path"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a JSON object")
    return data


def attach_adapter(model: Any, adapter_dir: str | Path, *, merge: bool) -> Any:
    """Put a saved PEFT adapter on `model`; merge=True folds it in and returns a plain model."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelError(
            f"cannot apply the adapter in {adapter_dir}: {type(err).__name__}: {first} "
            "(is it an adapter for this base model?)"
        ) from None
    return peft_model.merge_and_unload() if merge else peft_model
