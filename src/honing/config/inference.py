"""Configs of the stages that use a model without training it: generate, chat, merge, inspect."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.data import DataConfig
from honing.config.model import ChatModelConfig, ModelConfig
from honing.config.sampling import SamplingConfig


class GenerateConfig(StrictModel):
    """`honing generate`: answer every prompt of a file and write the answers to a file."""

    model: ChatModelConfig = ChatModelConfig()
    """The model that answers: model.path (+ model.adapter), or model.endpoint + model.endpoint_model."""
    prompts: str | None = None
    """Input: .jsonl with `prompt` or `messages` per line (or any chat/instruction format), or .txt with one prompt per line."""
    output: str | None = None
    """Output .jsonl: each input record plus a `response` field."""
    system_prompt: str | None = None
    """System message added to prompts that have none."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated together (left-padded)."""
    chat_template: bool = True
    """Wrap prompts in the model's chat template (false: plain text completion)."""
    sampling: SamplingConfig = SamplingConfig()

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if not self.prompts or not self.output:
            raise ValueError("prompts and output are both required (e.g. honing generate in.jsonl -o out.jsonl, or "
                             "prompts=in.jsonl output=out.jsonl)")
        return self


class ChatConfig(StrictModel):
    """`honing chat`: talk to a model in the terminal."""

    model: ChatModelConfig = ChatModelConfig()
    """The model to talk to: model.path (+ model.adapter), or model.endpoint + model.endpoint_model."""
    system_prompt: str | None = None
    """System message at the start of the conversation."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9)


class MergeConfig(StrictModel):
    """`honing merge`: fold a LoRA/DoRA adapter into its base model and save a plain model."""

    model: ModelConfig = ModelConfig()
    """model.adapter: the PEFT adapter directory to fold in (a run's `adapter/` folder, or the run directory
    itself); model.path: its base model, when not the one the adapter recorded."""
    output: str | None = None
    """Directory for the merged Hugging Face model."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype of the saved weights."""

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        if not self.model.adapter or not self.output:
            raise ValueError("model.adapter and output are both required "
                             "(e.g. honing merge runs/x/adapter -o merged/, or model.adapter=runs/x/adapter output=merged/)")
        return self


class InspectConfig(StrictModel):
    """`honing inspect`: what a data file holds and what training would see."""

    model: ModelConfig = ModelConfig()
    """Whose tokenizer and chat template to use."""
    data: DataConfig = DataConfig()
    example: int = Field(0, ge=0)
    """Index of the example rendered with its trained tokens marked."""

    @model_validator(mode="after")
    def _check(self) -> InspectConfig:
        if not self.data.train:
            raise ValueError("data.train is required: the file to inspect")
        return self
