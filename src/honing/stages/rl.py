"""`honing rl`: online reinforcement learning (GRPO, PPO) from prompts and rewards.

    parse:  one process only (the config validated the rest when it loaded)
    build:  policy (+ adapter) ─▶ prompts (file:line errors or rejects; split) ─▶ rewards
            ─▶ reference (the adapter switched off, or a frozen copy) ─▶ value head (PPO) ─▶ objective
    train:  the RL loop (honing.rl.loop) on the shared engine's optimiser step and checkpoints
    save:   the model or adapter, the value head (PPO), samples.jsonl
    record: run.json — inputs with hashes, the rewards, the resolved plan and objective, final metrics

The algorithm lives in honing.rl (prompts, rollout, advantages, value head, loop) and the losses in
honing.train.objectives.policy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from honing.config import RLConfig
from honing.errors import HoningError
from honing.rl.loop import RLLoop, RLParts, RLState
from honing.runs import Run
from honing.train.distributed import Dist
from honing.ui import console


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


# --------------------------------------------------------------------------- build the parts


def setup(cfg: RLConfig, ctx: Dist) -> RLParts:
    """Load the policy, prompts and rewards; build the reference, the value head and the objective."""
    from honing.generate import stop_token_ids
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.rl.prompts import load_prompts
    from honing.rl.rewards import RewardSuite
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
    objective = _objective(cfg, model, ctx)
    tokenizer = loaded.tokenizer
    return RLParts(model, tokenizer, data, rewards, objective, reference_model, loaded.source,
                   tokenizer.pad_token_id, set(stop_token_ids(tokenizer, model)))


def _objective(cfg: RLConfig, model: Any, ctx: Dist):
    from honing.rl.value import build_value_head
    from honing.train.objectives.policy import PolicyObjective, SamplingTransform

    rl = cfg.rl
    value_head = build_value_head(model, ctx.device) if rl.algo == "ppo" else None
    objective = PolicyObjective(
        model, SamplingTransform(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p),
        value_head=value_head, clip_eps=rl.clip_eps, clip_eps_high=rl.clip_eps_high, kl_beta=rl.kl_beta,
        kl_estimator=rl.estimator, kl_in_loss=rl.placement == "loss", length_norm=rl.normalisation,
        max_new_tokens=cfg.rollout.max_new_tokens, vf_coef=rl.vf_coef, value_clip=rl.value_clip,
        entropy_coef=rl.entropy_coef,
    )
    objective.eval()  # no dropout anywhere in RL: the first ratio must be exactly 1 (see honing.rl.rollout)
    if cfg.train.shared_prefix == "auto":
        from honing.train.shared_prefix import unsupported_reason

        objective.shared_prefix = unsupported_reason(
            model, activation_checkpointing=cfg.train.activation_checkpointing, compile=cfg.train.compile,
            fsdp=ctx.enabled and cfg.train.distributed == "fsdp") is None
    return objective


# --------------------------------------------------------------------------- train, save, record


def train(cfg: RLConfig, parts: RLParts, ctx: Dist, resume: str | Path | None,
          after_step: Callable[[RLState], None] | None = None) -> dict[str, Any]:
    """Open (or reopen) the run, train, save the outputs and close the record."""
    run = _open_run(cfg, parts, resume)
    loop = RLLoop(cfg, parts, ctx, run, resume=bool(resume))
    record_settings(run, settings(cfg, parts, ctx))
    try:
        stopped = loop.run_steps(after_step)
    except BaseException as err:
        run.finish(status="diverged" if type(err).__name__ == "TrainingDiverged" else "failed")
        raise
    summary = loop.summary()
    if stopped == "interrupted":
        run.finish(status="interrupted", metrics=summary)
        console.print(f"stopped at RL step {loop.state.step}; continue with: honing rl --resume {run.dir}")
        return {"run_dir": str(run.dir), "status": "interrupted", **summary}
    outputs = save(cfg, parts, run)
    return record(run, summary, outputs)


def _open_run(cfg: RLConfig, parts: RLParts, resume: str | Path | None) -> Run:
    from honing.rl.rollout import collate_rollout
    from honing.runs import default_run_dir
    from honing.stages.common import StageParts, record_inputs

    if resume:
        return Run.open(resume)
    run = Run.create("rl", cfg, cfg.output.dir or default_run_dir("rl"))
    record_inputs(run, StageParts(parts.model, parts.tokenizer, parts.data, parts.data.train,
                                  parts.data.validation, collate_rollout, parts.model_source),
                  cfg.model.path, cfg.train.seed, cfg.data.split_seed)
    run.set("rewards", parts.rewards.describe())
    return run


def settings(cfg: RLConfig, parts: RLParts, ctx: Dist) -> dict[str, dict[str, Any]]:
    """What the run will do, defaults resolved: the plan (sizes, steps, precision) and the objective
    (KL placement and estimator, length normalisation, whitening, the reference)."""
    from honing.train.engine import uses_bf16

    rl, rollout = cfg.rl, cfg.rollout
    params = list(parts.objective.parameters())
    reference = ("none" if rl.kl_beta == 0 else "frozen copy" if parts.reference_model is not None
                 else "the adapter switched off")
    plan = {"parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "steps": rl.steps, "prompts_per_step": rollout.prompts_per_step, "group_size": rollout.group_size,
            "completions_per_step": rollout.prompts_per_step * rollout.group_size, "epochs": rl.epochs,
            "minibatches": rl.minibatches, "optimizer_steps": rl.steps * rl.epochs * rl.minibatches,
            "precision": "bf16 autocast" if uses_bf16(cfg.train.precision, ctx.device) else "fp32"}
    objective = {"algo": rl.algo, "kl_beta": rl.kl_beta, "kl_placement": rl.placement, "kl_estimator": rl.estimator,
                 "length_norm": rl.normalisation, "whiten_advantages": rl.whiten, "reference": reference,
                 "dropout": "off"}
    return {"plan": plan, "objective": objective}


def record_settings(run: Run, resolved: dict[str, dict[str, Any]]) -> None:
    """Write the resolved settings to run.json and say them, from the same values."""
    for key, value in resolved.items():
        run.set(key, value)
    plan, objective = resolved["plan"], resolved["objective"]
    beta = objective["kl_beta"]
    kl = (f"KL {objective['kl_estimator']} in the {objective['kl_placement']} (β={beta}, reference: "
          f"{objective['reference']})" if beta else "no KL (kl_beta=0)")
    console.print(
        f"{objective['algo']}: {plan['steps']} steps × {plan['completions_per_step']} completions "
        f"({plan['prompts_per_step']} prompts × {plan['group_size']}), {plan['epochs']} epoch(s) × "
        f"{plan['minibatches']} minibatch(es) per step; {plan['trainable_parameters']:,} of {plan['parameters']:,} "
        f"parameters trained; {kl}; length normalisation {objective['length_norm']}; advantages "
        f"{'whitened' if objective['whiten_advantages'] else 'not whitened'}; {plan['precision']}; dropout off "
        f"(rollout log-probs must match training's); run: {run.dir}"
    )


def save(cfg: RLConfig, parts: RLParts, run: Run) -> dict[str, str]:
    """The model (or adapter), the value head (PPO) and the samples; returns {role: path}."""
    from honing.models.save import save_model
    from honing.rl.value import save_value_head

    outputs = save_model(parts.model, parts.tokenizer, run.dir, save=cfg.output.save)
    if parts.objective.value_head is not None:
        outputs["value_head"] = str(save_value_head(parts.objective.value_head, run.dir))
    if (run.dir / "samples.jsonl").exists():
        outputs["samples"] = str(run.dir / "samples.jsonl")
    return outputs


def record(run: Run, summary: dict[str, Any], outputs: dict[str, str]) -> dict[str, Any]:
    """Close the run record with its outputs and final metrics."""
    for role, path in outputs.items():
        run.add_output(role, path)
    run.finish(status="completed", metrics=summary)
    console.print(f"[green]done[/] — {', '.join(f'{k}: {v}' for k, v in outputs.items())}; "
                  f"record: {run.dir / 'run.json'}")
    return {"run_dir": str(run.dir), "status": "completed", "outputs": outputs, **summary}


run = rl
