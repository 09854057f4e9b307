"""`honing rl`: online reinforcement learning (GRPO, PPO) from prompts and rewards.

    setup:  policy (+ adapter) ─▶ prompts (file:line errors or rejects; split) ─▶ rewards
            ─▶ reference (the adapter switched off, or a frozen copy) ─▶ value head (PPO)
    step:   prompts ─▶ sample group_size completions each (shared generation) ─▶ rewards
            ─▶ old, reference log-probs and values (one no-grad pass) ─▶ advantages
            ─▶ epochs × minibatches optimiser steps through the shared engine's train_step
    around: validation (greedy answers to held-out prompts, same rewards), samples.jsonl,
            atomic checkpoints, Ctrl-C ─▶ checkpoint ─▶ --resume continues exactly

Dropout stays off for the whole run, so log-probs of the policy before its first update equal
the rollout's old log-probs and the first ratio is exactly 1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from honing.config import RLConfig, SamplingConfig
from honing.data.types import PreparedData, Reject
from honing.errors import DataError, HoningError
from honing.rl.rewards import RewardSuite
from honing.runs import Run
from honing.train import checkpoint as ckpt
from honing.train.distributed import Dist
from honing.train.objectives.policy import (
    PolicyObjective,
    RunningMoments,
    SamplingTransform,
    gae,
    group_advantages,
    masked_whiten,
    token_outputs,
)
from honing.ui import console, progress_bar


@dataclass
class PromptItem:
    record: dict[str, Any]
    prompt: str | list[dict[str, Any]]
    ids: list[int]


@dataclass
class RLState:
    """The loop's counters; saved in every checkpoint."""

    step: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0
    reward_moments: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- prompts


def load_prompts(cfg: RLConfig, tokenizer: Any) -> PreparedData:
    """Prompt items for training and validation, each tokenised as generation renders it."""
    from honing.data.split import split_records
    from honing.runs import file_sha256
    from honing.rl.tasks import BUILTIN

    rejects: list[Reject] = []
    if cfg.data.prompts in BUILTIN:
        generated = BUILTIN[cfg.data.prompts](cfg.data.builtin_examples, cfg.data.split_seed)
        records = [(cfg.data.prompts, i + 1, r) for i, r in enumerate(generated)]
        digest = hashlib.sha256("".join(json.dumps(r, sort_keys=True) + "\n" for r in generated).encode()).hexdigest()
        inputs = [{"role": "prompts", "path": cfg.data.prompts, "sha256": digest,
                   "generator": {"examples": cfg.data.builtin_examples, "seed": cfg.data.split_seed}}]
    else:
        records = list(_read(cfg.data.prompts))
        inputs = [{"role": "prompts", "path": cfg.data.prompts, "sha256": file_sha256(cfg.data.prompts)}]
    train = _tokenise(records, cfg, tokenizer, rejects)
    if cfg.data.validation:
        validation = _tokenise(list(_read(cfg.data.validation)), cfg, tokenizer, rejects)
        inputs.append({"role": "validation", "path": cfg.data.validation, "sha256": file_sha256(cfg.data.validation)})
    else:
        train, validation = split_records(train, cfg.data.validation_split, cfg.data.split_seed)
    if not train:
        raise DataError(f"{cfg.data.prompts}: no prompt is left to train on")
    stats = {"records": len(records), "rejected": len(rejects), "train_examples": len(train),
             "validation_examples": len(validation), "prompt_tokens": sum(len(p.ids) for p in train)}
    return PreparedData(train, validation, "prompts", inputs, rejects, stats)


def _read(path: str):
    from honing.data.loading import read_records

    if not Path(path).exists():
        raise DataError(f"{path} does not exist")
    if Path(path).suffix.lower() == ".txt":
        for line, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if text.strip():
                yield path, line, {"prompt": text.strip()}
        return
    yield from read_records(path)


def _tokenise(records, cfg: RLConfig, tokenizer: Any, rejects: list[Reject]) -> list[PromptItem]:
    from honing.generate import encode_prompts
    from honing.stages.generate import prompt_of

    items = []
    for file, line, record in records:
        try:
            prompt = prompt_of(record, f"{file}:{line}")
            ids = encode_prompts(tokenizer, [prompt], system_prompt=cfg.data.system_prompt)[0]
            if len(ids) > cfg.data.max_prompt_tokens:
                raise DataError(f"{file}:{line}: the prompt has {len(ids)} tokens, more than "
                                f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}")
        except DataError as err:
            reason = str(err).removeprefix(f"{file}:{line}: ")
            if cfg.data.on_bad_record != "skip":
                raise DataError(f"{file}:{line}: {reason}") from None
            rejects.append(Reject(file, line, reason, record))
            continue
        items.append(PromptItem(record if isinstance(record, dict) else {"prompt": record}, prompt, ids))
    return items


def prompts_for_step(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """The prompts of an RL step: consecutive positions in seeded epoch orders, so a resumed run
    takes the same prompts as an uninterrupted one."""
    from honing.train.engine import epoch_order

    orders: dict[int, list[int]] = {}
    chosen = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, position = divmod(k, n_items)
        if epoch not in orders:
            orders[epoch] = epoch_order(n_items, seed, epoch)
        chosen.append(orders[epoch][position])
    return chosen


# --------------------------------------------------------------------------- rollouts


def collate_rollout(rows: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) tensors of every key the rows carry (input_ids padded with pad_id, the rest with 0)."""
    T = max(len(value) for r in rows for value in r.values())
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else 0
        out = torch.full((len(rows), T), fill, dtype=rows[0][key].dtype)
        for i, r in enumerate(rows):
            out[i, : len(r[key])] = r[key]
        batch[key] = out
    return batch


@torch.no_grad()
def old_outputs(objective: PolicyObjective, rows: list[dict[str, torch.Tensor]], pad_id: int, micro_batch_size: int,
                reference_model: nn.Module | None, with_reference: bool, precision: str,
                device: torch.device) -> None:
    """Add old_logps, ref_logps (when with_reference) and old_values (PPO) to every row, in place."""
    from honing.train.engine import autocast_context

    policy = objective.model
    for start in range(0, len(rows), micro_batch_size):
        chunk = rows[start:start + micro_batch_size]
        batch = {k: v.to(device) for k, v in collate_rollout(chunk, pad_id).items()}
        args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"], objective.transform)
        with autocast_context(precision, device):
            current = token_outputs(policy, *args, value_head=objective.value_head)
            reference = None
            if with_reference:
                if reference_model is not None:
                    reference = token_outputs(reference_model, *args)
                else:
                    with policy.disable_adapter():
                        reference = token_outputs(policy, *args)
        for i, row in enumerate(chunk):
            n = len(row["input_ids"])
            row["old_logps"] = current.logps[i, :n].float().cpu()
            if reference is not None:
                row["ref_logps"] = reference.logps[i, :n].float().cpu()
            if current.values is not None:
                row["old_values"] = current.values[i, :n].float().cpu()


def add_advantages(rows: list[dict[str, torch.Tensor]], scores: torch.Tensor, cfg: RLConfig) -> dict[str, float]:
    """Turn sequence scores (N,) into per-token advantages (and PPO returns) on every row, in place."""
    from honing.train.objectives.kl import kl_estimate

    rl = cfg.rl
    kl_in_reward = rl.placement == "reward" and rl.kl_beta > 0
    stats: dict[str, float] = {}
    if rl.algo == "grpo":
        if kl_in_reward:
            penalties = torch.stack([
                (kl_estimate(r["old_logps"], r["ref_logps"], r["response_mask"], rl.estimator)).sum() for r in rows])
            scores = scores - rl.kl_beta * penalties
        advantages = group_advantages(scores, cfg.rollout.group_size, rl.scale_rewards)  # (N,)
        grouped = scores.view(-1, cfg.rollout.group_size)
        stats["groups_with_signal"] = float((grouped.std(dim=1) > 0).float().mean())
        if rl.whiten:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        for row, advantage in zip(rows, advantages.tolist()):
            row["advantages"] = row["response_mask"].float() * advantage
        return stats
    batch = collate_rollout([{k: r[k] for k in ("response_mask", "old_logps", "old_values", *(
        ("ref_logps",) if kl_in_reward else ()))} for r in rows], 0)
    mask = batch["response_mask"].float()
    mask[:, 0] = 0.0
    token_rewards = torch.zeros_like(mask)
    if kl_in_reward:
        token_rewards -= rl.kl_beta * kl_estimate(batch["old_logps"], batch["ref_logps"], mask, rl.estimator)
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)  # (N,) each completion's last token
    token_rewards[torch.arange(len(rows)), last] += scores
    advantages, returns = gae(token_rewards, batch["old_values"], mask, rl.gamma, rl.lam)
    if rl.whiten:
        advantages = masked_whiten(advantages, mask)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        row["advantages"], row["returns"] = advantages[i, :n], returns[i, :n]
    values = batch["old_values"][mask.bool()]
    explained = 1 - float((returns[mask.bool()] - values).var() / returns[mask.bool()].var().clamp(min=1e-8))
    stats["value_explained_variance"] = explained
    return stats


def shape_scores(raw: list[float], truncated: list[bool], cfg: RLConfig, moments: RunningMoments) -> torch.Tensor:
    """Scores as the objective sees them: the missing-stop penalty, running normalisation, clipping."""
    scores = torch.tensor(raw, dtype=torch.float32)
    scores -= cfg.rl.missing_eos_penalty * torch.tensor(truncated, dtype=torch.float32)
    if cfg.rl.normalize_rewards:
        moments.update(scores)
        scores = (scores - moments.mean) / (moments.std + 1e-8)
    if cfg.rl.reward_clip is not None:
        scores = scores.clamp(-cfg.rl.reward_clip, cfg.rl.reward_clip)
    return scores


# --------------------------------------------------------------------------- setup


@dataclass
class RLParts:
    model: Any
    tokenizer: Any
    data: PreparedData
    rewards: RewardSuite
    objective: PolicyObjective
    reference_model: nn.Module | None
    model_source: dict[str, Any]
    pad_id: int
    stops: set[int]


def setup(cfg: RLConfig, ctx: Dist) -> RLParts:
    from honing.generate import stop_token_ids
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.train.checkpoint import seed_everything

    loaded = load_model(cfg.model, device=ctx.device, adapter=cfg.adapter)
    data = load_prompts(cfg, loaded.tokenizer)
    console.print(f"prompts: {len(data.train)} for training, {len(data.validation)} held out for validation")
    if data.rejects:
        first = data.rejects[0]
        console.print(f"[yellow]{len(data.rejects)} records rejected (first: {first.where()}: {first.reason}); "
                      "see rejects.jsonl[/]")
    rewards = RewardSuite(cfg.rewards, batch_size=cfg.rollout.batch_size, system_prompt=cfg.data.system_prompt)
    seed_everything(cfg.train.seed)
    model = apply_adapter(loaded.model, cfg.adapter)
    model.to(ctx.device)
    reference_model = None
    if cfg.rl.kl_beta > 0 and not hasattr(model, "disable_adapter"):
        # Full fine-tuning: the reference is a frozen copy of the starting weights.
        reference_model = copy.deepcopy(model).requires_grad_(False).eval()
    value_head = None
    if cfg.rl.algo == "ppo":
        from honing.train.objectives.causal_lm import causal_lm_of

        value_head = nn.Linear(causal_lm_of(model).config.hidden_size, 1).to(ctx.device)
        nn.init.zeros_(value_head.weight)
        nn.init.zeros_(value_head.bias)
    rl = cfg.rl
    objective = PolicyObjective(
        model, SamplingTransform(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p),
        value_head=value_head, clip_eps=rl.clip_eps, clip_eps_high=rl.clip_eps_high, kl_beta=rl.kl_beta,
        kl_estimator=rl.estimator, kl_in_loss=rl.placement == "loss", length_norm=rl.normalisation,
        max_new_tokens=cfg.rollout.max_new_tokens, vf_coef=rl.vf_coef, value_clip=rl.value_clip,
        entropy_coef=rl.entropy_coef,
    )
    objective.eval()  # no dropout anywhere in RL (see the module docstring)
    tokenizer = loaded.tokenizer
    return RLParts(model, tokenizer, data, rewards, objective, reference_model, loaded.source,
                   tokenizer.pad_token_id, set(stop_token_ids(tokenizer, model)))


# --------------------------------------------------------------------------- the loop


def rollout_step(parts: RLParts, cfg: RLConfig, state: RLState, moments: RunningMoments,
                 ctx: Dist) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any], list[dict[str, Any]]]:
    """Sample, score and prepare one step's rows; returns (rows, metrics, samples)."""
    from honing.generate import sample_tokens

    G = cfg.rollout.group_size
    chosen = prompts_for_step(len(parts.data.train), cfg.rollout.prompts_per_step, state.step, cfg.train.seed)
    items = [parts.data.train[i] for i in chosen]
    sampling = SamplingConfig(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                              top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k)
    started = time.perf_counter()
    completions = sample_tokens(parts.model, parts.tokenizer, [it.ids for it in items], sampling, samples=G,
                                batch_size=cfg.rollout.batch_size, seed=cfg.train.seed * 1_000_003 + state.step)
    rollout_s = time.perf_counter() - started
    flat = [(item, tokens) for item, group in zip(items, completions) for tokens in group]
    texts = [parts.tokenizer.decode(tokens, skip_special_tokens=True).strip() for _, tokens in flat]
    lengths = [len(tokens) for _, tokens in flat]
    truncated = [not tokens or tokens[-1] not in parts.stops for _, tokens in flat]
    scored = parts.rewards([it.prompt for it, _ in flat], texts, [it.record for it, _ in flat], lengths)
    scores = shape_scores(scored.total, truncated, cfg, moments)
    rows = []
    for item, tokens in flat:
        ids = torch.tensor(item.ids + tokens, dtype=torch.long)
        response = torch.zeros(len(ids), dtype=torch.long)
        response[len(item.ids):] = 1
        rows.append({"input_ids": ids, "attention_mask": torch.ones(len(ids), dtype=torch.long), "response_mask": response})
    old_outputs(parts.objective, rows, parts.pad_id, cfg.train.micro_batch_size, parts.reference_model,
                cfg.rl.kl_beta > 0, cfg.train.precision, ctx.device)
    extra = add_advantages(rows, scores, cfg)
    metrics = {
        "reward_mean": statistics.fmean(scored.total), "reward_std": statistics.pstdev(scored.total),
        **{f"reward_{name}": statistics.fmean(values) for name, values in scored.terms.items()},
        "length_mean": statistics.fmean(lengths), "truncated_rate": statistics.fmean(truncated),
        "rollout_s": rollout_s, **extra,
    }
    samples = [{"step": state.step + 1, "prompt": item.prompt, "completion": text, "reward": total,
                **{f"reward_{name}": values[k] for name, values in scored.terms.items()}}
               for k, ((item, _), text, total) in enumerate(zip(flat, texts, scored.total)) if k < 2 * G]
    return rows, metrics, samples


def optimise(parts: RLParts, rows: list[dict[str, torch.Tensor]], cfg: RLConfig, state: RLState, optimizer,
             scheduler, ctx: Dist) -> dict[str, float]:
    """rl.epochs passes over the rows, each split into rl.minibatches shuffled optimiser steps."""
    from honing.train.engine import TrainingDiverged, train_step

    keys = [k for k in PolicyObjective.input_keys if k in rows[0]]
    per_minibatch = len(rows) // cfg.rl.minibatches
    totals: dict[str, list[float]] = {}
    for epoch in range(cfg.rl.epochs):
        generator = torch.Generator().manual_seed(cfg.train.seed * 7919 + state.step * 131 + epoch)
        order = torch.randperm(len(rows), generator=generator).tolist()
        for m in range(cfg.rl.minibatches):
            picked = [rows[i] for i in order[m * per_minibatch:(m + 1) * per_minibatch]]
            micro = [collate_rollout([{k: r[k] for k in keys} for r in picked[s:s + cfg.train.micro_batch_size]],
                                     parts.pad_id) for s in range(0, len(picked), cfg.train.micro_batch_size)]
            result = train_step(parts.objective, micro, optimizer, cfg.train, ctx)
            if not result["finite"]:
                if cfg.train.on_nan == "stop":
                    raise TrainingDiverged(f"loss became {result['loss']} at RL step {state.step + 1}; "
                                           "the last good checkpoint is intact (train.on_nan=skip skips such steps)")
                state.skipped_steps += 1
            scheduler.step()
            state.optimizer_steps += 1
            for name, value in {"loss": result["loss"], "grad_norm": result["grad_norm"], **result["metrics"]}.items():
                totals.setdefault(name, []).append(value)
    return {name: statistics.fmean(values) for name, values in totals.items()}


@torch.no_grad()
def validate(parts: RLParts, cfg: RLConfig) -> dict[str, float]:
    """Greedy answers to the held-out prompts, scored by the same rewards (no shaping)."""
    from honing.generate import sample_tokens

    items = parts.data.validation[: cfg.rl.eval_prompts]
    if not items:
        return {}
    sampling = SamplingConfig(max_new_tokens=cfg.rollout.eval_max_new_tokens or cfg.rollout.max_new_tokens,
                              temperature=0.0)
    completions = sample_tokens(parts.model, parts.tokenizer, [it.ids for it in items], sampling,
                                batch_size=cfg.rollout.batch_size)
    tokens = [group[0] for group in completions]
    texts = [parts.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    scored = parts.rewards([it.prompt for it in items], texts, [it.record for it in items], [len(t) for t in tokens])
    result = {"val_reward": statistics.fmean(scored.total),
              **{f"val_{name}": statistics.fmean(values) for name, values in scored.terms.items()},
              "val_length": statistics.fmean(len(t) for t in tokens),
              "val_truncated_rate": statistics.fmean(not t or t[-1] not in parts.stops for t in tokens)}
    return result


def rl(cfg: RLConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train with GRPO or PPO; returns the run directory, outputs and final metrics (val_reward, ...)."""
    from honing.train.distributed import setup as join, teardown

    ctx = join()
    try:
        if ctx.world_size > 1:
            raise HoningError("honing rl runs in one process; launch it without torchrun")
        parts = setup(cfg, ctx)
        return train(cfg, parts, ctx, resume)
    finally:
        teardown(ctx)


def train(cfg: RLConfig, parts: RLParts, ctx: Dist, resume: str | Path | None,
          after_step: Callable[[RLState], None] | None = None) -> dict[str, Any]:
    from honing.runs import default_run_dir
    from honing.stages.common import StageParts, record_inputs
    from honing.train.engine import truncate_metrics
    from honing.train.optim import build_optimizer, build_scheduler

    run = Run.open(resume) if resume else Run.create("rl", cfg, cfg.output.dir or default_run_dir("rl"))
    optimizer = build_optimizer(parts.objective, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.rl.steps * cfg.rl.epochs * cfg.rl.minibatches)
    session = Session(cfg, parts, ctx, run, optimizer, scheduler)
    if resume:
        latest = ckpt.latest_checkpoint(session.store)
        if latest is None:
            raise HoningError(f"no checkpoint to resume from in {session.store}")
        session.state = RLState(**ckpt.load_checkpoint(latest, model=parts.objective, optimizer=optimizer,
                                                       scheduler=scheduler, restore_rng=True))
        session.moments.load_state_dict(session.state.reward_moments or RunningMoments().state_dict())
        truncate_metrics(run.dir / "metrics.jsonl", session.state.step)
        console.print(f"resumed from {latest} (RL step {session.state.step})")
    else:
        record_inputs(run, StageParts(parts.model, parts.tokenizer, parts.data, parts.data.train,
                                      parts.data.validation, collate_rollout, parts.model_source),
                      cfg.model.path, cfg.train.seed, cfg.data.split_seed)
        run.set("rewards", parts.rewards.describe())
    _describe(parts, cfg, run)
    try:
        return session.loop(after_step)
    except BaseException as err:
        run.finish(status="diverged" if type(err).__name__ == "TrainingDiverged" else "failed")
        raise


@dataclass
class Session:
    """One RL run in progress: what the loop reads and updates, and what a checkpoint saves."""

    cfg: RLConfig
    parts: RLParts
    ctx: Dist
    run: Run
    optimizer: Any
    scheduler: Any
    state: RLState = field(default_factory=RLState)
    moments: RunningMoments = field(default_factory=RunningMoments)

    @property
    def store(self) -> Path:
        return self.run.dir / "checkpoints"

    def checkpoint(self) -> None:
        self.state.reward_moments = self.moments.state_dict()
        ckpt.save_checkpoint(self.store, f"step-{self.state.step:08d}", model=self.parts.objective,
                             optimizer=self.optimizer, scheduler=self.scheduler, trainer_state=asdict(self.state))
        ckpt.prune_checkpoints(self.store, self.cfg.train.keep_last)

    def evaluate(self) -> None:
        result = validate(self.parts, self.cfg)
        if result:
            self.state.history.append({"step": self.state.step, **result})
            self.run.log_metrics(self.state.step, result)
            console.print(f"step {self.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))

    def loop(self, after_step: Callable[[RLState], None] | None) -> dict[str, Any]:
        from honing.train.engine import StopRequest

        cfg, parts, state, run = self.cfg, self.parts, self.state, self.run
        eval_every = cfg.rl.eval_every
        if state.step == 0 and eval_every:
            self.evaluate()
        stopped = "completed"
        started = time.perf_counter() - state.elapsed_s
        with progress_bar(cfg.rl.steps, metric="reward") as bar, StopRequest() as stop:
            task = bar.add_task("rl", total=cfg.rl.steps, completed=state.step, loss=float("nan"), lr=0.0, tps=0.0)
            while state.step < cfg.rl.steps:
                lr = self.scheduler.get_last_lr()[0]
                rows, metrics, samples = rollout_step(parts, cfg, state, self.moments, self.ctx)
                step_started = time.perf_counter()
                metrics.update(optimise(parts, rows, cfg, state, self.optimizer, self.scheduler, self.ctx))
                metrics["train_s"] = time.perf_counter() - step_started
                state.step += 1
                state.elapsed_s = time.perf_counter() - started
                if state.step % cfg.train.log_every == 0 or state.step == cfg.rl.steps:
                    run.log_metrics(state.step, {"lr": lr, **metrics})
                if cfg.rl.sample_every and state.step % cfg.rl.sample_every == 0:
                    with (run.dir / "samples.jsonl").open("a", encoding="utf-8") as handle:
                        for sample in samples:
                            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
                tokens = sum(int(r["attention_mask"].sum()) for r in rows)
                bar.update(task, completed=state.step, loss=metrics["reward_mean"], lr=lr,
                           tps=tokens / max(metrics["rollout_s"] + metrics["train_s"], 1e-9))
                if (eval_every and state.step % eval_every == 0) or state.step == cfg.rl.steps:
                    self.evaluate()
                if (cfg.train.save_every and state.step % cfg.train.save_every == 0) or stop.requested:
                    self.checkpoint()
                if after_step is not None:
                    after_step(state)
                if stop.requested:
                    stopped = "interrupted"
                    break
        return self.finish(stopped)

    def finish(self, stopped: str) -> dict[str, Any]:
        """Save the model (and the value head) and close the record; an interrupted run keeps its checkpoint."""
        from honing.models.save import save_model

        state, run = self.state, self.run
        summary = {"steps": state.step, "optimizer_steps": state.optimizer_steps,
                   "skipped_steps": state.skipped_steps, "train_seconds": round(state.elapsed_s, 2)}
        if state.history:
            summary.update({k: v for k, v in state.history[-1].items() if k != "step"})
            summary.update({f"first_{k}": v for k, v in state.history[0].items() if k != "step"})
        if stopped == "interrupted":
            run.finish(status="interrupted", metrics=summary)
            console.print(f"stopped at RL step {state.step}; continue with: honing rl --resume {run.dir}")
            return {"run_dir": str(run.dir), "status": "interrupted", **summary}
        outputs = save_model(self.parts.model, self.parts.tokenizer, run.dir, save=self.cfg.output.save)
        head = self.parts.objective.value_head
        if head is not None:
            from safetensors.torch import save_file

            path = run.dir / "value_head.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
            outputs["value_head"] = str(path)
        if (run.dir / "samples.jsonl").exists():
            outputs["samples"] = str(run.dir / "samples.jsonl")
        for role, path in outputs.items():
            run.add_output(role, path)
        run.finish(status="completed", metrics=summary)
        console.print(f"[green]done[/] — {', '.join(f'{k}: {v}' for k, v in outputs.items())}; "
                      f"record: {run.dir / 'run.json'}")
        return {"run_dir": str(run.dir), "status": "completed", "outputs": outputs, **summary}


def _describe(parts: RLParts, cfg: RLConfig, run: Run) -> None:
    total = sum(p.numel() for p in parts.objective.parameters())
    trainable = sum(p.numel() for p in parts.objective.parameters() if p.requires_grad)
    rl = cfg.rl
    rows = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    reference = ("none (kl_beta=0)" if rl.kl_beta == 0 else "frozen copy" if parts.reference_model is not None
                 else "the adapter switched off")
    console.print(
        f"{rl.algo}: {rl.steps} steps × {rows} completions ({cfg.rollout.prompts_per_step} prompts × "
        f"{cfg.rollout.group_size}), {rl.epochs} epoch(s) × {rl.minibatches} minibatch(es) per step; "
        f"{trainable:,} of {total:,} parameters trained; KL {rl.estimator} in the {rl.placement} "
        f"(β={rl.kl_beta}, reference: {reference}); length normalisation {rl.normalisation}; dropout off "
        f"(rollout log-probs must match training's); run: {run.dir}"
    )


run = rl
