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
    precompute_reference: bool | None = None
    """DPO/IPO: score every train and validation pair with the starting model once, before training (eval
    mode), save the scores in the run directory (reference_logps.safetensors, its hash in run.json; --resume
    reloads them) and train against them: no reference pass per step, no second copy of the model.
    false: with an adapter the reference is the adapter switched off at each step; with full fine-tuning a
    second, frozen copy of the starting model is loaded. null: true with adapter.method=full, else false."""


class DPOConfig(StrictModel):
    """`honing dpo`: align a model with preference pairs (prompt, chosen, rejected) by DPO, IPO, SimPO or ORPO.
    With LoRA the reference is the starting model itself with the adapter switched off (no second copy); with
    full fine-tuning its scores are precomputed before the first update (preference.precompute_reference)."""

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
        if self.preference.precompute_reference and self.preference.loss in ("simpo", "orpo"):
            raise ValueError(f"preference.loss={self.preference.loss} has no reference model: "
                             "preference.precompute_reference applies to sigmoid (DPO) and ipo only")
        return self


class RewardObjectiveConfig(StrictModel):
    """The Bradley–Terry objective: −log σ(s_chosen − s_rejected − margin) per pair."""

    margin: float = 0.0
    """A margin every pair must clear (0: plain Bradley–Terry); added to margin_field's value when both are set."""
    margin_field: str | None = None
    """A record key holding a per-pair margin (e.g. the gap between two ratings, as in Llama 2's reward
    models); a record without a number there is a bad record (data.on_bad_record)."""


class RewardConfig(StrictModel):
    """`honing reward`: train a reward model (the model's backbone plus a scalar head read at the last real
    token) on preference pairs with the Bradley–Terry loss. The head is always trained; adapter.method picks
    how the backbone is (full, or a LoRA adapter). Saves reward_model/ in the run directory, loadable by
    `honing score`, the RL stage and `load_reward_model` (output.save does not apply)."""

    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig()
    data: DataConfig = DataConfig(format="preference", max_length=512)
    train: TrainConfig = TrainConfig(lr=1e-4, micro_batch_size=4, eval_every=25)
    reward: RewardObjectiveConfig = RewardObjectiveConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if not self.data.train:
            raise ValueError("data.train is required: a file of prompt/chosen/rejected records")
        if self.data.format not in ("preference", "auto"):
            raise ValueError(f"reward trains on preference data (prompt, chosen, rejected), not data.format={self.data.format}")
        if self.data.packing:
            raise ValueError("reward does not pack: each pair is scored as two padded rows (set data.packing=false)")
        if self.model.from_config is not None:
            raise ValueError("reward starts from a trained model: set model.path (or nothing, for the default)")
        if self.train.distributed == "fsdp":
            raise ValueError("reward trains with train.distributed=ddp (each process holds the whole model); fsdp is not supported yet")
        if self.output.save != "adapter":
            raise ValueError("output.save does not apply to reward: it always saves reward_model/ (the backbone, "
                             "or its adapter, plus the head)")
        return self


class ScoreConfig(StrictModel):
    """`honing score`: score answers with a reward model trained by `honing reward`, rendered exactly as in its
    training; writes each input record plus `score`."""

    reward_model: str | None = None
    """The reward model: a `honing reward` run directory, or its reward_model/ folder."""
    base_model: str | None = None
    """The base model of a LoRA reward model (an HF directory, a .gguf or a run directory); default: the base it
    recorded, or the embedded default when that directory is gone. Not used by a fully trained reward model."""
    input: str | None = None
    """Records to score (.jsonl/.json/.csv/.parquet): a `honing generate` output (each record plus `response`),
    prompt/response records, or messages records whose last turn is the assistant answer."""
    output: str | None = None
    """Output .jsonl: each input record plus `score` (and `baseline_score` with baseline)."""
    baseline: str | None = None
    """A second file of answers to the same prompts in the same order (e.g. the starting model's, where input
    holds the tuned model's): each record is scored too, and the summary gives the mean of each and the win
    rate of input over baseline (ties count half)."""
    system_prompt: str | None = None
    """System message added to prompts that have none; use the reward run's data.system_prompt."""
    batch_size: int = Field(8, ge=1)
    """Sequences scored together."""
    max_length: int = Field(1024, ge=8)
    """Longest prompt + answer in tokens; longer answers are cut there and scored mid-answer (counted in the log)."""

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        if not self.reward_model or not self.input or not self.output:
            raise ValueError("reward_model, input and output are all required "
                             "(e.g. reward_model=runs/reward-x input=answers.jsonl output=scored.jsonl)")
        return self


class LabelSourceConfig(StrictModel):
    """Where one of the two answers to each prompt comes from: a file of answers, or a model that writes them."""

    name: str | None = None
    """How the answers are named in the preference file (source_chosen, source_rejected); default: the
    responses file, or the model path (+ adapter, + seed when both sides sample the same model)."""
    responses: str | None = None
    """A `honing generate` output (.jsonl: each prompt record plus `response`), line i answering prompt i.
    null: generate the answers with `model` (+ `adapter`)."""
    model: ModelConfig = ModelConfig()
    """The model that answers when `responses` is null (default: the embedded model)."""
    adapter: str | None = None
    """A PEFT adapter directory applied on top of `model`."""
    seed: int | None = None
    """Sampling seed of this side; null: sampling.seed for first, sampling.seed + 1 for second (so one model
    sampled twice gives two different answers)."""


class LabelConfig(StrictModel):
    """`honing label`: show a prompt and two answers, take a key (a, b, t for tie, s to skip, u to undo, q to quit),
    and append each preference to a {prompt, chosen, rejected} file; a rerun resumes at the first unlabelled item."""

    prompts: str | None = None
    """Prompts: .jsonl with `prompt`, `messages` or `instruction` per line, or .txt with one per line (as for
    `honing generate`); null when both sides are responses files, whose records hold the prompts."""
    first: LabelSourceConfig = LabelSourceConfig()
    """One source of answers."""
    second: LabelSourceConfig = LabelSourceConfig()
    """The other source of answers (which of the two is shown as A is drawn per item)."""
    output: str | None = None
    """The preference file (.jsonl), appended to: prompt, chosen, rejected, source_chosen, source_rejected,
    labeller, labelled_at, item. Every decision (ties and skips too) goes to <output>.decisions.jsonl, and
    generated answers are kept in <output>.responses.json, so a rerun neither asks twice nor regenerates."""
    labeller: str | None = None
    """Who is labelling, recorded on every line; default: the login name."""
    seed: int = 0
    """Seed of the per-item draw of which source is shown as A (recorded with each decision)."""
    system_prompt: str | None = None
    """System message added to prompts that have none, when generating (it is part of the written prompt)."""
    chat_template: bool = True
    """Wrap prompts in the model's chat template when generating (false: plain text completion)."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated together (left-padded)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9)
    """How generated answers are sampled (both sides; each side's seed is its own)."""

    @model_validator(mode="after")
    def _check(self) -> LabelConfig:
        if not self.output:
            raise ValueError("output is required: the preference .jsonl to append to (e.g. output=prefs.jsonl)")
        if not self.output.endswith(".jsonl"):
            raise ValueError(f"output must be a .jsonl file, not {self.output}")
        if not self.prompts and not (self.first.responses and self.second.responses):
            raise ValueError("prompts is required unless both first.responses and second.responses are given")
        if self.first.name and self.first.name == self.second.name:
            raise ValueError(f"first.name and second.name are both {self.first.name!r}: give the two sources different names")
        same_model = (not self.first.responses and not self.second.responses and self.first.model == self.second.model
                      and self.first.adapter == self.second.adapter)
        if same_model and self.sampling.temperature == 0:
            raise ValueError("first and second are the same model, and greedy decoding (sampling.temperature=0) would "
                             "give it the same answer twice: set sampling.temperature > 0, or a different model or adapter")
        if same_model and self.first.seed is not None and self.first.seed == self.second.seed:
            raise ValueError("first and second sample the same model with the same seed: give them different seeds")
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


# --------------------------------------------------------------------------- online RL


class RLDataConfig(StrictModel):
    """The prompts RL samples from. Each record has a prompt (`prompt`, `messages` or `instruction`)
    and whatever fields its verifiers read (e.g. `answer`)."""

    prompts: str | None = None
    """A .jsonl/.json/.csv/.parquet file or a .txt file of prompts, or builtin:arithmetic (a procedurally
    generated arithmetic task with `answer` fields; see builtin_examples)."""
    validation: str | None = None
    """Held-out prompts for validation; null splits `validation_split` off the prompts, deterministically."""
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the prompts held out when no validation file is given."""
    split_seed: int = 0
    """Seed of the split and of builtin prompt generation."""
    builtin_examples: int = Field(600, ge=10)
    """How many prompts builtin:arithmetic generates."""
    max_prompt_tokens: int = Field(256, ge=1)
    """Longest prompt; longer ones are rejected (a truncated prompt is a different question), not cut."""
    system_prompt: str | None = None
    """System message added to prompts that have none."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """fail: stop at the first invalid record (file:line); skip: write it to rejects.jsonl and go on."""


class RolloutConfig(StrictModel):
    """How completions are sampled. The log-probabilities in the loss apply the same temperature,
    top-k and top-p as the sampler, so the ratio compares like with like."""

    prompts_per_step: int = Field(8, ge=1)
    """Prompts per RL step."""
    group_size: int = Field(8, ge=1)
    """Completions sampled per prompt (GRPO compares them with each other; PPO usually takes 1)."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest completion; one that reaches it without a stop token is 'truncated'."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature (RL must sample: 0 is not allowed)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens; 0 disables."""
    batch_size: int = Field(32, ge=1)
    """Sequences generated together."""
    eval_max_new_tokens: int | None = Field(None, ge=1)
    """Longest answer in validation (greedy); default max_new_tokens."""


class RewardSpec(StrictModel):
    """One reward term; the reward of a completion is the weighted sum of its terms."""

    kind: Literal["exact_match", "numeric", "regex", "json_schema", "length_penalty", "function", "reward_model", "judge"]
    """exact_match: 1 if the completion (stripped, case-folded) equals the record's `field`; numeric: 1 if the
    last number in the completion equals the record's `field` within `tolerance`; regex: 1 if `pattern` matches;
    json_schema: 1 if the completion is JSON valid against `schema`; length_penalty: −max(0, tokens − max_tokens)
    / max_tokens; function: a `module:function(prompt, completion, record) -> float`; reward_model: the score of a
    model trained by `honing reward`; judge: a judge model's 1–10 grade against `rubric`, scaled to [0, 1]."""
    name: str | None = None
    """Name in logs (default: kind)."""
    weight: float = 1.0
    """Weight in the sum."""
    field: str = "answer"
    """exact_match, numeric: the record field holding the expected answer."""
    tolerance: float = Field(1e-6, ge=0.0)
    """numeric: largest absolute difference that still counts as equal."""
    pattern: str | None = None
    """regex: a Python regular expression searched in the completion."""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """json_schema: the JSON schema (inline)."""
    max_tokens: int | None = Field(None, ge=1)
    """length_penalty: the length above which the penalty starts."""
    function: str | None = None
    """function: `package.module:function`, called once per completion."""
    path: str | None = None
    """reward_model: the reward model directory (a `honing reward` run or its saved model)."""
    base_model: str | None = None
    """reward_model: the base model of a LoRA reward model, when not the one it recorded."""
    judge: JudgeConfig | None = None
    """judge: the judge model (local or endpoint)."""
    rubric: str | None = None
    """judge: what a good answer does (default: a general helpfulness rubric)."""

    @model_validator(mode="after")
    def _check(self) -> RewardSpec:
        needs = {"regex": ("pattern", self.pattern), "json_schema": ("schema", self.schema_),
                 "length_penalty": ("max_tokens", self.max_tokens), "function": ("function", self.function),
                 "reward_model": ("path", self.path), "judge": ("judge", self.judge)}
        if self.kind in needs and needs[self.kind][1] is None:
            raise ValueError(f"a {self.kind} reward needs `{needs[self.kind][0]}`")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function must be module:function, not {self.function!r}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class RLObjectiveConfig(StrictModel):
    """The algorithm and its knobs."""

    algo: Literal["grpo", "ppo"] = "grpo"
    """grpo: advantages relative to the other completions of the same prompt (no value model; DeepSeekMath);
    ppo: a value head on the policy and GAE over tokens (InstructGPT)."""
    steps: int = Field(50, ge=1)
    """RL steps: each samples prompts_per_step × group_size completions, then optimises on them."""
    epochs: int = Field(1, ge=1)
    """Passes over each step's rollouts (1: on-policy; more reuses samples, with the ratio clipped)."""
    minibatches: int = Field(1, ge=1)
    """Optimiser steps per pass: the rollouts are split into this many shuffled minibatches."""
    clip_eps: float = Field(0.2, gt=0.0)
    """PPO-style clipping of the probability ratio to [1 − clip_eps, 1 + clip_eps_high]."""
    clip_eps_high: float | None = Field(None, gt=0.0)
    """Upper clip (DAPO's clip-higher); default clip_eps."""
    kl_beta: float = Field(0.04, ge=0.0)
    """Weight of the KL penalty to the reference (the starting model); 0 turns it off (and skips the reference pass)."""
    kl_estimator: Literal["k1", "k2", "k3"] | None = None
    """k1 = log p − log q; k2 = ½(log p − log q)²; k3 = (q/p − 1) − log(q/p). Default: k3 in the loss, k1 in the reward."""
    kl_placement: Literal["reward", "loss"] | None = None
    """reward: β·KL per token is subtracted from the reward before advantages (PPO's choice, the default for ppo);
    loss: β·KL is added to the loss and differentiated (GRPO's choice, the default for grpo)."""
    length_norm: Literal["sequence", "token", "constant"] | None = None
    """How token losses are averaged. sequence: mean over each completion's tokens, then over completions (GRPO's
    paper; short completions weigh more per token); token: mean over all tokens of the step (DAPO; the default
    for ppo); constant: sum over each completion divided by max_new_tokens (Dr. GRPO; no length bias). Default:
    sequence for grpo."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo: divide advantages by the reward spread of the group, of the whole step, or not at all (Dr. GRPO)."""
    normalize_rewards: bool = False
    """Whiten scores with running mean and standard deviation across steps before they become rewards (ppo)."""
    reward_clip: float | None = Field(None, gt=0.0)
    """Clip each (normalised) score to [−reward_clip, reward_clip]."""
    missing_eos_penalty: float = Field(0.0, ge=0.0)
    """Subtracted from the reward of a completion that reached max_new_tokens without a stop token."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """ppo: discount."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """ppo: GAE λ."""
    vf_coef: float = Field(0.1, ge=0.0)
    """ppo: weight of the value loss."""
    value_clip: float | None = Field(0.2, gt=0.0)
    """ppo: clip the value update to old value ± value_clip; null: no clipping."""
    whiten_advantages: bool | None = None
    """Normalise advantages over the step to mean 0, std 1. Default: true for ppo, false for grpo."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (0 logs entropy without optimising it)."""
    eval_every: int | None = Field(10, ge=1)
    """Validate (greedy answers to the held-out prompts, scored by the same rewards) every N steps, first and last."""
    eval_prompts: int | None = Field(100, ge=1)
    """Validate on at most this many held-out prompts."""
    sample_every: int | None = Field(5, ge=1)
    """Append the step's first prompts and completions to samples.jsonl every N steps."""

    @property
    def placement(self) -> str:
        return self.kl_placement or ("loss" if self.algo == "grpo" else "reward")

    @property
    def estimator(self) -> str:
        return self.kl_estimator or ("k3" if self.placement == "loss" else "k1")

    @property
    def normalisation(self) -> str:
        return self.length_norm or ("sequence" if self.algo == "grpo" else "token")

    @property
    def whiten(self) -> bool:
        return self.whiten_advantages if self.whiten_advantages is not None else self.algo == "ppo"


class RLConfig(StrictModel):
    """`honing rl`: online reinforcement learning (GRPO or PPO) from a prompt file and rewards
    (verifiers, a reward model, a judge, or a weighted sum of them)."""

    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig(dropout=0.0)
    data: RLDataConfig = RLDataConfig()
    rollout: RolloutConfig = RolloutConfig()
    rewards: list[RewardSpec] = []
    """The reward terms (weighted sum). At least one."""
    rl: RLObjectiveConfig = RLObjectiveConfig()
    train: TrainConfig = TrainConfig(lr=1e-5, schedule="constant", micro_batch_size=8, save_every=10, precision="fp32")
    """Optimiser, precision, seed, checkpoints (save_every counts RL steps). epochs, max_steps, grad_accum,
    eval_every and early stopping do not apply: see rl.steps, rl.epochs, rl.minibatches and rl.eval_every."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        if not self.data.prompts:
            raise ValueError("data.prompts is required: a prompt file, or builtin:arithmetic")
        if not self.rewards:
            raise ValueError("give at least one reward, e.g. rewards: [{kind: numeric, field: answer}]")
        if self.model.from_config is not None:
            raise ValueError("rl starts from a trained model: set model.path (or nothing, for the default)")
        defaults = type(self).model_fields["train"].default
        unused = [name for name in ("epochs", "max_steps", "grad_accum", "eval_every", "early_stopping_patience")
                  if getattr(self.train, name) != getattr(defaults, name)]
        if unused:
            raise ValueError(f"train.{', train.'.join(unused)} do not apply to rl: the schedule is rl.steps × "
                             "rl.epochs × rl.minibatches optimiser steps, validated every rl.eval_every steps")
        if self.train.distributed != "ddp":
            raise ValueError("rl runs in one process (train.distributed does not apply)")
        if self.rl.algo == "grpo" and self.rollout.group_size < 2:
            raise ValueError("grpo compares completions of the same prompt: rollout.group_size must be at least 2")
        rows = self.rollout.prompts_per_step * self.rollout.group_size
        if rows % self.rl.minibatches:
            raise ValueError(f"the {rows} completions of a step (prompts_per_step × group_size) do not split into "
                             f"rl.minibatches={self.rl.minibatches} equal minibatches")
        return self


# --------------------------------------------------------------------------- red teaming

RedteamMutator = Literal["none", "base64", "rot13", "leetspeak", "spaced", "homoglyph", "zero_width", "reversed",
                         "escalation", "paraphrase", "translate"]


class ChatModelConfig(StrictModel):
    """A model honing talks to: a local model (any honing model source, plus an adapter), or an
    OpenAI-compatible HTTP endpoint. Nothing is sent anywhere but the endpoint configured here."""

    path: str | None = None
    """A local model (HF directory, .gguf or run directory); null with no endpoint: the embedded default."""
    adapter: str | None = None
    """A PEFT adapter (or a run directory that saved one) merged into the local model."""
    endpoint: str | None = None
    """Base URL of an OpenAI-compatible API (e.g. http://localhost:8000/v1); prompts are sent there and nowhere else."""
    endpoint_model: str | None = None
    """The model name the endpoint expects."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (read at run time, never written to the record)."""
    timeout_s: float = Field(120.0, gt=0)
    """HTTP timeout per request."""

    @model_validator(mode="after")
    def _one_source(self) -> ChatModelConfig:
        if self.endpoint and (self.path or self.adapter):
            raise ValueError("set either endpoint or path/adapter, not both")
        if self.endpoint and not self.endpoint_model:
            raise ValueError("endpoint needs endpoint_model (the model name the endpoint serves)")
        return self


class RedteamConfig(StrictModel):
    """`honing redteam`: a probe suite against a model; the attack success rate per category and
    mutator with bootstrap intervals, the over-refusal rate, the held-out split apart; --fail-above gates."""

    target: ChatModelConfig = ChatModelConfig()
    """The model under attack: target.path (+ target.adapter) or target.endpoint + target.endpoint_model."""
    system_prompt: str | None = None
    """The deployment's system message, added to probes that bring none of their own."""
    builtin: bool = True
    """Run the bundled probe library (src/honing/redteam/data/probes/)."""
    probe_files: list[str] = []
    """More probe files (.yaml or .jsonl, same fields as the bundled ones), run with the bundled probes."""
    categories: list[str] | None = None
    """Only these categories (harmful_request, jailbreak, prompt_injection, system_prompt_extraction,
    secret_leak, bias, over_refusal, or your files' own); null: all."""
    splits: list[str] | None = None
    """Only probes with these split tags (train, heldout, ...); null: all, each split reported apart."""
    limit: int | None = Field(None, ge=1)
    """At most this many base probes per category (the first ones of each file, in file order)."""
    mutators: list[RedteamMutator] = ["none", "base64", "leetspeak"]
    """Variants of every mutable probe: none (as written); base64, rot13, leetspeak, spaced, homoglyph, zero_width,
    reversed (encodings and character tricks); escalation (a harmless opening turn, the request as a follow-up);
    paraphrase, translate (rewritten by the attacker model)."""
    translate_language: str = "French"
    """The language the translate mutator asks the attacker for."""
    attempts: int = Field(2, ge=1)
    """Answers sampled per prompt (attempt k samples with seed sampling.seed + k)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=48)
    """How the target samples its answers (refusals, leaks and injected markers show in the first sentences)."""
    batch_size: int = Field(16, ge=1)
    """Prompts generated together by a local target (and the local attacker and judge)."""
    judge: JudgeConfig | None = None
    """A judge model: it grades probes' `judge` detectors, and confirms the rule verdicts of judge_confirms."""
    judge_confirms: list[str] = ["harmful_request", "jailbreak"]
    """With a judge: in these categories an answer the rules call compliant counts as an attack success only
    when the judge also finds it complies (the rubric's score >= judge_threshold); refusals skip the judge."""
    judge_threshold: float = Field(0.5, ge=0.0, le=1.0)
    """Lowest judge score (1-10 scaled to 0-1) that counts as a hit."""
    attacker: ChatModelConfig | None = None
    """The attacker model, for the paraphrase/translate mutators and attacker_rounds (attacker: {} is the embedded model)."""
    attacker_sampling: SamplingConfig = SamplingConfig(temperature=0.9, top_p=0.95, max_new_tokens=160)
    """How the attacker samples."""
    attacker_rounds: int = Field(0, ge=0)
    """Rounds in which the attacker writes new attacks from the ones that worked, which are then run too."""
    attacker_per_success: int = Field(2, ge=1)
    """New attacks written per successful attack and round."""
    attacker_max_seeds: int = Field(16, ge=1)
    """At most this many successful attacks (the most successful first) seed each attacker round."""
    fail_above: float | None = Field(None, ge=0.0, le=1.0)
    """Gate: exit with code 3 when the attack success rate (all attack categories, point estimate) is above this;
    the --fail-above flag sets it."""
    resamples: int = Field(2000, ge=100)
    """Bootstrap resamples per interval."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the intervals."""
    report_examples: int = Field(10, ge=0)
    """Worst examples shown in the report."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> RedteamConfig:
        if not self.builtin and not self.probe_files:
            raise ValueError("no probes: keep builtin=true or give probe_files")
        if not self.mutators:
            raise ValueError("mutators is empty: list at least one, e.g. [none]")
        if self.attempts > 1 and self.sampling.temperature == 0:
            raise ValueError(f"attempts={self.attempts} with greedy decoding (sampling.temperature=0) gives the same "
                             "answer every time: set sampling.temperature above 0, or attempts=1")
        needs_attacker = [m for m in self.mutators if m in ("paraphrase", "translate")]
        if (needs_attacker or self.attacker_rounds) and self.attacker is None:
            what = f"mutators {', '.join(needs_attacker)}" if needs_attacker else "attacker_rounds"
            raise ValueError(f"{what} need an attacker model: set attacker.path or attacker.endpoint "
                             "(attacker: {} uses the embedded model)")
        if self.judge and self.judge.endpoint and not self.judge.endpoint_model:
            raise ValueError("judge.endpoint needs judge.endpoint_model (the model name the endpoint serves)")
        return self


class ConstituteConfig(StrictModel):
    """`honing constitute`: constitutional critique → revision of answers (by default a redteam run's failures),
    written as SFT data and preference pairs, plus AI-labelled pairs from a feedback model (RLAIF)."""

    prompts: str | None = None
    """A `honing redteam` run directory (its failures.jsonl: the attacks that worked and the answers they got), or a
    prompt file (.jsonl/.json/.csv with `messages`, `prompt` or `instruction`, optional `response` to revise; .txt)."""
    splits: list[str] = ["train"]
    """From a redteam run: only failures of probes with these split tags, so held-out probes stay out of training
    data; [] takes every split."""
    model: ChatModelConfig | None = None
    """The model that answers, critiques and revises; null: the redteam run's target, else the embedded default."""
    constitution: str | None = None
    """A constitution YAML file (principles with critique, revision, choose); null: the bundled one."""
    revisions: int = Field(1, ge=1)
    """Critique → revision rounds per answer, each with a principle drawn for the prompt's category."""
    revision_samples: int = Field(1, ge=1)
    """From a redteam run: up to this many revisions sampled per round (best of n); the first that the probe's own
    rule detectors no longer flag is kept, else the first non-empty one. Prompts without detectors get one."""
    max_prompts: int | None = Field(None, ge=1)
    """Work on at most this many prompts (the first ones; a redteam run's repeated conversations count once)."""
    require_fixed: bool = False
    """From a redteam run: keep a revision only when the probe's own rule detectors no longer flag it (every
    record says whether it does either way: revision_passes_detectors in its provenance)."""
    anchors: bool = False
    """From a redteam run: over-refusal anchors, so that training on refusals does not teach refusing harmless
    requests. For each harmless prompt of the run (over_refusal probes of `splits`) the model answers afresh (up to
    `revision_samples` tries, the first greedy, the rest sampled; the first that is not a refusal is kept), and that
    answer is preferred to the model's own continuation of the refusal opening of the principle made for harmful
    requests. Pairs go to preferences.jsonl, the helpful answers to sft.jsonl, each with provenance label
    over_refusal_anchor."""
    anchor_prompts: str | None = None
    """Ordinary requests anchored the same way (provenance label helpful_anchor), so that the round also trains on
    the model's own answers to everyday work and keeps them: a prompt file, or builtin:everyday (96 bundled
    requests: explaining, cooking and home, writing, advice, code, facts, formatting, arithmetic; none is a
    `builtin:general` prompt or a probe). null: none."""
    max_anchor_prompts: int | None = Field(None, ge=1)
    """Use at most this many of `anchor_prompts` (the first ones)."""
    feedback: ChatModelConfig | None = None
    """A feedback model for AI-labelled pairs: two fresh answers per prompt, asked in both orders which better
    follows a drawn principle; only consistent verdicts are kept (ai_preferences.jsonl). null: no AI labels."""
    feedback_max_new_tokens: int = Field(16, ge=1)
    """Longest verdict of the feedback model (greedy)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=160)
    """How the model samples answers, critiques and revisions."""
    batch_size: int = Field(16, ge=1)
    """Prompts generated together by local models."""
    seed: int = 0
    """Seed of the principle draws."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> ConstituteConfig:
        if not self.prompts:
            raise ValueError("prompts is required: a `honing redteam` run directory, or a file of prompts")
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
    "label": LabelConfig,
    "reward": RewardConfig,
    "score": ScoreConfig,
    "rl": RLConfig,
    "redteam": RedteamConfig,
    "constitute": ConstituteConfig,
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
        key = f"{prefix}{field.alias or name}"
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
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
