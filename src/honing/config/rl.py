"""Config of `honing rl`: prompts, rollouts, rewards and the GRPO/PPO objective."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.model import AdapterConfig, ModelConfig, starts_from_trained
from honing.config.output import OutputConfig
from honing.config.train import TrainConfig
from honing.config.evaluation import JudgeConfig


class RLDataConfig(StrictModel):
    """The prompts RL samples from. Each record has a prompt (`prompt`, `messages` or `instruction`)
    and whatever fields its verifiers read (e.g. `answer`)."""

    prompts: str | None = None
    """A .jsonl/.json/.csv/.parquet file or a .txt file of prompts, or builtin:arithmetic (a procedurally
    generated arithmetic task with `answer` fields; see builtin_examples)."""
    validation: str | None = None
    """Held-out prompts for validation; null splits `validation_split` off the prompts, deterministically."""
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the prompts held out when no validation file is given."""
    split_seed: int = 0
    """Seed of the split and of builtin prompt generation."""
    builtin_examples: int = Field(600, ge=10)
    """How many prompts builtin:arithmetic generates."""
    max_prompt_tokens: int = Field(256, ge=1)
    """Longest prompt; longer ones are rejected (a truncated prompt is a different question), not cut."""
    system_prompt: str | None = None
    """System message added to prompts that have none."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """fail: stop at the first invalid record (file:line); skip: write it to rejects.jsonl and go on."""


class RolloutConfig(StrictModel):
    """How completions are sampled. The log-probabilities in the loss apply the same temperature,
    top-k and top-p as the sampler, so the ratio compares like with like."""

    prompts_per_step: int = Field(8, ge=1)
    """Prompts per RL step."""
    group_size: int = Field(8, ge=1)
    """Completions sampled per prompt (GRPO compares them with each other; PPO usually takes 1)."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest completion; one that reaches it without a stop token is 'truncated'."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature (RL must sample: 0 is not allowed)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens; 0 disables."""
    batch_size: int = Field(32, ge=1)
    """Sequences generated together."""
    eval_max_new_tokens: int | None = Field(None, ge=1)
    """Longest answer in validation (greedy); default max_new_tokens."""


class RewardSpec(StrictModel):
    """One reward term; the reward of a completion is the weighted sum of its terms."""

    kind: Literal["exact_match", "numeric", "regex", "json_schema", "length_penalty", "function", "reward_model", "judge"]
    """exact_match: 1 if the completion (stripped, case-folded) equals the record's `field`; numeric: 1 if the
    last number in the completion equals the record's `field` within `tolerance`; regex: 1 if `pattern` matches;
    json_schema: 1 if the completion is JSON valid against `schema`; length_penalty: −max(0, tokens − max_tokens)
    / max_tokens; function: a `module:function(prompt, completion, record) -> float`; reward_model: the score of a
    model trained by `honing reward`; judge: a judge model's 1–10 grade against `rubric`, scaled to [0, 1]."""
    name: str | None = None
    """Name in logs (default: kind)."""
    weight: float = 1.0
    """Weight in the sum."""
    field: str = "answer"
    """exact_match, numeric: the record field holding the expected answer."""
    tolerance: float = Field(1e-6, ge=0.0)
    """numeric: largest absolute difference that still counts as equal."""
    pattern: str | None = None
    """regex: a Python regular expression searched in the completion."""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """json_schema: the JSON schema (inline)."""
    max_tokens: int | None = Field(None, ge=1)
    """length_penalty: the length above which the penalty starts."""
    function: str | None = None
    """function: `package.module:function`, called once per completion."""
    path: str | None = None
    """reward_model: the reward model directory (a `honing reward` run or its saved model)."""
    base_model: str | None = None
    """reward_model: the base model of a LoRA reward model, when not the one it recorded."""
    judge: JudgeConfig | None = None
    """judge: the judge model (local or endpoint)."""
    rubric: str | None = None
    """judge: what a good answer does (default: a general helpfulness rubric)."""

    @model_validator(mode="after")
    def _check(self) -> RewardSpec:
        needs = {"regex": ("pattern", self.pattern), "json_schema": ("schema", self.schema_),
                 "length_penalty": ("max_tokens", self.max_tokens), "function": ("function", self.function),
                 "reward_model": ("path", self.path), "judge": ("judge", self.judge)}
        if self.kind in needs and needs[self.kind][1] is None:
            raise ValueError(f"a {self.kind} reward needs `{needs[self.kind][0]}`")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function must be module:function, not {self.function!r}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class RLObjectiveConfig(StrictModel):
    """The algorithm and its knobs."""

    algo: Literal["grpo", "ppo"] = "grpo"
    """grpo: advantages relative to the other completions of the same prompt (no value model; DeepSeekMath);
    ppo: a value head on the policy and GAE over tokens (InstructGPT)."""
    steps: int = Field(50, ge=1)
    """RL steps: each samples prompts_per_step × group_size completions, then optimises on them."""
    epochs: int = Field(1, ge=1)
    """Passes over each step's rollouts (1: on-policy; more reuses samples, with the ratio clipped)."""
    minibatches: int = Field(1, ge=1)
    """Optimiser steps per pass: the rollouts are split into this many shuffled minibatches."""
    clip_eps: float = Field(0.2, gt=0.0)
    """PPO-style clipping of the probability ratio to [1 − clip_eps, 1 + clip_eps_high]."""
    clip_eps_high: float | None = Field(None, gt=0.0)
    """Upper clip (DAPO's clip-higher); default clip_eps."""
    kl_beta: float = Field(0.04, ge=0.0)
    """Weight of the KL penalty to the reference (the starting model); 0 turns it off (and skips the reference pass)."""
    kl_estimator: Literal["k1", "k2", "k3"] | None = None
    """k1 = log p − log q; k2 = ½(log p − log q)²; k3 = (q/p − 1) − log(q/p). Default: k3 in the loss, k1 in the reward."""
    kl_placement: Literal["reward", "loss"] | None = None
    """reward: β·KL per token is subtracted from the reward before advantages (PPO's choice, the default for ppo);
    loss: β·KL is added to the loss and differentiated (GRPO's choice, the default for grpo)."""
    length_norm: Literal["sequence", "token", "constant"] | None = None
    """How token losses are averaged. sequence: mean over each completion's tokens, then over completions (GRPO's
    paper; short completions weigh more per token); token: mean over all tokens of the step (DAPO; the default
    for ppo); constant: sum over each completion divided by max_new_tokens (Dr. GRPO; no length bias). Default:
    sequence for grpo."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo: divide advantages by the reward spread of the group, of the whole step, or not at all (Dr. GRPO)."""
    normalize_rewards: bool = False
    """Whiten scores with running mean and standard deviation across steps before they become rewards (ppo)."""
    reward_clip: float | None = Field(None, gt=0.0)
    """Clip each (normalised) score to [−reward_clip, reward_clip]."""
    missing_eos_penalty: float = Field(0.0, ge=0.0)
    """Subtracted from the reward of a completion that reached max_new_tokens without a stop token."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """ppo: discount."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """ppo: GAE λ."""
    vf_coef: float = Field(0.1, ge=0.0)
    """ppo: weight of the value loss."""
    value_clip: float | None = Field(0.2, gt=0.0)
    """ppo: clip the value update to old value ± value_clip; null: no clipping."""
    whiten_advantages: bool | None = None
    """Normalise advantages over the step to mean 0, std 1. Default: true for ppo, false for grpo."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (0 logs entropy without optimising it)."""
    eval_every: int | None = Field(10, ge=1)
    """Validate (greedy answers to the held-out prompts, scored by the same rewards) every N steps, first and last."""
    eval_prompts: int | None = Field(100, ge=1)
    """Validate on at most this many held-out prompts."""
    sample_every: int | None = Field(5, ge=1)
    """Append the step's first prompts and completions to samples.jsonl every N steps."""

    @property
    def placement(self) -> str:
        return self.kl_placement or ("loss" if self.algo == "grpo" else "reward")

    @property
    def estimator(self) -> str:
        return self.kl_estimator or ("k3" if self.placement == "loss" else "k1")

    @property
    def normalisation(self) -> str:
        return self.length_norm or ("sequence" if self.algo == "grpo" else "token")

    @property
    def whiten(self) -> bool:
        return self.whiten_advantages if self.whiten_advantages is not None else self.algo == "ppo"


class RLConfig(StrictModel):
    """`honing rl`: online reinforcement learning (GRPO or PPO) from a prompt file and rewards
    (verifiers, a reward model, a judge, or a weighted sum of them)."""

    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig(dropout=0.0)
    data: RLDataConfig = RLDataConfig()
    rollout: RolloutConfig = RolloutConfig()
    rewards: list[RewardSpec] = []
    """The reward terms (weighted sum). At least one."""
    rl: RLObjectiveConfig = RLObjectiveConfig()
    train: TrainConfig = TrainConfig(lr=1e-5, schedule="constant", micro_batch_size=8, save_every=10, precision="fp32")
    """Optimiser, precision, seed, checkpoints (save_every counts RL steps). epochs, max_steps, grad_accum,
    eval_every and early stopping do not apply: see rl.steps, rl.epochs, rl.minibatches and rl.eval_every."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        if not self.data.prompts:
            raise ValueError("data.prompts is required: a prompt file, or builtin:arithmetic")
        if not self.rewards:
            raise ValueError("give at least one reward, e.g. rewards: [{kind: numeric, field: answer}]")
        starts_from_trained(self.model, "rl")
        defaults = type(self).model_fields["train"].default
        unused = [name for name in ("epochs", "max_steps", "grad_accum", "eval_every", "early_stopping_patience")
                  if getattr(self.train, name) != getattr(defaults, name)]
        if unused:
            raise ValueError(f"train.{', train.'.join(unused)} do not apply to rl: the schedule is rl.steps × "
                             "rl.epochs × rl.minibatches optimiser steps, validated every rl.eval_every steps")
        if self.train.distributed != "ddp":
            raise ValueError("rl runs in one process (train.distributed does not apply)")
        if self.rl.algo == "grpo" and self.rollout.group_size < 2:
            raise ValueError("grpo compares completions of the same prompt: rollout.group_size must be at least 2")
        rows = self.rollout.prompts_per_step * self.rollout.group_size
        if rows % self.rl.minibatches:
            raise ValueError(f"the {rows} completions of a step (prompts_per_step × group_size) do not split into "
                             f"rl.minibatches={self.rl.minibatches} equal minibatches")
        return self
