"""Typed configs for every stage: YAML files plus dotted command-line overrides.

Each field's docstring is its documentation: `honing <stage> --help` prints it, so nothing is
documented twice. This module must not import torch (the CLI's help has to stay fast).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from honing.errors import ConfigError


class StrictModel(BaseModel):
    """A config section: unknown keys are errors; attribute docstrings become field docs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


# --------------------------------------------------------------------------- models


class ScratchModelConfig(StrictModel):
    """A llama-style decoder built from these numbers and trained from random weights."""

    num_layers: int = Field(4, ge=1)
    """Number of transformer blocks."""
    hidden_size: int = Field(256, ge=8)
    """Width of the residual stream."""
    num_heads: int = Field(4, ge=1)
    """Attention heads (hidden_size must divide by it)."""
    num_kv_heads: int | None = Field(None, ge=1)
    """Key/value heads for grouped-query attention; null means num_heads (plain multi-head)."""
    intermediate_size: int | None = Field(None, ge=8)
    """Width of the MLP; null means about 8/3 × hidden_size rounded up to a multiple of 64."""
    vocab_size: int = Field(8192, ge=256)
    """Vocabulary size of the BPE tokenizer trained on the corpus (ignored with model.tokenizer)."""
    max_position_embeddings: int = Field(2048, ge=16)
    """Longest sequence the rotary embeddings are set up for."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the output head."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            )
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        return self


class ModelConfig(StrictModel):
    """Which model to start from. With neither `path` nor `from_config`, the embedded default
    (SmolLM2-135M-Instruct) is used."""

    path: str | None = None
    """A Hugging Face model directory, a `.gguf` file, or a run directory of an earlier stage."""
    from_config: ScratchModelConfig | None = None
    """Build a new model from these numbers instead of loading one (pre-training)."""
    tokenizer: str | None = None
    """Tokenizer directory; default: the model's own, or (from_config) a BPE trained on the corpus."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype on load: auto is float32 on CPU and bfloat16 on GPUs that support it."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel passed to transformers."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path and self.from_config:
            raise ValueError("set either model.path or model.from_config, not both")
        return self


class AdapterConfig(StrictModel):
    """How the model is trained: all weights, or a low-rank adapter."""

    method: Literal["full", "lora", "dora", "qlora"] = "lora"
    """full: every weight; lora/dora: a PEFT adapter; qlora: LoRA on a 4-bit base (CUDA + bitsandbytes)."""
    rank: int = Field(16, ge=1)
    """LoRA rank r."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator: the update is scaled by alpha / rank."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (e.g. [q_proj, v_proj]) or all-linear (every linear layer but the head)."""


# --------------------------------------------------------------------------- data


class DataConfig(StrictModel):
    """Where the data comes from and how it becomes token sequences."""

    train: str | None = None
    """Training data: a .jsonl/.json/.csv/.parquet/.txt file, a directory of them, or a `datasets` save_to_disk directory."""
    validation: str | None = None
    """Validation data; null splits `validation_split` off the training data, deterministically."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt", "preference"] = "auto"
    """Record format: text {text}, instruction {instruction,input,output} (Alpaca), chat {messages},
    sharegpt {conversations}, preference {prompt,chosen,rejected}; auto detects it from the first record."""
    text_field: str = "text"
    """Field holding the document in text data (not used for .txt files)."""
    validation_split: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of the training records held out for validation when no validation file is given."""
    split_seed: int = 0
    """Seed of the train/validation split (independent of the training seed)."""
    max_length: int = Field(1024, ge=8)
    """Longest token sequence; longer examples are truncated (and counted), or rejected if no target token survives."""
    packing: bool = False
    """Pack several examples into each row of max_length tokens (position ids restart per example, no attention across)."""
    train_on: Literal["all_assistant", "last_assistant", "everything"] = "all_assistant"
    """Which tokens the loss covers: every assistant turn with its end-of-turn token, only the last one, or all tokens."""
    system_prompt: str | None = None
    """System message added to conversations that have none."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """fail: stop at the first invalid record (file:line); skip: write it to rejects.jsonl in the run directory and go on."""
    cache_dir: str | None = None
    """Where tokenised data is cached; default ~/.cache/honing/data (HONING_CACHE overrides)."""


# --------------------------------------------------------------------------- training


class TrainConfig(StrictModel):
    """The optimisation: schedule, batch, checkpoints, validation."""

    lr: float = Field(2e-4, gt=0)
    """Peak learning rate."""
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    """Final learning rate as a share of lr (linear and cosine schedules)."""
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = Field(0, ge=0)
    """Optimiser steps of linear warm-up from 0 to lr."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW decoupled weight decay, applied to matrices only (not biases, norms or embeddings)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (fractions allowed); max_steps wins if set."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimiser steps."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences (or packed rows) per forward pass on each process."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimiser step; the loss is normalised over all their target tokens."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this; null disables clipping."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast where the hardware does bf16 natively (recent GPUs; CPUs with AVX-512 BF16 or AMX), fp32 elsewhere."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: ddp (each process holds the whole model) or fsdp (FSDP2: weights, gradients and
    optimiser state sharded across processes; checkpoints are sharded and resume on any number of processes)."""
    seed: int = 42
    """Seed for weights created here, data order and dropout."""
    eval_every: int | None = Field(50, ge=1)
    """Validate every N optimiser steps (and at the end); null validates only at the end."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many validations without a better validation loss; the best checkpoint is kept."""
    save_every: int | None = Field(100, ge=1)
    """Write a checkpoint every N optimiser steps; null writes only the final model."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints kept (the best one by validation loss is kept in addition)."""
    on_nan: Literal["stop", "skip"] = "stop"
    """On a NaN or infinite loss: stop cleanly, or skip that optimiser step."""
    log_every: int = Field(1, ge=1)
    """Write metrics every N optimiser steps."""
    compile: bool = False
    """torch.compile each transformer block (regional compilation: one compiled graph reused by every
    block, so compiling takes seconds, not minutes). Pays off on GPUs for long runs; the first steps
    are slower while it compiles. Needs a C++ compiler on CPU."""
    prefetch: Literal["auto", "on", "off"] = "auto"
    """Build the next step's batches in a background thread while this step computes (pinned memory,
    asynchronous copies). auto: on with CUDA, off on CPU, where the cores are busy with the step."""
    loss_kernel: Literal["auto", "plain", "chunked", "liger"] = "auto"
    """How the output head and loss are computed on target tokens: plain (whole tokens × vocab logits),
    chunked (never all logits at once: a fraction of the memory, about as fast), liger (Liger's
    fused kernel; CUDA and liger-kernel); auto: liger where available, else chunked."""


class OutputConfig(StrictModel):
    """Where the run goes and what is saved."""

    dir: str | None = None
    """Run directory; default runs/<stage>-<date>-<time>."""
    save: Literal["adapter", "merged", "both"] = "adapter"
    """With an adapter: save the PEFT adapter, the merged model, or both (full fine-tuning always saves the model)."""
    tensorboard: bool = True
    """Also write TensorBoard logs when the tensorboard package is installed."""


# --------------------------------------------------------------------------- stages


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
        if self.model.from_config is not None:
            raise ValueError("sft starts from a trained model: set model.path (or nothing, for the default), not model.from_config")
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
        return self


class SamplingConfig(StrictModel):
    """How tokens are drawn during generation."""

    max_new_tokens: int = Field(256, ge=1)
    """Most tokens generated per answer."""
    temperature: float = Field(0.0, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens; 0 disables."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """Penalty on tokens already present (1.0 disables)."""
    seed: int = 0
    """Seed for sampling."""


class GenerateConfig(StrictModel):
    """`honing generate`: answer every prompt of a file and write the answers to a file."""

    model: ModelConfig = ModelConfig()
    adapter: str | None = None
    """A PEFT adapter directory to apply on top of the model."""
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
            raise ValueError("prompts and output are both required (e.g. prompts=in.jsonl output=out.jsonl)")
        return self


class ChatConfig(StrictModel):
    """`honing chat`: talk to a model in the terminal."""

    model: ModelConfig = ModelConfig()
    adapter: str | None = None
    """A PEFT adapter directory to apply on top of the model."""
    system_prompt: str | None = None
    """System message at the start of the conversation."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9)


class MergeConfig(StrictModel):
    """`honing merge`: fold a LoRA/DoRA adapter into its base model and save a plain model."""

    model: ModelConfig = ModelConfig()
    adapter: str | None = None
    """The PEFT adapter directory (a run's `adapter/` folder, or the run directory itself)."""
    output: str | None = None
    """Directory for the merged Hugging Face model."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype of the saved weights."""

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        if not self.adapter or not self.output:
            raise ValueError("adapter and output are both required (e.g. adapter=runs/x/adapter output=merged/)")
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
    general_examples: int = Field(48, ge=0)
    """Prompts of the bundled general-capability set (builtin:general) scored before and after, to show the
    fine-tune did not make the model worse at the rest; 0 skips it."""


# --------------------------------------------------------------------------- alignment


class PreferenceObjectiveConfig(StrictModel):
    """The preference objective."""

    loss: Literal["sigmoid", "ipo", "simpo", "orpo"] = "sigmoid"
    """sigmoid: DPO (Rafailov et al. 2023); ipo: IPO (Azar et al. 2023); simpo: SimPO, reference-free with
    length-normalised log-probs (Meng et al. 2024); orpo: ORPO, SFT loss plus an odds-ratio term, reference-free."""
    beta: float = Field(0.1, gt=0)
    """Strength of the pull toward the reference (DPO, IPO), or the reward scale (SimPO)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """DPO only: the share of pairs assumed mislabelled (conservative DPO)."""
    simpo_gamma: float = Field(0.5, ge=0.0)
    """SimPO's target reward margin."""
    orpo_lambda: float = Field(0.1, gt=0)
    """ORPO's weight on the odds-ratio term."""


class DPOConfig(StrictModel):
    """`honing dpo`: align a model with preference pairs (prompt, chosen, rejected) by DPO, IPO, SimPO or ORPO.
    With LoRA the reference is the starting model itself with the adapter switched off (no second copy)."""

    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig()
    data: DataConfig = DataConfig(format="preference", max_length=512)
    train: TrainConfig = TrainConfig(lr=5e-5, micro_batch_size=2, eval_every=25)
    preference: PreferenceObjectiveConfig = PreferenceObjectiveConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if not self.data.train:
            raise ValueError("data.train is required: a file of prompt/chosen/rejected records")
        if self.data.format not in ("preference", "auto"):
            raise ValueError(f"dpo trains on preference data (prompt, chosen, rejected), not data.format={self.data.format}")
        if self.data.packing:
            raise ValueError("dpo does not pack: each pair is scored as two padded rows (set data.packing=false)")
        if self.model.from_config is not None:
            raise ValueError("dpo starts from a trained model: set model.path (or nothing, for the default)")
        if self.adapter.method == "full" and self.preference.loss in ("sigmoid", "ipo"):
            raise ValueError("full fine-tuning with DPO/IPO needs a second frozen model as the reference, which honing "
                             "does not load yet: use adapter.method=lora (the reference is the adapter switched off), "
                             "or a reference-free loss (preference.loss=simpo or orpo)")
        return self


# --------------------------------------------------------------------------- evaluation

TaskKind = Literal["perplexity", "generation", "multiple_choice", "classification", "pairwise", "rubric", "lm_eval"]


class EvalModelConfig(StrictModel):
    """One model to evaluate."""

    name: str = Field(min_length=1)
    """Short name used in the report and in overrides (models.<name>.adapter=...)."""
    path: str | None = None
    """A Hugging Face directory, a .gguf file or a run directory (its saved model or adapter); null: the embedded default."""
    adapter: str | None = None
    """A PEFT adapter directory (or a run directory that saved one) applied on top of path."""
    role: Literal["base", "candidate"] = "candidate"
    """base: the reference candidates are compared with (regressions, differences, pairwise judging)."""


class EvalTaskConfig(StrictModel):
    """One task: a data file and how answers are scored."""

    name: str = Field(min_length=1)
    """Short name used in the report."""
    kind: TaskKind = "generation"
    """perplexity: loss on held-out text or chat data (masked tokens excluded); generation: answers scored by
    metrics; multiple_choice: the choice with the highest log-likelihood; classification: a label per example;
    pairwise: a judge compares each candidate's answer with the base's, twice with the order swapped;
    rubric: a judge grades each answer against a rubric; lm_eval: a task of lm-evaluation-harness (the lm-eval extra)."""
    data: str | None = None
    """The examples: a .jsonl/.json/.csv/.parquet file, or builtin:quickstart / builtin:general (bundled)."""
    metrics: list[str] = []
    """generation: metric names (exact_match, exact_match_normalized, token_f1, rouge_l, bleu, chrf, regex_match,
    json_valid, json_schema) or module:function; empty: the kind's defaults."""
    primary: str | None = None
    """The metric that gates and orders the report; default: the first metric."""
    regression: bool = False
    """A general-capability task: a candidate may not score lower than the base by more than gate.regression_tolerance."""
    min: dict[str, float] = {}
    """Thresholds every candidate (or a model evaluated alone) must reach: metric -> lowest allowed score
    (highest allowed for loss and perplexity); checked with --gate."""
    max_examples: int | None = Field(None, ge=1)
    """Use only the first N examples."""
    labels: list[str] | None = None
    """classification: the label set (default: every label in the data)."""
    classify_by: Literal["generation", "loglikelihood"] = "generation"
    """classification: map a generated answer to a label, or pick the label with the highest log-likelihood."""
    chat_template: bool | None = None
    """Wrap prompts in the model's chat template; default true, except multiple_choice (plain text, as lm-evaluation-harness)."""
    system_prompt: str | None = None
    """System message for prompts that have none."""
    max_new_tokens: int | None = Field(None, ge=1)
    """Longest answer for this task (default: sampling.max_new_tokens)."""
    rubric: str | None = None
    """rubric: what a good answer does; the judge grades 1-10 against it (default: a general helpfulness rubric)."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt"] = "auto"
    """perplexity: the data format (auto detects it); the loss covers assistant turns of chat data, all of text."""
    max_length: int = Field(1024, ge=8)
    """Longest token sequence: multiple-choice and classification contexts are cut from the left, perplexity
    records from the right; either way the cuts are counted and reported."""
    lm_eval_task: str | None = None
    """lm_eval: the harness task name (e.g. one defined by a YAML file in include_path)."""
    include_path: str | None = None
    """lm_eval: a directory of the harness's task YAML files (local tasks; nothing is downloaded)."""
    num_fewshot: int | None = Field(None, ge=0)
    """lm_eval: few-shot examples per prompt (the task's default when null)."""

    @model_validator(mode="after")
    def _check(self) -> EvalTaskConfig:
        if self.kind == "lm_eval":
            if not self.lm_eval_task:
                raise ValueError(f"task {self.name}: kind lm_eval needs lm_eval_task (the harness's task name)")
        elif not self.data:
            raise ValueError(f"task {self.name}: data is required (a file, or builtin:quickstart / builtin:general)")
        return self


class JudgeConfig(StrictModel):
    """The model that judges answers: a local model, or an OpenAI-compatible HTTP endpoint."""

    path: str | None = None
    """A local judge model (directory, .gguf or run directory); null with no endpoint: the embedded default."""
    adapter: str | None = None
    """A PEFT adapter for the local judge."""
    endpoint: str | None = None
    """Base URL of an OpenAI-compatible API (e.g. http://localhost:8000/v1); answers are sent there and nowhere else."""
    endpoint_model: str | None = None
    """The model name the endpoint expects."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (read at run time, never written to the record)."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest verdict."""
    timeout_s: float = Field(60.0, gt=0)
    """HTTP timeout per request."""


class GateConfig(StrictModel):
    """When `honing eval --gate` fails (exit code 3)."""

    enabled: bool = False
    """Check the gate (the --gate flag sets this)."""
    regression_tolerance: float = Field(0.02, ge=0.0)
    """Largest drop of a regression task's primary score (candidate − base, as a share: 0.02 = 2 points) that still passes."""


class EvalConfig(StrictModel):
    """`honing eval`: every model on every task, with bootstrap intervals, one report, and an optional gate."""

    models: list[EvalModelConfig] = [EvalModelConfig(name="base", role="base")]
    """The models; the one with role base (else the first) is the reference."""
    tasks: list[EvalTaskConfig] = [
        EvalTaskConfig(name="quickstart", data="builtin:quickstart", primary="honing.quickstart.task:field_accuracy",
                       metrics=["exact_match", "honing.quickstart.task:field_accuracy", "honing.quickstart.task:format_valid"]),
        EvalTaskConfig(name="general", data="builtin:general", metrics=["regex_match"], regression=True),
    ]
    """The tasks."""
    judge: JudgeConfig | None = None
    """Needed by pairwise and rubric tasks."""
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=128)
    """How answers are generated (greedy by default, so scores are reproducible)."""
    batch_size: int = Field(8, ge=1)
    """Prompts (or sequences) processed together."""
    gate: GateConfig = GateConfig()
    resamples: int = Field(2000, ge=100)
    """Bootstrap resamples per interval."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the intervals."""
    cache: bool = True
    """Reuse answers computed before for the same model, task settings and example (~/.cache/honing/evals)."""
    report_examples: int = Field(10, ge=0)
    """Examples per task shown in the report where the models' scores differ."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for what, names in (("model", [m.name for m in self.models]), ("task", [t.name for t in self.tasks])):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(duplicated)}")
        if not self.models:
            raise ValueError("give at least one model")
        if sum(m.role == "base" for m in self.models) > 1:
            raise ValueError("at most one model may have role: base")
        judged = [t.name for t in self.tasks if t.kind in ("pairwise", "rubric")]
        if judged and self.judge is None:
            raise ValueError(f"tasks {', '.join(judged)} need a judge (judge.path, or judge.endpoint and judge.endpoint_model)")
        if any(t.kind == "pairwise" for t in self.tasks) and len(self.models) < 2:
            raise ValueError("a pairwise task compares candidates with the base: give at least two models")
        if self.judge and self.judge.endpoint and not self.judge.endpoint_model:
            raise ValueError("judge.endpoint needs judge.endpoint_model (the model name the endpoint serves)")
        return self


STAGES: dict[str, type[StrictModel]] = {
    "pretrain": PretrainConfig,
    "sft": SFTConfig,
    "generate": GenerateConfig,
    "chat": ChatConfig,
    "merge": MergeConfig,
    "inspect": InspectConfig,
    "quickstart": QuickstartConfig,
    "eval": EvalConfig,
    "dpo": DPOConfig,
}


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 2e-4). The value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.lr=2e-4)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. a prompt with quotes and colons): take it as the string it is
    if isinstance(value, str):
        value = _maybe_number(value)
    return key.split("."), value


def _maybe_number(value: str) -> Any:
    # YAML 1.1 reads "2e-4" as a string; people mean a number.
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value


def load_config(cls: type[StrictModel], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Build a stage config from an optional YAML file and `a.b=value` overrides (which win)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(loaded).__name__}")
        data = loaded
    for text in overrides:
        keys, value = parse_override(text)
        field = cls.model_fields.get(keys[0])
        if len(keys) > 1 and keys[0] not in data and field is not None and isinstance(field.default, list):
            # `models.base.adapter=x` edits the default list, so the list must be there to edit.
            data[keys[0]] = [item.model_dump(exclude_unset=True) if isinstance(item, BaseModel) else item
                             for item in field.default]
        _set_path(data, keys, value, text)
    data = _merge_defaults(cls, data)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


def _set_path(data: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    """Set data[k1][k2]... = value. In a list, a key is an index (`models.1.adapter`) or the
    `name` of an item (`models.tuned.adapter`)."""
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            index = _list_index(node, key, text)
            if last:
                node[index] = value
                return
            if not isinstance(node[index], dict):
                node[index] = {}
            node = node[index]
            continue
        if last:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, (dict, list)):
            child = {}
            node[key] = child
        node = child


def _list_index(items: list[Any], key: str, text: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(items) <= index < len(items):
            return index % len(items)
        if index == len(items):  # one past the end adds an item: models.1.name=tuned models.1.adapter=...
            items.append({})
            return index
        raise ConfigError(f"override {text!r}: index {index} is out of range (the list has {len(items)} items; "
                          f"index {len(items)} adds one)")
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if key in names:
        return names.index(key)
    raise ConfigError(f"override {text!r}: no item named {key!r} in the list (names: {', '.join(map(str, names)) or 'none'})")


def _merge_defaults(cls: type[StrictModel], data: dict[str, Any]) -> dict[str, Any]:
    """Overlay user keys onto a stage's own section defaults (e.g. pretrain's data.packing=true),
    so that giving `data: {train: x}` keeps the stage's other data defaults."""
    defaults: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if isinstance(field.default, BaseModel):
            defaults[name] = field.default.model_dump(exclude_unset=True)
    return _deep_merge(defaults, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(err: ValidationError, cls: type[StrictModel], source: str) -> str:
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(cls, loc[:-1])) or "(none)"
            lines.append(f"{key}: unknown key; allowed here: {allowed}")
        else:
            given = item.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}{shown}" if key else msg)
    head = f"invalid config from {source}: " if len(lines) == 1 else f"invalid config from {source}:\n  "
    return head + "\n  ".join(lines)


def _allowed_keys(cls: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return []
        model = _section_model(field.annotation)
    return list(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _section_model(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None` or `Optional[X]`, else None."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if _is_model(arg):
            return arg
    return None


# --------------------------------------------------------------------------- help


def describe_fields(cls: type[BaseModel], prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, doc) for every leaf field, recursing into sections."""
    rows: list[tuple[str, str, str, str]] = []
    if defaults is None:
        try:
            defaults = cls()
        except ValidationError:
            defaults = None
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_model(field.annotation)
        current = getattr(defaults, name, None) if defaults is not None else field.default
        if section is not None and (current is not None or field.annotation is section):
            rows.extend(describe_fields(section, key + ".", current))
            continue
        rows.append((key, _type_name(field.annotation), _default_text(current), (field.description or "").strip()))
    return rows


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if _section_model(annotation) is not None:
        return "section"
    text = str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", text) if origin is None else text


def _default_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "{...}"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (what the run directory keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
