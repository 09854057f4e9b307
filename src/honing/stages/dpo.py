"""`honing dpo`: preference optimisation (DPO, IPO, SimPO, ORPO) on prompt/chosen/rejected pairs.

    setup: model + tokenizer ─▶ pairs (file:line errors or rejects; split) ─▶ adapter
    train: the shared engine with the preference objective, normalised by pairs ─▶ save ─▶ run record

With LoRA the reference policy is the starting model itself with the adapter switched off, so
only one copy of the weights is in memory; at step 0 the policy equals the reference and the
DPO loss is exactly ln 2.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from honing.config import DPOConfig
from honing.data.types import PreparedData, Reject
from honing.errors import DataError
from honing.stages.common import StageParts, report_data, run_training_stage
from honing.train.checkpoint import seed_everything
from honing.train.distributed import Dist


def load_pairs(cfg: DPOConfig, tokenizer: Any) -> PreparedData:
    """Preference pairs tokenised with the chat template, the loss on each answer's last turn."""
    from honing.data.formats import RecordError, normalize
    from honing.data.loading import read_records
    from honing.data.split import split_records
    from honing.runs import file_sha256
    from honing.train.objectives.preference import tokenize_preference

    def read(path: str) -> tuple[list, list[Reject], int]:
        pairs, rejects, records = [], [], 0
        for file, line, record in read_records(path):
            records += 1
            try:
                pairs.append(tokenize_preference(tokenizer, normalize(record, "preference",
                                                                      system_prompt=cfg.data.system_prompt),
                                                 cfg.data.max_length))
            except (RecordError, ValueError) as err:
                reject = Reject(file, line, str(err), record)
                if cfg.data.on_bad_record != "skip":
                    raise DataError(f"{reject.where()}: {reject.reason}") from None
                rejects.append(reject)
        return pairs, rejects, records

    train, rejects, records = read(cfg.data.train)
    inputs = [{"role": "train", "path": cfg.data.train, "sha256": _sha(cfg.data.train, file_sha256)}]
    if cfg.data.validation:
        validation, more, extra = read(cfg.data.validation)
        rejects += more
        records += extra
        inputs.append({"role": "validation", "path": cfg.data.validation, "sha256": _sha(cfg.data.validation, file_sha256)})
    else:
        train, validation = split_records(train, cfg.data.validation_split, cfg.data.split_seed)
    if not train:
        raise DataError(f"{cfg.data.train}: no preference pair is left to train on")
    truncated = sum(len(e.chosen.input_ids) >= cfg.data.max_length or len(e.rejected.input_ids) >= cfg.data.max_length
                    for e in train + validation)
    stats = {"records": records, "rejected": len(rejects), "train_examples": len(train),
             "validation_examples": len(validation), "truncated": truncated,
             "tokens": sum(len(e.chosen.input_ids) + len(e.rejected.input_ids) for e in train),
             "target_tokens": sum(e.chosen.target_tokens + e.rejected.target_tokens for e in train)}
    return PreparedData(train, validation, "preference", inputs, rejects, stats)


def _sha(path: str, file_sha256) -> str | None:
    return file_sha256(path) if Path(path).is_file() else None


def setup_parts(cfg: DPOConfig, ctx: Dist) -> StageParts:
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.train.objectives.preference import PreferenceObjective, collate_preference

    loaded = load_model(cfg.model, device=ctx.device, adapter=cfg.adapter)
    data = load_pairs(cfg, loaded.tokenizer)
    report_data(data, ctx)
    seed_everything(cfg.train.seed)
    model = apply_adapter(loaded.model, cfg.adapter)
    model.to(ctx.device)
    p = cfg.preference
    objective = PreferenceObjective(model, p.loss, beta=p.beta, label_smoothing=p.label_smoothing,
                                    simpo_gamma=p.simpo_gamma, orpo_lambda=p.orpo_lambda)
    collate = partial(collate_preference, pad_id=loaded.tokenizer.pad_token_id)
    return StageParts(model, loaded.tokenizer, data, data.train, data.validation, collate, loaded.source, objective)


def dpo(cfg: DPOConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Align; returns the run directory, outputs and final metrics (val_margin, val_accuracy, ...)."""
    return run_training_stage("dpo", cfg, setup_parts, resume)


run = dpo
