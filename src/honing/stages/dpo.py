"""`honing dpo`: preference optimisation (DPO, IPO, SimPO, ORPO) on prompt/chosen/rejected pairs.

    setup: model + tokenizer ─▶ pairs (file:line errors or rejects; split) ─▶ adapter
    train: the shared engine with the preference objective, normalised by pairs ─▶ save ─▶ run record

The reference policy (DPO, IPO) is the starting model, had one of three ways (`reference_mode`):
- precomputed: every train and validation pair scored once before the first update (eval mode),
  saved in the run directory as reference_logps.safetensors (hash in run.json) and reloaded by
  --resume, since by then the weights have moved; the default with full fine-tuning;
- disabled_adapter: with LoRA, the same weights with the adapter switched off at each step;
- frozen_copy: full fine-tuning with precompute_reference=false loads a second copy, frozen.
Either way the policy equals the reference at step 0 and the DPO loss is exactly ln 2.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from honing.config import DPOConfig
from honing.data.types import PreparedData, Reject
from honing.errors import DataError, HoningError
from honing.runs import RUN_FILE, Run
from honing.stages.common import StageParts, report_data, run_training_stage
from honing.train.checkpoint import seed_everything
from honing.train.distributed import Dist

REFERENCE_FILE = "reference_logps.safetensors"
ReferenceMode = Literal["none", "precomputed", "disabled_adapter", "frozen_copy"]


def load_pairs(cfg: DPOConfig, tokenizer: Any, make_example: Any = None) -> PreparedData:
    """Preference pairs tokenised with the chat template, the loss on each answer's last turn.

    `make_example(pair, record)` builds one example from a normalised pair and its raw record
    (default: DPO's `tokenize_preference`); `honing reward` passes its own."""
    from honing.data.formats import RecordError, normalize
    from honing.data.loading import read_records
    from honing.data.split import split_records
    from honing.runs import file_sha256
    from honing.train.objectives.preference import tokenize_preference

    if make_example is None:
        def make_example(pair: dict, record: Any) -> Any:
            return tokenize_preference(tokenizer, pair, cfg.data.max_length)

    def read(path: str) -> tuple[list, list[Reject], int]:
        pairs, rejects, records = [], [], 0
        for file, line, record in read_records(path):
            records += 1
            try:
                pairs.append(make_example(normalize(record, "preference", system_prompt=cfg.data.system_prompt), record))
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


def reference_mode(cfg: DPOConfig) -> ReferenceMode:
    """How this run gets its reference policy (see the module docstring); none for SimPO and ORPO."""
    p = cfg.preference
    if p.loss in ("simpo", "orpo"):
        return "none"
    precompute = p.precompute_reference if p.precompute_reference is not None else cfg.adapter.method == "full"
    if precompute:
        return "precomputed"
    return "frozen_copy" if cfg.adapter.method == "full" else "disabled_adapter"


def setup_parts(cfg: DPOConfig, ctx: Dist, resume: str | Path | None = None) -> StageParts:
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.train.objectives.preference import PreferenceObjective, collate_preference, with_reference

    loaded = load_model(cfg.model, device=ctx.device, adapter=cfg.adapter)
    data = load_pairs(cfg, loaded.tokenizer)
    report_data(data, ctx)
    seed_everything(cfg.train.seed)
    model = apply_adapter(loaded.model, cfg.adapter)
    model.to(ctx.device)
    mode = reference_mode(cfg)
    train_items, val_items, reference_model, cache = data.train, data.validation, None, None
    if mode == "frozen_copy":
        reference_model = load_model(cfg.model, device=ctx.device).model  # eval mode, same dtype and device
        _say(ctx, "reference: a frozen copy of the starting model (preference.precompute_reference=false)")
    elif mode == "precomputed":
        # Before fit touches the weights (and before --resume loads a checkpoint): `model` is the start.
        cache = reference_cache(cfg, model, data, loaded.tokenizer.pad_token_id, ctx, resume)
        train_items, val_items = with_reference(data.train, cache.train), with_reference(data.validation, cache.validation)
    elif mode == "disabled_adapter":
        _say(ctx, "reference: the starting model with the adapter switched off")
    p = cfg.preference
    if p.loss == "ipo":  # the default changed from sum to mean: say which form this run trains with
        _say(ctx, f"IPO log-ratios: {'per-token mean' if p.ipo_normalize == 'mean' else 'summed over tokens'} "
                  f"(preference.ipo_normalize={p.ipo_normalize}; runs before the mean default used sum)")
    objective = PreferenceObjective(model, p.loss, beta=p.beta, label_smoothing=p.label_smoothing,
                                    simpo_gamma=p.simpo_gamma, orpo_lambda=p.orpo_lambda, ipo_normalize=p.ipo_normalize,
                                    reference_model=reference_model)
    collate = partial(collate_preference, pad_id=loaded.tokenizer.pad_token_id)
    return StageParts(model, loaded.tokenizer, data, train_items, val_items, collate, loaded.source, objective,
                      on_run=partial(_record_reference, mode, cache))


def _say(ctx: Dist, text: str) -> None:
    if ctx.is_main:
        from honing.ui import console

        console.print(text)


# --------------------------------------------------------------------------- precomputed reference


@dataclass
class ReferenceCache:
    """Reference log-probs (N, 2) of the train and validation pairs, in order: (chosen, rejected)."""

    train: Any
    validation: Any
    pairs_sha256: str
    """Fingerprint of the tokenised pairs they belong to (see `pairs_fingerprint`)."""
    fresh: bool
    """Computed by this process (and so still to be saved), rather than loaded from a run."""


def pairs_fingerprint(data: PreparedData) -> str:
    """sha256 over every pair's token ids and labels, train then validation: a cache is only
    reused for exactly the pairs it was computed on."""
    digest = hashlib.sha256()
    for split, items in (("train", data.train), ("validation", data.validation)):
        digest.update(f"{split}:{len(items)};".encode())
        for example in items:
            for side in (example.chosen, example.rejected):
                for values in (side.input_ids, side.labels):
                    digest.update(array("q", [len(values), *values]).tobytes())
    return digest.hexdigest()


def reference_cache(cfg: DPOConfig, model: Any, data: PreparedData, pad_id: int, ctx: Dist,
                    resume: str | Path | None) -> ReferenceCache:
    """The run's precomputed reference: reloaded from the run directory on --resume (the weights
    have moved since), else computed now with `model`, which must not have been updated yet."""
    fingerprint = pairs_fingerprint(data)
    if resume and (Path(resume) / REFERENCE_FILE).is_file():
        return load_reference_cache(Path(resume), fingerprint, ctx)
    if resume:
        _say(ctx, f"[yellow]{Path(resume) / REFERENCE_FILE} is missing: recomputing the reference log-probs "
                  "from the starting model (the checkpoint is not loaded yet, so they are the same)[/]")
    train, validation = compute_reference(cfg, model, data, pad_id, ctx)
    return ReferenceCache(train, validation, fingerprint, fresh=True)


def compute_reference(cfg: DPOConfig, model: Any, data: PreparedData, pad_id: int, ctx: Dist) -> tuple[Any, Any]:
    """(train (N, 2), validation (M, 2)) float32 CPU tensors: every pair scored by `model` itself in eval
    mode (no dropout) under the training precision. Each process scores its share; the shares are summed."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from honing.train.distributed import all_reduce_sum
    from honing.train.engine import autocast_context
    from honing.train.objectives.preference import precompute_reference
    from honing.ui import console

    items = data.train + data.validation
    mine = list(range(ctx.rank, len(items), ctx.world_size))
    bar = Progress(TextColumn("[bold]reference log-probs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not ctx.is_main)
    with bar, autocast_context(cfg.train.precision, ctx.device):
        task = bar.add_task("reference", total=len(mine))
        # A PEFT policy is scored with its adapter off; a full policy, not updated yet, is the reference itself.
        reference_model = None if hasattr(model, "disable_adapter") else model
        scores = precompute_reference(model, [items[i] for i in mine], pad_id, reference_model=reference_model,
                                      batch_size=cfg.train.micro_batch_size, device=ctx.device,
                                      advance=lambda n: bar.update(task, advance=n))  # (len(mine), 2)
    cache = torch.zeros((len(items), 2), dtype=torch.float32)
    cache[mine] = scores
    cache = all_reduce_sum(cache.to(ctx.device), ctx).cpu()  # each row is non-zero on one process only
    return cache[: len(data.train)].clone(), cache[len(data.train):].clone()


def load_reference_cache(run_dir: Path, fingerprint: str, ctx: Dist) -> ReferenceCache:
    """The cache a run saved, checked against the hash in its run.json and the pairs it was computed on."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from honing.runs import file_sha256

    path = run_dir / REFERENCE_FILE
    recorded = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("reference") or {}
    actual = file_sha256(path)
    if recorded.get("sha256") and recorded["sha256"] != actual:
        raise HoningError(f"{path} changed since the run wrote it (sha256 {actual[:12]}…, run.json says "
                          f"{recorded['sha256'][:12]}…): the run cannot continue against the same reference")
    with safe_open(str(path), framework="pt") as handle:
        computed_on = (handle.metadata() or {}).get("pairs_sha256")
    if computed_on != fingerprint:
        raise HoningError(f"the preference pairs differ from those {path} was computed on (the data files, "
                          "data.max_length or the tokenizer changed): resume with the run's own data, or start a new run")
    tensors = load_file(str(path))
    _say(ctx, f"reference: log-probs reloaded from {path}")
    return ReferenceCache(tensors["train"], tensors["validation"], fingerprint, fresh=False)


def save_reference_cache(run: Run, cache: ReferenceCache) -> None:
    """Write the cache atomically into the run directory and record its hash."""
    from safetensors.torch import save_file

    from honing.io import atomic_path
    from honing.runs import file_sha256

    path = run.dir / REFERENCE_FILE
    if run.is_main:
        with atomic_path(path) as tmp:
            save_file({"train": cache.train.contiguous(), "validation": cache.validation.contiguous()}, str(tmp),
                      metadata={"pairs_sha256": cache.pairs_sha256})
    run.set("reference", {"mode": "precomputed", "file": REFERENCE_FILE, "sha256": file_sha256(path) if run.is_main else None,
                          "pairs_sha256": cache.pairs_sha256, "train_pairs": len(cache.train),
                          "validation_pairs": len(cache.validation)})
    run.add_output("reference_logps", path)


def _record_reference(mode: ReferenceMode, cache: ReferenceCache | None, run: Run, resumed: bool) -> None:
    if cache is not None and cache.fresh:
        save_reference_cache(run, cache)
        if run.is_main:
            from honing.ui import console

            console.print(f"reference: log-probs of {len(cache.train)} train and {len(cache.validation)} validation "
                          f"pairs precomputed → {run.dir / REFERENCE_FILE}")
    elif not resumed:
        run.set("reference", {"mode": mode})


def dpo(cfg: DPOConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Align; returns the run directory, outputs and final metrics (val_margin, val_accuracy, ...)."""
    return run_training_stage("dpo", cfg, partial(setup_parts, resume=resume), resume)


run = dpo
