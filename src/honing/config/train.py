"""The optimiser, schedule, precision, validation and checkpoints of a training run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from honing.config.base import StrictModel


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
    shared_prefix: Literal["auto", "off"] = "auto"
    """Where the padded rows of a micro-batch begin with the same tokens and none of them is a target (a common
    system prompt in SFT; the prompt of a DPO pair), run those tokens through the model once, forward and backward,
    and attend every row's remainder to them; the losses and gradients equal the per-row computation up to float
    rounding. auto: on when rows share at least 16 such tokens, except with activation_checkpointing or compile,
    under FSDP, for models whose attention is not plain full attention (sliding windows, linear or state-space
    layers, logit soft-capping) and for packed rows (which hold many examples); the run record's metrics say how
    many prefix tokens were computed once and how many the rows would have computed. off: every row computes its
    own prefix."""

    @field_validator("prefetch", "shared_prefix", mode="before")
    @classmethod
    def _switch_words(cls, value):
        """YAML 1.1 reads an unquoted on / off as true / false; they mean the words."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value
