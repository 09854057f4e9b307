"""The training loop every objective shares.

    fit()  ─ plan ─▶ [ resume ] ─▶ for each optimiser step:
                                     micro-batches of this rank ─▶ train_step ─▶ log
                                     ─▶ validate / early stop ─▶ checkpoint
                                   ─▶ restore best (early stopping) ─▶ result

Correctness rules kept here (DESIGN.md): the loss is normalised by the target tokens of the
whole optimiser step across micro-batches and ranks; the data order and dropout depend only on
(seed, step), so a resumed run continues exactly; checkpoints are atomic; a NaN stops the run
(or skips the step) with the last good checkpoint intact.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from honing.config import TrainConfig
from honing.errors import HoningError
from honing.interrupt import StopRequest
from honing.runs import Run
from honing.train import checkpoint as ckpt
from honing.train.distributed import Dist, all_reduce_sum, barrier
from honing.train.objectives.causal_lm import TargetedCausalLM, count_targets
from honing.train.optim import build_optimizer, build_scheduler
from honing.train.compilation import compile_blocks
from honing.train.loader import for_config as step_batches
from honing.train.parallel import as_float, block_modules, gradient_sync, wrap
from honing.train.shared_prefix import MIN_SHARED_TOKENS, unsupported_reason
from honing.ui import console, progress_bar

Collate = Callable[[Sequence[Any]], dict[str, torch.Tensor]]


class TrainingDiverged(HoningError):
    """The loss became NaN or infinite and train.on_nan is stop."""


@dataclass
class StepPlan:
    """How the training items map onto optimiser steps."""

    items: int
    items_per_step: int  # micro_batch_size × grad_accum × world_size
    steps_per_epoch: int
    total_steps: int
    dropped_per_epoch: int


@dataclass
class TrainState:
    """The engine's counters; saved in every checkpoint."""

    step: int = 0
    tokens_seen: int = 0
    target_tokens_seen: int = 0
    units_seen: int = 0  # in the objective's own units when they are not target tokens (preference, reward: pairs)
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    skipped_steps: int = 0
    prefix_tokens_computed_once: int = 0  # shared-prefix training: prefix tokens each computed for a group of rows
    prefix_tokens_per_row: int = 0  # the same prefixes as every row would have computed them
    items_per_step: int = 0
    elapsed_s: float = 0.0
    last_train_loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # validation results


def plan_steps(n_items: int, cfg: TrainConfig, world_size: int) -> StepPlan:
    per_step = cfg.micro_batch_size * cfg.grad_accum * world_size
    if n_items < cfg.grad_accum * world_size:
        raise HoningError(
            f"only {n_items} training items for {cfg.grad_accum * world_size} micro-batches per step; "
            "add data or lower train.grad_accum"
        )
    full, rest = divmod(n_items, per_step)
    # A final partial step is kept when every micro-batch of it gets at least one item.
    partial = 1 if rest >= cfg.grad_accum * world_size else 0
    steps_per_epoch = full + partial
    dropped = 0 if partial or rest == 0 else rest
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return StepPlan(n_items, per_step, steps_per_epoch, total, dropped)


def epoch_order(n_items: int, seed: int, epoch: int) -> list[int]:
    """The item order of an epoch: a function of (seed, epoch) only, never of global RNG state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_items, generator=generator).tolist()


def rank_micro_batches(plan: StepPlan, step: int, seed: int, cfg: TrainConfig, ctx: Dist) -> list[list[int]]:
    """Item indices of this rank's micro-batches for optimiser step `step` (0-based).

    The global item set of a step is the same for any world size, so one process with
    grad_accum=2k and k processes with grad_accum=2 see the same data per step."""
    epoch, index = divmod(step, plan.steps_per_epoch)
    order = epoch_order(plan.items, seed, epoch)
    step_items = order[index * plan.items_per_step : (index + 1) * plan.items_per_step]
    chunks = cfg.grad_accum * ctx.world_size
    size, extra = divmod(len(step_items), chunks)
    bounds, start = [], 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    mine = bounds[ctx.rank * cfg.grad_accum : (ctx.rank + 1) * cfg.grad_accum]
    return [step_items[a:b] for a, b in mine]


def uses_bf16(precision: str, device: torch.device) -> bool:
    """auto: bf16 autocast where the hardware multiplies bf16 natively (CUDA with bf16, or a CPU
    with AVX-512 BF16 / AMX, where it is 2-3× faster than fp32); fp32 everywhere else, because
    emulated bf16 is slower than fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_context(precision: str, device: torch.device):
    if uses_bf16(precision, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


CAUSAL_LM_KEYS = ("input_ids", "labels", "position_ids", "attention_mask")


def objective_of(module: nn.Module) -> nn.Module:
    """The objective inside a DDP wrapper (FSDP2 wraps in place, so it is the module itself)."""
    return getattr(module, "module", module)


def count_units(objective: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """What the step's loss is normalised by: the objective's own units (e.g. preference pairs)
    if it says, else target tokens."""
    count = getattr(objective, "count", None)
    return int(count(batch)) if count is not None else count_targets(batch["labels"])


def unit_of(objective: nn.Module) -> str:
    """The name under which the step's units are logged: `target_tokens` for causal LM, else the
    objective's own (`pairs` for preference and reward objectives)."""
    return getattr(objective, "unit", "units") if getattr(objective, "count", None) is not None else "target_tokens"


def _real_targets(batch: dict[str, torch.Tensor]) -> int:
    """Target tokens of a batch with labels (causal LM, preference answers); 0 without (reward)."""
    return count_targets(batch["labels"]) if "labels" in batch else 0


def _to(batch: dict[str, torch.Tensor], device: torch.device, keys: tuple[str, ...] = CAUSAL_LM_KEYS) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}


def _input_keys(objective: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(objective, "input_keys", CAUSAL_LM_KEYS))


def _add_metrics(total: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor] | None) -> None:
    for name, value in (metrics or {}).items():
        value = value.detach().double().sum()
        total[name] = total[name] + value if name in total else value


def _tokens_in(batch: dict[str, torch.Tensor]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def _shared_prefix_tokens(objective: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(prefix tokens computed once, the same as every row would compute them) of a micro-batch; (0, 0)
    where the objective shares nothing. Planned with the objective's own function, so it counts what ran."""
    plan = objective.prefix_plan(batch) if getattr(objective, "shared_prefix", False) else None
    return (plan.computed_once, plan.per_row) if plan is not None else (0, 0)


def enable_shared_prefix(objective: nn.Module, model: nn.Module, cfg: TrainConfig, ctx: Dist) -> str:
    """Switch shared-prefix training on where train.shared_prefix=auto and nothing prevents it; returns
    what the run record says about it."""
    if not hasattr(objective, "prefix_plan"):
        if cfg.shared_prefix == "auto":
            return f"off: {type(objective).__name__} does not share prefixes"
        return "off"
    objective.shared_prefix = False
    if cfg.shared_prefix == "off":
        return "off"
    reason = unsupported_reason(model, activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile,
                                fsdp=ctx.enabled and cfg.distributed == "fsdp")
    if reason is not None:
        return f"off: {reason}"
    objective.shared_prefix = True
    return f"auto: rows of a padded micro-batch that share at least {MIN_SHARED_TOKENS} leading non-target tokens compute them once"


def train_step(
    module: nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    ctx: Dist,
) -> dict[str, float]:
    """Forward/backward over this rank's micro-batches and one optimiser step.

    Each micro-batch's summed loss is divided by the step's *global* target count (or the
    objective's own units, e.g. preference pairs); DDP averages gradients over ranks, so the
    loss is scaled by world_size to make the result the sum over all target tokens divided by
    their number. An objective may return a third value, metrics summed over its units; they
    are averaged over the step's units on every rank.
    """
    objective = objective_of(module)
    keys = _input_keys(objective)
    local_targets = sum(count_units(objective, b) for b in micro_batches)
    global_targets = int(all_reduce_sum(torch.tensor(local_targets, dtype=torch.float64), ctx).item())
    if global_targets == 0:
        raise HoningError("an optimiser step has no target tokens; check data.train_on and the masking")
    loss_total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    metric_sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        with gradient_sync(module, i == len(micro_batches) - 1):
            with autocast_context(cfg.precision, ctx.device):
                out = module(**_to(batch, ctx.device, keys))
            loss_sum = out[0]
            (loss_sum * ctx.world_size / global_targets).backward()
        loss_total += loss_sum.detach().double()
        _add_metrics(metric_sums, out[2] if len(out) > 2 else None)
    loss = float(all_reduce_sum(loss_total, ctx).item()) / global_targets
    metrics = {name: float(all_reduce_sum(value, ctx).item()) / global_targets for name, value in sorted(metric_sums.items())}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
    grad_norm = as_float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    shared = [_shared_prefix_tokens(objective, b) for b in micro_batches]
    counts = torch.tensor([sum(_tokens_in(b) for b in micro_batches), sum(_real_targets(b) for b in micro_batches),
                           sum(once for once, _ in shared), sum(per_row for _, per_row in shared)], dtype=torch.float64)
    tokens, target_tokens, prefix_once, prefix_per_row = (int(n) for n in all_reduce_sum(counts, ctx).tolist())
    # units: what the loss was divided by (target tokens for causal LM, pairs for preference);
    # target_tokens: the real count of tokens the loss covers, whatever the units.
    return {"loss": loss, "grad_norm": grad_norm, "units": global_targets, "target_tokens": target_tokens,
            "tokens": tokens, "finite": finite, "metrics": metrics,
            "prefix_tokens_computed_once": prefix_once, "prefix_tokens_per_row": prefix_per_row}


def optimizer_step(module: nn.Module, micro_batches: list[dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
                   scheduler: Any, cfg: TrainConfig, ctx: Dist, *, where: str, checkpoints: Path) -> dict[str, Any]:
    """One optimiser step of any loop (fit, RL): train_step, then a non-finite loss stops the run
    (train.on_nan=stop) or skips the update, and the schedule advances either way."""
    result = train_step(module, micro_batches, optimizer, cfg, ctx)
    if not result["finite"]:
        if cfg.on_nan == "stop":
            raise TrainingDiverged(
                f"loss became {result['loss']} (grad norm {result['grad_norm']}) at {where}; "
                f"stopped with the last good checkpoint in {checkpoints} (train.on_nan=skip skips such steps)"
            )
        console.print(f"[yellow]{where}: non-finite loss {result['loss']}, step skipped[/]")
    with warnings.catch_warnings():
        # After a skipped step the optimiser did not step; the schedule still advances.
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return result


@torch.no_grad()
def evaluate(module: nn.Module, items: Sequence[Any], collate: Collate, cfg: TrainConfig, ctx: Dist) -> dict[str, float]:
    """Validation loss per unit over all ranks, with the objective's metrics: per target token (masked
    tokens excluded) plus perplexity for causal LM; per pair, without perplexity, for preference and reward."""
    module.eval()
    keys = _input_keys(objective_of(module))
    loss_total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    targets = torch.zeros((), dtype=torch.float64, device=ctx.device)
    real_targets = 0
    metric_sums: dict[str, torch.Tensor] = {}
    mine = list(range(ctx.rank, len(items), ctx.world_size))
    for start in range(0, len(mine), cfg.micro_batch_size):
        batch = collate([items[i] for i in mine[start : start + cfg.micro_batch_size]])
        with autocast_context(cfg.precision, ctx.device):
            out = module(**_to(batch, ctx.device, keys))
        loss_total += out[0].double()
        targets += torch.as_tensor(out[1], device=ctx.device).double()
        real_targets += _real_targets(batch)
        _add_metrics(metric_sums, out[2] if len(out) > 2 else None)
    module.train()
    loss_total, targets = all_reduce_sum(loss_total, ctx), all_reduce_sum(targets, ctx)
    loss = float(loss_total / targets) if targets > 0 else float("nan")
    objective, result = objective_of(module), {"val_loss": loss}
    if isinstance(objective, TargetedCausalLM):  # exp(loss) is a perplexity only for a mean token NLL
        result["val_perplexity"] = math.exp(min(loss, 50.0))
    if unit_of(objective) != "target_tokens":
        result[f"val_{unit_of(objective)}"] = int(targets)
    if "labels" in keys:
        result["val_target_tokens"] = int(all_reduce_sum(torch.tensor(real_targets, dtype=torch.float64), ctx).item())
    for name, value in sorted(metric_sums.items()):
        total = float(all_reduce_sum(value, ctx).item())
        result[f"val_{name}"] = total / float(targets) if targets > 0 else float("nan")
    return result


@dataclass
class FitResult:
    state: TrainState
    stopped: str  # completed | early_stopped | interrupted
    restored_best: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


def fit(
    model: nn.Module,
    train_items: Sequence[Any],
    val_items: Sequence[Any],
    collate: Collate,
    cfg: TrainConfig,
    *,
    run: Run,
    ctx: Dist = Dist(),
    resume: bool = False,
    show_progress: bool = True,
    after_step: Callable[[TrainState], None] | None = None,
    objective: nn.Module | None = None,
) -> FitResult:
    """Train `model` (already on ctx.device, adapters applied) and return the final state.

    `objective` wraps `model` and returns (summed loss, units[, summed metrics]) from a batch;
    default: causal LM on target tokens. Another objective (preference, reward) may define
    `count(batch)` (its units) and `input_keys` (the batch keys it takes)."""
    plan = plan_steps(len(train_items), cfg, ctx.world_size)
    if cfg.compile:  # before wrapping: FSDP2 then shards the compiled blocks, and names stay unchanged
        compile_blocks(block_modules(model), ctx.device)
    if objective is None:
        objective = TargetedCausalLM(model, loss_kernel=cfg.loss_kernel)
    shared_prefix = enable_shared_prefix(objective, model, cfg, ctx)
    module = wrap(objective, cfg.distributed, ctx)  # FSDP2 shards `model` in place
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, plan.total_steps)
    store = ckpt.Checkpoints(run.dir / "checkpoints", module, model, cfg, ctx)
    checkpoints = store.root
    state = TrainState(items_per_step=plan.items_per_step)
    if resume:
        state = ckpt.resume_latest(store, optimizer, scheduler, run, lambda saved: _resumed_state(saved, plan))
    _describe_plan(model, plan, cfg, ctx, run, state, shared_prefix)

    module.train()
    last_eval_step = -1
    started = time.perf_counter() - state.elapsed_s
    stopped = "completed"
    if val_items and state.step == 0 and cfg.eval_every:
        _validate(module, val_items, collate, cfg, ctx, run, state, store)
        last_eval_step = 0
    bar = progress_bar(plan.total_steps, enabled=show_progress and ctx.is_main)
    batches = step_batches(train_items, collate, lambda s: rank_micro_batches(plan, s, cfg.seed, cfg, ctx),
                           plan.total_steps, cfg, ctx.device)
    with bar, batches, StopRequest() as stop:
        task = bar.add_task("train", total=plan.total_steps, completed=state.step, loss=float("nan"), lr=0.0, tps=0.0)
        window_tokens, window_start = 0, time.perf_counter()
        while state.step < plan.total_steps:
            step = state.step
            # Dropout depends on (seed, step, rank) only, so a resumed run draws the same masks.
            torch.manual_seed(cfg.seed * 1_000_003 + step * 4099 + ctx.rank)
            micro_batches = batches.get(step)
            lr = scheduler.get_last_lr()[0]
            result = optimizer_step(module, micro_batches, optimizer, scheduler, cfg, ctx, where=f"step {step + 1}",
                                    checkpoints=checkpoints)
            state.skipped_steps += not result["finite"]
            state.step += 1
            state.tokens_seen += result["tokens"]
            state.target_tokens_seen += result["target_tokens"]
            state.units_seen += result["units"]
            state.prefix_tokens_computed_once += result["prefix_tokens_computed_once"]
            state.prefix_tokens_per_row += result["prefix_tokens_per_row"]
            state.last_train_loss = result["loss"]
            state.elapsed_s = time.perf_counter() - started
            window_tokens += result["tokens"]
            window_elapsed = time.perf_counter() - window_start
            tps = window_tokens / window_elapsed if window_elapsed > 0 else 0.0
            if state.step % cfg.log_every == 0 or state.step == plan.total_steps:
                run.log_metrics(state.step, {
                    "loss": result["loss"], "lr": lr, "grad_norm": result["grad_norm"], "tokens": result["tokens"],
                    **_counts(objective, result["target_tokens"], result["units"]),
                    **_prefix_counts(objective, result["prefix_tokens_computed_once"], result["prefix_tokens_per_row"]),
                    "tokens_per_s": tps, "epoch": state.step / plan.steps_per_epoch, **result["metrics"],
                })
            bar.update(task, completed=state.step, loss=result["loss"], lr=lr, tps=tps)

            is_last = state.step == plan.total_steps
            if val_items and ((cfg.eval_every and state.step % cfg.eval_every == 0) or is_last):
                _validate(module, val_items, collate, cfg, ctx, run, state, store)
                last_eval_step = state.step
                if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
                    stopped = "early_stopped"
            if (cfg.save_every and state.step % cfg.save_every == 0) or stop.requested or stopped != "completed":
                store.save(f"step-{state.step:08d}", optimizer, scheduler, state)
            if after_step is not None:
                after_step(state)
            if stop.requested:
                stopped = "interrupted"
            if stopped != "completed":
                break
    if val_items and last_eval_step != state.step and stopped == "completed":
        _validate(module, val_items, collate, cfg, ctx, run, state, store)
    restored = False
    if cfg.early_stopping_patience and state.best_step is not None and state.best_step != state.step and stopped != "interrupted":
        store.load(checkpoints / ckpt.BEST)
        restored = True
        console.print(f"restored the best checkpoint (step {state.best_step}, val loss {state.best_val_loss:.4f}) before saving")
    metrics = {
        "steps": state.step,
        "train_loss": state.last_train_loss,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "tokens_seen": state.tokens_seen,
        **_counts(objective, state.target_tokens_seen, state.units_seen, "_seen"),
        **_prefix_counts(objective, state.prefix_tokens_computed_once, state.prefix_tokens_per_row, state.tokens_seen),
        "skipped_steps": state.skipped_steps,
        "train_seconds": round(state.elapsed_s, 2),
        "tokens_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
    }
    if state.history:
        metrics.update({k: v for k, v in state.history[-1].items() if k.startswith("val_")})
        metrics["first_val_loss"] = state.history[0]["val_loss"]
    return FitResult(state=state, stopped=stopped, restored_best=restored, metrics=metrics)


def _validate(module, val_items, collate, cfg, ctx, run, state: TrainState, store: ckpt.Checkpoints) -> None:
    result = evaluate(module, val_items, collate, cfg, ctx)
    result["step"] = state.step
    state.history.append(result)
    run.log_metrics(state.step, {k: v for k, v in result.items() if k != "step"})
    improved = state.best_val_loss is None or result["val_loss"] < state.best_val_loss
    if improved:
        state.best_val_loss, state.best_step = result["val_loss"], state.step
        state.evals_without_improvement = 0
        store.save(ckpt.BEST, None, None, state, mark_latest=False)
    else:
        state.evals_without_improvement += 1
    barrier(ctx)
    if ctx.is_main:
        marker = " (best)" if improved else ""
        extra = "".join(f", {name.removeprefix('val_')} {result[name]:.{digits}f}"
                        for name, digits in (("val_perplexity", 2), ("val_margin", 4), ("val_accuracy", 3)) if name in result)
        console.print(f"step {state.step}: val loss {result['val_loss']:.4f}{extra}{marker}")


def _counts(objective: nn.Module, target_tokens: int, units: int, suffix: str = "") -> dict[str, int]:
    """Counts under names that say what they count: target tokens where the batch has labels (not
    for reward), and the objective's units (pairs) where they are not target tokens."""
    counts = {f"target_tokens{suffix}": target_tokens} if "labels" in _input_keys(objective) else {}
    if unit_of(objective) != "target_tokens":
        counts[f"{unit_of(objective)}{suffix}"] = units
    return counts


def _prefix_counts(objective: nn.Module, computed_once: int, per_row: int, tokens: int | None = None) -> dict[str, Any]:
    """What shared-prefix training saved, where it is on: prefix tokens computed once, the tokens the rows
    would have computed for the same prefixes, and (over a run) the share of all tokens that were not computed."""
    if not getattr(objective, "shared_prefix", False):
        return {}
    counts: dict[str, Any] = {"prefix_tokens_computed_once": computed_once, "prefix_tokens_per_row": per_row}
    if tokens is not None:
        counts["prefix_tokens_saved_share"] = round((per_row - computed_once) / tokens, 4) if tokens else 0.0
    return counts


def _resumed_state(saved: dict[str, Any], plan: StepPlan) -> TrainState:
    state = TrainState(**saved)
    if state.items_per_step and state.items_per_step != plan.items_per_step:
        raise HoningError(
            f"the run was trained with {state.items_per_step} sequences per step and would resume with "
            f"{plan.items_per_step}; set train.grad_accum so that micro_batch_size × grad_accum × processes "
            f"= {state.items_per_step}, or the data order cannot continue exactly"
        )
    return state


def _describe_plan(model: nn.Module, plan: StepPlan, cfg: TrainConfig, ctx: Dist, run: Run, state: TrainState,
                   shared_prefix: str) -> None:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {
        "parameters": total,
        "trainable_parameters": trainable,
        "items_per_step": plan.items_per_step,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "world_size": ctx.world_size,
        "dropped_items_per_epoch": plan.dropped_per_epoch,
        "precision": "bf16 autocast" if uses_bf16(cfg.precision, ctx.device) else "fp32",
        "shared_prefix": shared_prefix,
    }
    if ctx.is_main:
        run.set("plan", info)
        console.print(
            f"parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / max(total, 1):.2f}%)\n"
            f"steps: {plan.total_steps} of {plan.items_per_step} sequences "
            f"({cfg.micro_batch_size} × {cfg.grad_accum} accumulation × {ctx.world_size} processes), "
            f"{plan.steps_per_epoch} per epoch over {plan.items} items; {info['precision']}; run directory: {run.dir}\n"
            f"shared prefix: {shared_prefix}"
        )
        if plan.dropped_per_epoch:
            console.print(f"[yellow]{plan.dropped_per_epoch} items per epoch do not fill a step and are left out of that epoch (the order changes every epoch)[/]")
