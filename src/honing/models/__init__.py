"""Models: where they come from (HF directory, GGUF, run directory, embedded default, from
scratch), adapters (full, LoRA, DoRA, QLoRA), and saving/merging. Nothing here imports torch
at import time."""

from honing.models.adapters import apply_adapter, count_parameters, qlora_available, quantization_config_for
from honing.models.load import (
    LoadedModel,
    build_scratch_model,
    load_model,
    load_tokenizer,
    resolve_model_source,
)
from honing.models.save import load_adapter_model, merge_adapter, save_model
from honing.models.tokenizer import train_bpe_tokenizer

__all__ = [
    "LoadedModel",
    "apply_adapter",
    "build_scratch_model",
    "count_parameters",
    "load_adapter_model",
    "load_model",
    "load_tokenizer",
    "merge_adapter",
    "qlora_available",
    "quantization_config_for",
    "resolve_model_source",
    "save_model",
    "train_bpe_tokenizer",
]
