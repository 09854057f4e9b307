"""Configs of the training stages that learn from text and chat data: pretrain, sft, quickstart."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.data import DataConfig
from honing.config.evaluation import GENERAL_SUITE, EvalTaskConfig
from honing.config.model import AdapterConfig, ModelConfig, no_adapter_to_load, starts_from_trained
from honing.config.output import OutputConfig
from honing.config.train import TrainConfig


class SFTConfig(StrictModel):
    """`honing sft`: supervised fine-tuning on instruction or chat data."""

    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if not self.data.train:
            raise ValueError("data.train is required: the path of the training data")
        starts_from_trained(self.model, "sft")
        if self.data.format in ("text", "preference"):
            raise ValueError(f"sft trains on instruction, chat or sharegpt data, not data.format={self.data.format}")
        return self


class PretrainConfig(StrictModel):
    """`honing pretrain`: causal language modelling on raw text, usually from a new model."""

    model: ModelConfig = ModelConfig()
    """With neither model.path nor model.from_config, a new model with the from_config defaults."""
    data: DataConfig = DataConfig(format="text", train_on="everything", packing=True)
    train: TrainConfig = TrainConfig(lr=1e-3, warmup_steps=10, weight_decay=0.1)
    output: OutputConfig = OutputConfig()

    @model_validator(mode="before")
    @classmethod
    def _scratch_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            model = data.get("model")
            if isinstance(model, dict) and not model.get("path") and model.get("from_config") is None:
                data = {**data, "model": {**model, "from_config": {}}}
            elif model is None:
                data = {**data, "model": {"from_config": {}}}
        return data

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if not self.data.train:
            raise ValueError("data.train is required: the path of the raw text")
        if self.data.format not in ("auto", "text"):
            raise ValueError(f"pretrain reads raw text: data.format must be text or auto, not {self.data.format}")
        no_adapter_to_load(self.model, "pretrain")
        return self


def _quickstart_sft() -> SFTConfig:
    """The same settings as examples/sft/quickstart.yaml (a test keeps the two equal)."""
    return SFTConfig(
        adapter=AdapterConfig(method="lora", rank=16, alpha=32, dropout=0.0, target_modules="all-linear"),
        data=DataConfig(train="<bundled>", validation_split=0.05, max_length=256, train_on="all_assistant"),
        train=TrainConfig(lr=1e-3, schedule="cosine", warmup_steps=5, epochs=1, micro_batch_size=8,
                          grad_accum=1, eval_every=25, save_every=25),
        output=OutputConfig(save="adapter"),
    )


class QuickstartConfig(StrictModel):
    """`honing quickstart`: LoRA fine-tune of the embedded model on the bundled support-ticket task, with a before/after table."""

    sft: SFTConfig = _quickstart_sft()
    """The fine-tuning run; data.train=<bundled> means the task's bundled training file."""
    eval_examples: int = Field(60, ge=1)
    """Held-out examples scored before and after."""
    batch_size: int = Field(16, ge=1)
    """Prompts generated together during scoring."""
    max_new_tokens: int = Field(64, ge=8)
    """Longest answer generated while scoring."""
    general_tasks: list[EvalTaskConfig] = GENERAL_SUITE
    """The general-capability tasks scored before and after, each with the paired interval of the change, to show
    the fine-tune did not make the model worse at the rest (default: the eval gate's suite, GENERAL_SUITE: facts,
    arithmetic, reading comprehension, refusal, instruction following, formatting); [] skips them."""
    general_examples: int | None = Field(None, ge=0)
    """Use only the first N examples of each general task (the bundled files interleave their categories, so a
    slice keeps every one); 0 skips the check; null: every example."""
