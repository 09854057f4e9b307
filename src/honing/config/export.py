"""Config of `honing export`: a model (with any adapter folded in) written for serving elsewhere."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from honing.config.base import StrictModel
from honing.config.model import ModelConfig


class ExportConfig(StrictModel):
    """`honing export`: a merged Hugging Face directory (vLLM, TGI) and/or a GGUF file with an Ollama Modelfile."""

    model: ModelConfig = ModelConfig()
    """The model to export: model.path (a Hugging Face directory, a .gguf, a run directory, registry:NAME@ALIAS; none:
    the embedded default), and model.adapter, a PEFT adapter folded into it first. It is loaded in float32 whatever
    model.dtype says; `dtype` and `gguf_dtype` set what is written."""
    output: str | None = None
    """Directory to write: model/ (format hf), model.gguf + Modelfile (format gguf), run.json and config.yaml."""
    format: Literal["hf", "gguf", "both"] = "both"
    """hf: a merged Hugging Face directory (safetensors, config, tokenizer, chat template); gguf: a GGUF file for
    llama.cpp and Ollama (llama-architecture models only) with a Modelfile; both: all of them."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype of the Hugging Face weights (bfloat16 halves the size; float32 keeps the weights exactly)."""
    gguf_dtype: Literal["f32", "f16"] = "f16"
    """Tensor type of the GGUF's matrices: f16 (half the size; the embedded model's logits move by up to 0.04, its
    greedy tokens not at all) or f32 (the same logits). Norm weights are always f32, as llama.cpp expects."""
    overwrite: bool = False
    """Replace an existing non-empty output directory (otherwise it is refused)."""

    @model_validator(mode="after")
    def _check(self) -> ExportConfig:
        if not self.output:
            raise ValueError("output is required (e.g. honing export runs/sft-x -o exported/, or output=exported/)")
        if self.model.from_config is not None:
            raise ValueError("model.from_config describes an untrained model: export a trained one (model.path)")
        return self
