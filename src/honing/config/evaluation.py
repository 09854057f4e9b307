"""Config of `honing eval`: models, tasks, the judge and the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.model import ChatModelConfig
from honing.config.output import OutputConfig
from honing.config.sampling import SamplingConfig


TaskKind = Literal["perplexity", "generation", "multiple_choice", "classification", "pairwise", "rubric", "lm_eval"]


class EvalModelConfig(ChatModelConfig):
    """One model to evaluate: the shape every model is named in (path + adapter, or an endpoint), plus its
    name and role. An endpoint answers generation, pairwise and rubric tasks only (it gives no log-likelihoods)."""

    name: str = Field(min_length=1)
    """Short name used in the report and in overrides (models.<name>.adapter=...)."""
    role: Literal["base", "candidate"] = "candidate"
    """base: the reference candidates are compared with (regressions, differences, pairwise judging)."""


class EvalTaskConfig(StrictModel):
    """One task: a data file and how answers are scored."""

    name: str = Field(min_length=1)
    """Short name used in the report."""
    kind: TaskKind = "generation"
    """perplexity: loss on held-out text or chat data (masked tokens excluded); generation: answers scored by
    metrics; multiple_choice: the choice with the highest log-likelihood; classification: a label per example;
    pairwise: a judge compares each candidate's answer with the base's, twice with the order swapped;
    rubric: a judge grades each answer against a rubric; lm_eval: a task of lm-evaluation-harness (the lm-eval extra)."""
    data: str | None = None
    """The examples: a .jsonl/.json/.csv/.parquet file, or bundled data: builtin:quickstart (the quickstart's
    held-out tickets), builtin:kestrelmark (the knowledge task's 100 test questions), builtin:general_mc,
    builtin:general_refusal and builtin:general (the general-capability suite, GENERAL_SUITE)."""
    metrics: list[str] = []
    """generation: metric names (exact_match, exact_match_normalized, contains_reference, token_f1, rouge_l, bleu,
    chrf, regex_match, json_valid, json_schema) or module:function; empty: the kind's defaults."""
    primary: str | None = None
    """The metric that gates and orders the report; default: the first metric."""
    regression: bool = False
    """A general-capability task: a candidate may not score lower than the base by more than gate.regression_tolerance."""
    min: dict[str, float] = {}
    """Thresholds every candidate (or a model evaluated alone) must reach: metric -> lowest allowed score
    (highest allowed for loss and perplexity); checked with --gate."""
    max_examples: int | None = Field(None, ge=1)
    """Use only the first N examples."""
    labels: list[str] | None = None
    """classification: the label set (default: every label in the data)."""
    classify_by: Literal["generation", "loglikelihood"] = "generation"
    """classification: map a generated answer to a label, or pick the label with the highest log-likelihood."""
    chat_template: bool | None = None
    """Wrap prompts in the model's chat template; default true, except multiple_choice (plain text, as lm-evaluation-harness)."""
    system_prompt: str | None = None
    """System message for prompts that have none."""
    max_new_tokens: int | None = Field(None, ge=1)
    """Longest answer for this task (default: sampling.max_new_tokens)."""
    rubric: str | None = None
    """rubric: what a good answer does; the judge grades 1-10 against it (default: a general helpfulness rubric)."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt"] = "auto"
    """perplexity: the data format (auto detects it); the loss covers assistant turns of chat data, all of text."""
    max_length: int = Field(1024, ge=8)
    """Longest token sequence: multiple-choice and classification contexts are cut from the left, perplexity
    records from the right; either way the cuts are counted and reported."""
    lm_eval_task: str | None = None
    """lm_eval: the harness task name (e.g. one defined by a YAML file in include_path)."""
    include_path: str | None = None
    """lm_eval: a directory of the harness's task YAML files (local tasks; nothing is downloaded)."""
    num_fewshot: int | None = Field(None, ge=0)
    """lm_eval: few-shot examples per prompt (the task's default when null)."""

    @model_validator(mode="after")
    def _check(self) -> EvalTaskConfig:
        if self.kind == "lm_eval":
            if not self.lm_eval_task:
                raise ValueError(f"task {self.name}: kind lm_eval needs lm_eval_task (the harness's task name)")
        elif not self.data:
            raise ValueError(f"task {self.name}: data is required (a file, or builtin:quickstart / builtin:general_mc / "
                             "builtin:general)")
        return self


GENERAL_SUITE: list[EvalTaskConfig] = [
    EvalTaskConfig(name="general_mc", kind="multiple_choice", data="builtin:general_mc", regression=True),
    EvalTaskConfig(name="general_refusal", kind="multiple_choice", data="builtin:general_refusal", chat_template=True,
                   regression=True),
    EvalTaskConfig(name="general", data="builtin:general", metrics=["regex_match"], max_new_tokens=32, regression=True),
]
"""The general-capability suite: the regression tasks of the eval gate, the quickstart and promotion. general_mc
(495 questions by log-likelihood: facts, arithmetic, reading comprehension) is the one sized to see a 5-point
drop; general_refusal (40 harmful requests and 40 harmless twins, in the chat template) and general (118 short
generations: instruction following, formatting) cover what plain-text questions cannot. Written by
`python -m honing.evals.make_general`; its numbers on the embedded model are in the README (`honing eval`)."""


class JudgeConfig(ChatModelConfig):
    """The model that judges answers (the shape every model is named in: path + adapter, or an endpoint), greedy."""

    max_new_tokens: int = Field(64, ge=1)
    """Longest verdict."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds an endpoint request may take before it fails (or is retried)."""


def generates(task: EvalTaskConfig) -> bool:
    """The task asks the model for answers (rather than log-likelihoods or a harness run)."""
    return task.kind in ("generation", "pairwise", "rubric") or (
        task.kind == "classification" and task.classify_by == "generation")


class GateConfig(StrictModel):
    """When `honing eval --gate` fails (exit code 3)."""

    enabled: bool = False
    """Check the gate (the --gate flag sets this)."""
    regression_tolerance: float = Field(0.02, ge=0.0)
    """Largest drop of a regression task's primary score (candidate − base, as a share: 0.02 = 2 points) that still passes."""


class EvalConfig(StrictModel):
    """`honing eval`: every model on every task, with bootstrap intervals, one report, and an optional gate."""

    models: list[EvalModelConfig] = [EvalModelConfig(name="base", role="base")]
    """The models; the one with role base (else the first) is the reference."""
    tasks: list[EvalTaskConfig] = [
        EvalTaskConfig(name="quickstart", data="builtin:quickstart", primary="honing.quickstart.task:field_accuracy",
                       metrics=["exact_match", "honing.quickstart.task:field_accuracy", "honing.quickstart.task:format_valid"]),
        *GENERAL_SUITE,
    ]
    """The tasks (default: the quickstart's held-out tickets and the general-capability suite, GENERAL_SUITE)."""
    judge: JudgeConfig | None = None
    """Needed by pairwise and rubric tasks."""
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=128)
    """How answers are generated (greedy by default, so scores are reproducible)."""
    batch_size: int = Field(8, ge=1)
    """Prompts (or sequences) processed together."""
    gate: GateConfig = GateConfig()
    resamples: int = Field(2000, ge=100)
    """Bootstrap resamples per interval."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the intervals."""
    cache: bool = True
    """Reuse answers computed before for the same model, task settings and example (~/.cache/honing/evals)."""
    report_examples: int = Field(10, ge=0)
    """Examples per task shown in the report where the models' scores differ."""
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for what, names in (("model", [m.name for m in self.models]), ("task", [t.name for t in self.tasks])):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(duplicated)}")
        if not self.models:
            raise ValueError("give at least one model")
        if sum(m.role == "base" for m in self.models) > 1:
            raise ValueError("at most one model may have role: base")
        judged = [t.name for t in self.tasks if t.kind in ("pairwise", "rubric")]
        if judged and self.judge is None:
            raise ValueError(f"tasks {', '.join(judged)} need a judge (judge.path, or judge.endpoint and judge.endpoint_model)")
        if any(t.kind == "pairwise" for t in self.tasks) and len(self.models) < 2:
            raise ValueError("a pairwise task compares candidates with the base: give at least two models")
        needs_weights = [t.name for t in self.tasks if not generates(t)]
        for model in self.models:
            if model.endpoint and needs_weights:
                raise ValueError(f"model {model.name} is an endpoint, which gives no log-likelihoods: tasks "
                                 f"{', '.join(needs_weights)} need a local model (models.{model.name}.path)")
        return self
