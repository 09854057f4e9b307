"""What gets trained: every weight (full), or a low-rank adapter (LoRA, DoRA, QLoRA) via peft.

QLoRA needs CUDA and bitsandbytes; that is checked once, here, in `qlora_available`.
"""

from __future__ import annotations

import functools
import logging
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
