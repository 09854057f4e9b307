"""`honing reward`: train a reward model on preference pairs (prompt, chosen, rejected).

    setup: model + tokenizer ─▶ pairs (file:line errors or rejects; split), each side cut after the
           answer's end-of-turn token ─▶ adapter (or full) ─▶ a new scalar head
    train: the shared engine with the Bradley–Terry objective, normalised by pairs
           ─▶ reward_model/ (backbone or adapter + head + tokenizer) ─▶ run record

The engine optimises the RewardModel itself (backbone + head), so the head is in the optimiser
and in every checkpoint, with or without an adapter. Validation reports the held-out loss and
the pairwise accuracy (the share of pairs whose chosen answer scores higher).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from honing.config import RewardConfig
from honing.data.types import TokenizedExample
from honing.stages.common import StageParts, report_data, run_training_stage
from honing.stages.dpo import load_pairs
from honing.train.checkpoint import seed_everything
from honing.train.distributed import Dist
from honing.ui import console


@dataclass
class RewardExample:
    """One pair: each side is prompt + answer, ending at the token the score is read from."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    margin: float = 0.0
    """How much higher the chosen answer must score (reward.margin + the record's margin_field)."""


def make_example(tokenizer: Any, cfg: RewardConfig, pair: dict[str, Any], record: Any) -> RewardExample:
    """A normalised preference pair (and its raw record, for the margin) as a RewardExample."""
    from honing.models.reward import render_side

    margin = cfg.reward.margin
    field = cfg.reward.margin_field
    if field:
        value = record.get(field) if isinstance(record, dict) else None
        if value is None:
            raise ValueError(f"missing field {field!r} (reward.margin_field)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"field {field!r} (reward.margin_field) must be a finite number, not {value!r}")
        margin += float(value)
    chosen, rejected = (render_side(tokenizer, pair["prompt"] + pair[key], max_length=cfg.data.max_length)
                        for key in ("chosen", "rejected"))
    return RewardExample(chosen, rejected, margin)


def collate_reward(examples: list[RewardExample], pad_id: int) -> dict[str, Any]:
    """2B right-padded rows (the chosen sides, then the rejected ones) and each pair's margin (B,)."""
    import torch

    from honing.train.objectives.reward import pad_pairs

    batch = pad_pairs([e.chosen.input_ids for e in examples], [e.rejected.input_ids for e in examples], pad_id)
    batch["margin"] = torch.tensor([e.margin for e in examples], dtype=torch.float32)  # (B,)
    return batch


def freeze_vocabulary_head(model: Any) -> None:
    """The LM's vocabulary head is not on the reward path: freeze it (unless it is tied to the input
    embeddings, which are), so full training neither holds optimiser state for it nor decays it."""
    from honing.train.objectives.causal_lm import causal_lm_of

    lm = causal_lm_of(model)
    head, embeddings = lm.get_output_embeddings(), lm.get_input_embeddings()
    if head is not None and head.weight is not embeddings.weight:
        head.requires_grad_(False)


def setup_parts(cfg: RewardConfig, ctx: Dist) -> StageParts:
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.models.reward import RewardModel
    from honing.train.objectives.reward import RewardObjective

    loaded = load_model(cfg.model, device=ctx.device, adapter=cfg.adapter)
    tokenizer = loaded.tokenizer
    data = load_pairs(cfg, tokenizer, partial(make_example, tokenizer, cfg))
    report_data(data, ctx)
    seed_everything(cfg.train.seed)  # the adapter's and the head's initial weights
    backbone = apply_adapter(loaded.model, cfg.adapter)
    if cfg.adapter.method == "full":
        freeze_vocabulary_head(backbone)
    if cfg.train.activation_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    reward_model = RewardModel(backbone).to(ctx.device)
    _describe(cfg, reward_model, ctx)
    collate = partial(collate_reward, pad_id=tokenizer.pad_token_id)
    return StageParts(reward_model, tokenizer, data, data.train, data.validation, collate, loaded.source,
                      RewardObjective(reward_model), save=partial(save_reward, reward_model, tokenizer))


def _describe(cfg: RewardConfig, reward_model: Any, ctx: Dist) -> None:
    if not ctx.is_main:
        return
    total = sum(p.numel() for p in reward_model.parameters())
    trainable = sum(p.numel() for p in reward_model.parameters() if p.requires_grad)
    head = reward_model.head.weight.numel() + reward_model.head.bias.numel()
    how = "every backbone weight" if cfg.adapter.method == "full" else f"a {cfg.adapter.method} adapter (rank {cfg.adapter.rank})"
    t = cfg.train
    margin = f"margin {cfg.reward.margin:g}" + (f" + the record's {cfg.reward.margin_field!r}" if cfg.reward.margin_field else "")
    console.print(
        f"reward model: {how} and a new scalar head ({head} parameters) trained: {trainable:,} of {total:,} parameters; "
        f"{t.micro_batch_size * t.grad_accum * ctx.world_size} pairs per optimiser step "
        f"({t.micro_batch_size} × {t.grad_accum} accumulation × {ctx.world_size} processes); "
        f"Bradley–Terry loss with {margin}"
    )


def save_reward(reward_model: Any, tokenizer: Any, run_dir: Path, state_dict: dict | None) -> dict[str, str]:
    """reward_model/ in the run directory, written atomically."""
    from honing.io import atomic_dir
    from honing.models.reward import REWARD_MODEL_DIR, save_reward_model

    target = Path(run_dir) / REWARD_MODEL_DIR
    with atomic_dir(target) as tmp:
        save_reward_model(reward_model, tmp, tokenizer=tokenizer, state_dict=state_dict)
    return {"reward_model": str(target)}


def reward(cfg: RewardConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train; returns the run directory, outputs and final metrics (val_loss, val_accuracy, val_margin, ...)."""
    summary = run_training_stage("reward", cfg, setup_parts, resume)
    if "val_accuracy" in summary:
        console.print(f"held-out pairwise accuracy {summary['val_accuracy']:.3f} "
                      f"(loss {summary['val_loss']:.4f}, mean score margin {summary['val_margin']:.3f})")
    return summary


run = reward
