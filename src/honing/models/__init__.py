"""Models: where they come from (source: HF directory, GGUF, run directory, embedded default),
loading them or building one from scratch (load), adapters (full, LoRA, DoRA, QLoRA; on disk),
and saving/merging (save). Nothing here imports torch at import time."""

from honing.models.adapters import apply_adapter, count_parameters, qlora_available, quantization_config_for
from honing.models.load import LoadedModel, build_scratch_model, load_adapter_model, load_model, load_tokenizer
from honing.models.save import merge_adapter, save_model
from honing.models.source import resolve_model_source
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
