"""What the training stages (pretrain, sft) share: validating inputs before a run directory
exists, recording inputs and outputs, and the train → save → record sequence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from honing.config import OutputConfig, TrainConfig
from honing.data.types import PreparedData
from honing.runs import Run, find_parent_run
from honing.train.distributed import Dist
from honing.ui import console


@dataclass
class StageParts:
    """Everything a training stage built before training starts."""

    model: Any
    tokenizer: Any
    data: PreparedData
    train_items: list
    val_items: list
    collate: Callable
    model_source: dict[str, Any]
    objective: Any = None
    """What the engine optimises (default: causal LM on the target tokens)."""
    save: Callable[[Path, dict | None], dict[str, str]] | None = None
    """save(run_dir, gathered_state_dict) -> {role: path}: how the trained model is written
    (default: save_model, i.e. model/ and/or adapter/; reward: reward_model/)."""
    on_run: Callable[[Run, bool], None] | None = None
    """Called once the run directory exists, before training, with (run, resumed): a stage writes
    its own files and record entries there (dpo: the precomputed reference log-probs)."""


def report_data(data: PreparedData, ctx: Dist) -> None:
    """Say what the data layer did, including anything it truncated or skipped."""
    if not ctx.is_main:
        return
    s = data.stats
    console.print(
        f"data: {data.format} format, {s.get('train_examples', len(data.train))} training and "
        f"{s.get('validation_examples', len(data.validation))} validation examples, "
        f"{s.get('target_tokens', '?')} of {s.get('tokens', '?')} tokens trained"
    )
    if s.get("truncated"):
        console.print(f"[yellow]{s['truncated']} examples were longer than data.max_length and were truncated[/]")
    if data.rejects:
        first = data.rejects[0]
        console.print(f"[yellow]{len(data.rejects)} records rejected (first: {first.where()}: {first.reason}); see rejects.jsonl[/]")
    if not data.validation:
        console.print("[yellow]no validation data: validation loss, early stopping and the best checkpoint are off[/]")


def record_inputs(run: Run, parts: StageParts, model_path: str | None, train_seed: int, split_seed: int) -> None:
    """Inputs with content hashes, the parent run, the data stats, and the rejects file."""
    source = parts.model_source
    extra = {key: source[key] for key in ("run", "adapter", "adapter_sha256", "registry") if source.get(key)}
    run.add_input("base_model", source.get("path") or source.get("kind"), sha256=source.get("sha256"), kind=source.get("kind"),
                  **extra)
    for entry in parts.data.inputs:
        run.add_input(f"data_{entry['role']}", entry["path"], sha256=entry.get("sha256"))
    run.set("parent", find_parent_run(model_path))
    run.set("seeds", {"train": train_seed, "split": split_seed})
    run.set("data", {**parts.data.stats, "format": parts.data.format, "rejected": len(parts.data.rejects)})
    if parts.data.rejects and run.is_main:
        with (run.dir / "rejects.jsonl").open("w", encoding="utf-8") as handle:
            for reject in parts.data.rejects:
                handle.write(json.dumps({"file": reject.file, "line": reject.line, "reason": reject.reason,
                                         "record": reject.record}, default=str) + "\n")
        run.add_output("rejects", run.dir / "rejects.jsonl")


def train_and_save(stage: str, config: Any, parts: StageParts, train: TrainConfig, output: OutputConfig,
                   ctx: Dist, *, resume: str | Path | None, model_path: str | None,
                   split_seed: int) -> tuple[Run, dict[str, Any]]:
    """Create (or reopen) the run, train, save the model, and finish the record.
    Returns the run (a caller may add to its record) and a summary."""
    from honing.models.save import save_model
    from honing.train.engine import fit

    from honing.runs import default_run_dir
    from honing.train.distributed import broadcast_object

    # Every process must agree on the directory (the default name has a timestamp in it).
    directory = broadcast_object(str(output.dir or default_run_dir(stage)), ctx)
    run = Run.open(resume, is_main=ctx.is_main) if resume else Run.create(stage, config, directory, is_main=ctx.is_main)
    if resume and ctx.is_main:
        from honing.config import dump_config

        (run.dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")  # with any resume overrides
    if not resume:
        record_inputs(run, parts, model_path, train.seed, split_seed)
        if ctx.is_main and output.tensorboard:
            run.set("tensorboard", _tensorboard_dir(run))
    if ctx.is_main and output.tensorboard and run.record.get("tensorboard"):
        run.attach_tensorboard(run.record["tensorboard"])
    if parts.on_run is not None:
        parts.on_run(run, bool(resume))
    try:
        result = fit(parts.model, parts.train_items, parts.val_items, parts.collate, train, run=run, ctx=ctx,
                     resume=bool(resume), objective=parts.objective)
    except BaseException as err:
        run.finish(status="diverged" if type(err).__name__ == "TrainingDiverged" else "failed")
        raise
    if result.stopped == "interrupted":
        run.finish(status="interrupted", metrics=result.metrics)
        console.print(f"stopped at step {result.state.step}; continue with: honing {stage} --resume {run.dir}")
        return run, {"run_dir": str(run.dir), "status": "interrupted", **result.metrics}
    from honing.train.parallel import full_state_dict

    outputs: dict[str, str] = {}
    gathered = full_state_dict(parts.model, ctx, train.distributed)
    if ctx.is_main:
        if parts.save is not None:
            outputs = parts.save(run.dir, gathered)
        else:
            outputs = save_model(parts.model, parts.tokenizer, run.dir, save=output.save, state_dict=gathered)
        for role, path in outputs.items():
            run.add_output(role, path)
        run.set("output_sha256", output_hashes(outputs))
    run.finish(status=result.stopped, metrics={**result.metrics, "restored_best": result.restored_best})
    if ctx.is_main:
        where = ", ".join(f"{role}: {path}" for role, path in outputs.items())
        console.print(f"[green]done[/] — {where}; record: {run.dir / 'run.json'}; metrics: {run.dir / 'metrics.jsonl'}")
    return run, {"run_dir": str(run.dir), "status": result.stopped, "outputs": outputs, **result.metrics}


def output_hashes(outputs: dict[str, str]) -> dict[str, str]:
    """role → sha256 of the weights of every saved model (what the registry and lineage check against)."""
    from honing.models.source import weight_files, weights_sha256

    hashes = {}
    for role, path in outputs.items():
        files = weight_files(path) if Path(path).is_dir() else []
        if files:
            hashes[role] = weights_sha256(files)
    return hashes


def _tensorboard_dir(run: Run) -> str | None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return str(run.dir / "tensorboard")


def run_training_stage(stage: str, cfg: Any, setup_parts: Callable[[Any, Dist], StageParts],
                       resume: str | Path | None) -> dict[str, Any]:
    """A training stage from start to end: join the processes, build the parts, train, save."""
    from honing.train.distributed import setup, teardown

    ctx = setup()
    try:
        parts = setup_parts(cfg, ctx)
        _, summary = train_and_save(stage, cfg, parts, cfg.train, cfg.output, ctx, resume=resume,
                                    model_path=cfg.model.path, split_seed=cfg.data.split_seed)
        return summary
    finally:
        teardown(ctx)
