"""`honing pretrain`: causal language modelling on raw text, from a new model or an existing one.

    setup: text ─▶ tokenizer (given, or a BPE trained on the corpus) ─▶ model (from config or path)
           ─▶ documents tokenised, EOS-terminated, packed without attention across documents
    train: the shared engine, loss over every token ─▶ save ─▶ run record
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.config import PretrainConfig
from honing.stages.common import StageParts, report_data, run_training_stage
from honing.stages.sft import batching
from honing.train.distributed import Dist
from honing.ui import console


def setup_parts(cfg: PretrainConfig, ctx: Dist) -> StageParts:
    from honing.data.loading import load_dataset_file
    from honing.data.prepare import prepare_data
    from honing.models.load import build_scratch_model, load_model, load_tokenizer
    from honing.models.tokenizer import train_bpe_tokenizer
    from honing.runs import tree_sha256

    if cfg.model.from_config is None:
        loaded = load_model(cfg.model, device=ctx.device)
        model, tokenizer, source = loaded.model, loaded.tokenizer, loaded.source
    else:
        scratch = cfg.model.from_config
        if cfg.model.tokenizer:
            tokenizer = load_tokenizer(cfg.model)
            source = {"kind": "scratch", "tokenizer": cfg.model.tokenizer, "sha256": tree_sha256(cfg.model.tokenizer)}
        else:
            records, _, _ = load_dataset_file(cfg.data.train, "text", on_bad_record="skip", text_field=cfg.data.text_field)
            if ctx.is_main:
                console.print(f"training a byte-level BPE tokenizer ({scratch.vocab_size} tokens) on {len(records)} documents")
            tokenizer = train_bpe_tokenizer((r["text"] for r in records), scratch.vocab_size)
            source = {"kind": "scratch", "tokenizer": "bpe trained on data.train"}
        model = build_scratch_model(scratch, tokenizer, seed=cfg.train.seed)
        source["config"] = scratch.model_dump()
    data = prepare_data(cfg.data, tokenizer, purpose="pretrain")
    report_data(data, ctx)
    for param in model.parameters():
        param.requires_grad_(True)
    if cfg.train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(ctx.device)
    train_items, val_items, collate = batching(data, cfg.data.packing, cfg.data.max_length, tokenizer.pad_token_id)
    return StageParts(model, tokenizer, data, train_items, val_items, collate, source)


def pretrain(cfg: PretrainConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Pre-train; returns the run directory, outputs and final metrics."""
    return run_training_stage("pretrain", cfg, setup_parts, resume)

run = pretrain
