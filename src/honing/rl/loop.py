"""The RL loop over the shared engine: what an RL step does, and the run of steps around it.

    step:   prompts_for_step ─▶ sample group_size completions each (rl.rollout) ─▶ rewards
            ─▶ shaped scores ─▶ old, reference log-probs and values (one no-grad pass)
            ─▶ advantages (rl.advantages)
            ─▶ rl.epochs × rl.minibatches optimiser steps (train.engine.optimizer_step: precision,
               clipping, NaN policy, schedule)
    around: validation (greedy answers to held-out prompts, same rewards), samples.jsonl,
            checkpoints (train.checkpoint: atomic, keep_last), Ctrl-C ─▶ checkpoint ─▶ --resume
            continues exactly
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from honing.config import RLConfig
from honing.data.types import PreparedData
from honing.rl.advantages import RunningMoments, add_advantages, shape_scores
from honing.rl.prompts import prompts_for_step
from honing.rl.rewards import RewardSuite
from honing.rl.rollout import (
    Row,
    collate_rollout,
    generate_completions,
    old_outputs,
    rollout_rows,
    rollout_sampling,
    sample_completions,
    validation_sampling,
)
from honing.io import append_jsonl
from honing.runs import Run
from honing.train import checkpoint as ckpt
from honing.train.distributed import Dist
from honing.train.objectives.policy import PolicyObjective
from honing.ui import console, progress_bar


@dataclass
class RLParts:
    """Everything `honing rl` builds before training."""

    model: Any
    tokenizer: Any
    data: PreparedData
    rewards: RewardSuite
    objective: PolicyObjective
    reference_model: nn.Module | None  # a frozen copy (full fine-tuning); None: the adapter switched off, or no KL
    model_source: dict[str, Any]
    pad_id: int
    stops: set[int]


@dataclass
class RLState:
    """The loop's counters; saved in every checkpoint."""

    step: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0
    reward_moments: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def rollout_step(parts: RLParts, cfg: RLConfig, state: RLState, moments: RunningMoments,
                 ctx: Dist) -> tuple[list[Row], dict[str, Any], list[dict[str, Any]]]:
    """Sample, score and prepare one step's rows; returns (rows, metrics, samples)."""
    chosen = prompts_for_step(len(parts.data.train), cfg.rollout.prompts_per_step, state.step, cfg.train.seed)
    completions = sample_completions(parts.model, parts.tokenizer, [parts.data.train[i] for i in chosen],
                                     rollout_sampling(cfg.rollout), parts.stops, group_size=cfg.rollout.group_size,
                                     batch_size=cfg.rollout.batch_size, seed=cfg.train.seed * 1_000_003 + state.step)
    records = [it.record for it in completions.items]
    scored = parts.rewards([it.prompt for it in completions.items], completions.texts, records, completions.lengths)
    scores = shape_scores(scored.total, completions.truncated, cfg, moments)  # (N,)
    rows = rollout_rows(completions)
    old_outputs(parts.objective, rows, parts.pad_id, cfg.train.micro_batch_size, parts.reference_model,
                cfg.rl.kl_beta > 0, cfg.train.precision, ctx.device)
    extra = add_advantages(rows, scores, cfg)
    metrics = {
        "reward_mean": statistics.fmean(scored.total), "reward_std": statistics.pstdev(scored.total),
        **{f"reward_{name}": statistics.fmean(values) for name, values in scored.terms.items()},
        "length_mean": statistics.fmean(completions.lengths), "truncated_rate": statistics.fmean(completions.truncated),
        "rollout_s": completions.seconds, **extra,
    }
    shown = 2 * cfg.rollout.group_size  # the first two prompts' groups
    samples = [{"step": state.step + 1, "prompt": item.prompt, "completion": text, "reward": total,
                **{f"reward_{name}": values[k] for name, values in scored.terms.items()}}
               for k, (item, text, total) in enumerate(zip(completions.items, completions.texts, scored.total))
               if k < shown]
    return rows, metrics, samples


def optimise(parts: RLParts, rows: list[Row], cfg: RLConfig, state: RLState, optimizer, scheduler, ctx: Dist,
             checkpoints: Path) -> dict[str, float]:
    """rl.epochs passes over the rows, each split into rl.minibatches shuffled optimiser steps."""
    from honing.train.engine import optimizer_step

    keys = [k for k in PolicyObjective.input_keys if k in rows[0]]
    per_minibatch = len(rows) // cfg.rl.minibatches
    micro = cfg.train.micro_batch_size
    totals: dict[str, list[float]] = {}
    for epoch in range(cfg.rl.epochs):
        generator = torch.Generator().manual_seed(cfg.train.seed * 7919 + state.step * 131 + epoch)
        order = torch.randperm(len(rows), generator=generator).tolist()
        for m in range(cfg.rl.minibatches):
            picked = [rows[i] for i in order[m * per_minibatch:(m + 1) * per_minibatch]]
            batches = [collate_rollout([{k: r[k] for k in keys} for r in picked[s:s + micro]], parts.pad_id)
                       for s in range(0, len(picked), micro)]
            result = optimizer_step(parts.objective, batches, optimizer, scheduler, cfg.train, ctx,
                                    where=f"RL step {state.step + 1}", checkpoints=checkpoints)
            state.skipped_steps += not result["finite"]
            state.optimizer_steps += 1
            for name, value in {"loss": result["loss"], "grad_norm": result["grad_norm"], **result["metrics"]}.items():
                totals.setdefault(name, []).append(value)
    return {name: statistics.fmean(values) for name, values in totals.items()}


@torch.no_grad()
def validate(parts: RLParts, cfg: RLConfig) -> dict[str, float]:
    """Greedy answers to the held-out prompts, scored by the same rewards (no shaping)."""
    items = parts.data.validation[: cfg.rl.eval_prompts]
    if not items:
        return {}
    completions = generate_completions(parts.model, parts.tokenizer, [it.ids for it in items],
                                       validation_sampling(cfg.rollout), batch_size=cfg.rollout.batch_size)
    tokens = [group[0] for group in completions]
    texts = [parts.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    scored = parts.rewards([it.prompt for it in items], texts, [it.record for it in items], [len(t) for t in tokens])
    return {"val_reward": statistics.fmean(scored.total),
            **{f"val_{name}": statistics.fmean(values) for name, values in scored.terms.items()},
            "val_length": statistics.fmean(len(t) for t in tokens),
            "val_truncated_rate": statistics.fmean(not t or t[-1] not in parts.stops for t in tokens)}


class RLLoop:
    """One RL run in progress: the optimiser and schedule (train.optim), the checkpoint store
    (train.checkpoint), the counters and the running reward moments."""

    def __init__(self, cfg: RLConfig, parts: RLParts, ctx: Dist, run: Run, *, resume: bool):
        from honing.train.optim import build_optimizer, build_scheduler

        self.cfg, self.parts, self.ctx, self.run = cfg, parts, ctx, run
        self.optimizer = build_optimizer(parts.objective, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, cfg.rl.steps * cfg.rl.epochs * cfg.rl.minibatches)
        # The objective is checkpointed whole: the policy's trainable weights and (PPO) the value head.
        self.store = ckpt.Checkpoints(run.dir / "checkpoints", parts.objective, parts.objective, cfg.train, ctx)
        self.state, self.moments = RLState(), RunningMoments()
        if resume:
            self.state = ckpt.resume_latest(self.store, self.optimizer, self.scheduler, run,
                                            lambda saved: RLState(**saved))
            self.moments.load_state_dict(self.state.reward_moments or RunningMoments().state_dict())

    def checkpoint(self) -> None:
        self.state.reward_moments = self.moments.state_dict()
        self.store.save(f"step-{self.state.step:08d}", self.optimizer, self.scheduler, self.state)

    def evaluate(self) -> None:
        result = validate(self.parts, self.cfg)
        if result:
            self.state.history.append({"step": self.state.step, **result})
            self.run.log_metrics(self.state.step, result)
            console.print(f"step {self.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))

    def step(self) -> tuple[dict[str, Any], int]:
        """One RL step: rollouts, then the optimiser steps on them; returns (metrics, tokens)."""
        cfg, state = self.cfg, self.state
        lr = self.scheduler.get_last_lr()[0]
        rows, metrics, samples = rollout_step(self.parts, cfg, state, self.moments, self.ctx)
        started = time.perf_counter()
        metrics.update(optimise(self.parts, rows, cfg, state, self.optimizer, self.scheduler, self.ctx, self.store.root))
        metrics["train_s"] = time.perf_counter() - started
        state.step += 1
        if state.step % cfg.train.log_every == 0 or state.step == cfg.rl.steps:
            self.run.log_metrics(state.step, {"lr": lr, **metrics})
        if cfg.rl.sample_every and state.step % cfg.rl.sample_every == 0:
            append_jsonl(self.run.dir / "samples.jsonl", samples)
        return {"lr": lr, **metrics}, sum(int(r["attention_mask"].sum()) for r in rows)

    def run_steps(self, after_step: Callable[[RLState], None] | None = None) -> str:
        """Steps until rl.steps or Ctrl-C (checkpointed); returns completed or interrupted."""
        from honing.interrupt import StopRequest

        cfg, state = self.cfg, self.state
        eval_every = cfg.rl.eval_every
        if state.step == 0 and eval_every:
            self.evaluate()
        started = time.perf_counter() - state.elapsed_s
        with progress_bar(cfg.rl.steps, metric="reward") as bar, StopRequest() as stop:
            task = bar.add_task("rl", total=cfg.rl.steps, completed=state.step, loss=float("nan"), lr=0.0, tps=0.0)
            while state.step < cfg.rl.steps:
                metrics, tokens = self.step()
                state.elapsed_s = time.perf_counter() - started
                bar.update(task, completed=state.step, loss=metrics["reward_mean"], lr=metrics["lr"],
                           tps=tokens / max(metrics["rollout_s"] + metrics["train_s"], 1e-9))
                if (eval_every and state.step % eval_every == 0) or state.step == cfg.rl.steps:
                    self.evaluate()
                if (cfg.train.save_every and state.step % cfg.train.save_every == 0) or stop.requested:
                    self.checkpoint()
                if after_step is not None:
                    after_step(state)
                if stop.requested:
                    return "interrupted"
        return "completed"

    def summary(self) -> dict[str, Any]:
        """The run's final metrics: counters, the last validation and the first (first_*)."""
        state = self.state
        summary = {"steps": state.step, "optimizer_steps": state.optimizer_steps,
                   "skipped_steps": state.skipped_steps, "train_seconds": round(state.elapsed_s, 2)}
        if state.history:
            summary.update({k: v for k, v in state.history[-1].items() if k != "step"})
            summary.update({f"first_{k}": v for k, v in state.history[0].items() if k != "step"})
        return summary
