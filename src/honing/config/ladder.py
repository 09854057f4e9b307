"""Config of `honing ladder`: one held-out set, five ways of fitting a model to a task, measured side by side."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from honing.config.base import StrictModel
from honing.config.evaluation import EvalTaskConfig
from honing.config.model import AdapterConfig, ChatModelConfig
from honing.config.output import OutputConfig
from honing.config.retrieval import ModelRagConfig
from honing.config.sampling import SamplingConfig
from honing.config.train import TrainConfig

Rung = Literal["zero_shot", "few_shot", "rag", "finetune", "finetune_rag"]
RUNGS: tuple[str, ...] = ("zero_shot", "few_shot", "rag", "finetune", "finetune_rag")
"""The rungs in ladder order: each adds work to set up and keep up (a prompt; examples; documents; a training run;
both), so "cheapest" means earliest in this order."""
NEEDS_TRAIN = ("few_shot", "finetune", "finetune_rag")
NEEDS_RAG = ("rag", "finetune_rag")


class FewShotConfig(StrictModel):
    """Rung 2: the k training examples most similar to each question, as earlier turns of the conversation."""

    k: int = Field(4, ge=1)
    """Examples per prompt (the most similar last, next to the question)."""
    embedding_model: str | None = None
    """A local sentence-transformers directory that measures similarity; null: the embedded all-MiniLM-L6-v2."""


class LadderRagConfig(ModelRagConfig):
    """Rungs 3 and 5: retrieval from the user's documents. `index` is used as it is; with `docs`, the ladder first
    runs `honing rag index` over them into `index` (which only embeds what changed since the last time)."""

    docs: list[str] = []
    """Documents to index into `index` before the rungs run; empty: `index` must already exist."""
    chunk_tokens: int = Field(200, ge=8)
    """With docs: most tokens of a chunk (as honing rag index)."""
    overlap_tokens: int = Field(32, ge=0)
    """With docs: tokens repeated between neighbouring chunks (as honing rag index)."""
    instruction: str | None = None
    """What the prompt asks of the retrieved passages; null: answer from them only and cite their ids (honing rag
    ask's instruction). A task whose answer has a fixed format (JSON) wants one that does not ask for citations."""


class FinetuneConfig(StrictModel):
    """Rungs 4 and 5: a LoRA fine-tune on the training data, reused when it already exists."""

    run: str | None = None
    """A finished `honing sft` (or quickstart) run directory, or its adapter directory, to use instead of training.
    Null: train into `dir`, or reuse the run already there when it finished with the same settings."""
    dir: str | None = None
    """Where the ladder's own fine-tune goes; null: runs/ladder-finetune-<hash of the settings and the training
    data>, so a second ladder over the same data and settings reuses it."""
    adapter: AdapterConfig = AdapterConfig(method="lora", rank=16, alpha=32, dropout=0.0, target_modules="all-linear")
    """The adapter (LoRA by default; the quickstart's settings)."""
    train: TrainConfig = TrainConfig(lr=1e-3, schedule="cosine", warmup_steps=5, epochs=1, micro_batch_size=8,
                                     grad_accum=1, eval_every=25, save_every=25)
    """The optimisation (the quickstart's settings by default)."""
    max_length: int = Field(512, ge=16)
    """Longest training sequence, in tokens."""
    validation_split: float = Field(0.0, ge=0.0, lt=0.5)
    """Share of the training data held out for validation loss during training."""
    with_context: bool = False
    """Train on prompts that carry the retrieved chunks (each training question's top rag.k, put in as the RAG rungs
    do), so the fine-tune learns to read passages (as RAFT does) rather than to answer from the question alone.
    Needs rag; both fine-tuned rungs use this fine-tune."""

    @field_validator("adapter", "train", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any, info: Any) -> Any:
        """A partial `train:` or `adapter:` changes only the keys it gives; the rest keep the ladder's defaults
        (not the stage's: `train: {epochs: 3}` keeps lr 1e-3)."""
        if isinstance(value, dict):
            default = cls.model_fields[info.field_name].default
            return {**default.model_dump(), **value}
        return value


class LadderConfig(StrictModel):
    """`honing ladder`: on one held-out set, the model zero-shot, few-shot with retrieved examples, with RAG over the
    user's documents, fine-tuned (LoRA), and fine-tuned with RAG; quality with bootstrap intervals and paired
    differences, cost per rung, and the cheapest rung that is not significantly worse than the best."""

    model: ChatModelConfig = ChatModelConfig()
    """The model every rung starts from (a local model; default the embedded SmolLM2-135M-Instruct)."""
    task: EvalTaskConfig | None = None
    """The held-out set and its metrics, as in `honing eval` (a generation task); its system_prompt is the task's
    instruction, given on every rung."""
    train: str | None = None
    """Training data (chat, instruction or prompt/answer records): the pool of few-shot examples and the fine-tune's
    data. Needed by few_shot, finetune and finetune_rag."""
    rungs: list[Rung] = list(RUNGS)
    """The rungs to run (any subset; always reported in ladder order)."""
    few_shot: FewShotConfig = FewShotConfig()
    rag: LadderRagConfig | None = None
    """The documents (needed by rag and finetune_rag)."""
    finetune: FinetuneConfig = FinetuneConfig()
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=128)
    """How answers are generated (greedy by default, so scores reproduce)."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated together (the latency and tokens/s of every rung are measured at this batch size)."""
    resamples: int = Field(2000, ge=100)
    """Bootstrap resamples per interval."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the intervals; a rung is significantly worse than the best when the whole interval of
    its paired difference from the best is below zero."""
    cache: bool = True
    """Reuse answers computed before for the same weights, prompt and sampling (~/.cache/honing/evals); a cached
    answer keeps the latency measured when it was computed."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> LadderConfig:
        if self.task is None:
            raise ValueError("task is required: the held-out set, e.g. task: {name: support, data: builtin:quickstart}")
        if self.task.kind != "generation":
            raise ValueError(f"task {self.task.name}: the ladder compares generated answers, so task.kind must be "
                             f"generation, not {self.task.kind}")
        if not self.rungs:
            raise ValueError(f"rungs is empty; choose from {', '.join(RUNGS)}")
        if len(set(self.rungs)) != len(self.rungs):
            raise ValueError("rungs names a rung twice")
        if self.model.endpoint:
            raise ValueError("model.endpoint: the ladder fine-tunes the model, which needs its weights; set model.path")
        if self.model.adapter or self.model.rag:
            raise ValueError("model.adapter and model.rag: the ladder's model is the plain base every rung starts from; "
                             "the rungs add retrieval (rag:) and the adapter (finetune:) themselves")
        if self.task.chat_template is False:
            raise ValueError(f"task {self.task.name}: the ladder asks in the chat template (few-shot examples are "
                             "earlier turns); chat_template: false is not supported here")
        needs_train = [r for r in self.rungs if r in NEEDS_TRAIN and not (r != "few_shot" and self.finetune.run)]
        if needs_train and not self.train:
            raise ValueError(f"rungs {', '.join(needs_train)} need train (the training data file)")
        needs_rag = [r for r in self.rungs if r in NEEDS_RAG]
        if needs_rag and self.rag is None:
            raise ValueError(f"rungs {', '.join(needs_rag)} need rag (rag.index, and rag.docs to build it)")
        if self.finetune.with_context and self.rag is None:
            raise ValueError("finetune.with_context trains on retrieved chunks: it needs rag (rag.index, rag.docs)")
        if self.rag is not None and self.rag.overlap_tokens >= self.rag.chunk_tokens:
            raise ValueError(f"rag.overlap_tokens ({self.rag.overlap_tokens}) must be below rag.chunk_tokens "
                             f"({self.rag.chunk_tokens})")
        return self
