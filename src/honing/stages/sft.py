"""`honing sft`: supervised fine-tuning (full, LoRA, DoRA, QLoRA) on instruction or chat data.

    setup: model + tokenizer ─▶ data (validate, template, mask, pack) ─▶ adapter
    train: the shared engine, loss over the assistant tokens ─▶ save ─▶ run record
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.config import SFTConfig
from honing.stages.common import StageParts, report_data, run_training_stage
from honing.train.checkpoint import seed_everything
from honing.train.distributed import Dist


def setup_parts(cfg: SFTConfig, ctx: Dist, loaded=None) -> StageParts:
    """Load and validate everything before a run directory exists (bad input leaves nothing behind).
    `loaded` lets a caller that already holds the model (quickstart) pass it in."""
    from honing.data.prepare import prepare_data
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model

    if loaded is None:
        loaded = load_model(cfg.model, device=ctx.device, adapter=cfg.adapter)
    data = prepare_data(cfg.data, loaded.tokenizer, purpose="sft")
    report_data(data, ctx)
    seed_everything(cfg.train.seed)  # adapter initialisation draws random numbers
    model = apply_adapter(loaded.model, cfg.adapter)
    if cfg.train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(ctx.device)
    train_items, val_items, collate = batching(data, cfg.data.packing, cfg.data.max_length, loaded.tokenizer.pad_token_id)
    return StageParts(model, loaded.tokenizer, data, train_items, val_items, collate, loaded.source)


def batching(data, packing: bool, max_length: int, pad_id: int):
    """Items the engine draws batches from, and how they become tensors: packed rows or padded examples."""
    from functools import partial

    from honing.data.packing import collate_packed, collate_padded, pack

    if packing:
        return pack(data.train, max_length, pad_id), pack(data.validation, max_length, pad_id), collate_packed
    return data.train, data.validation, partial(collate_padded, pad_id=pad_id)


def sft(cfg: SFTConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune; returns the run directory, outputs and final metrics."""
    return run_training_stage("sft", cfg, setup_parts, resume)

run = sft
