"""Rewards for online RL: programmatic verifiers, a trained reward model, an AI judge, and
their weighted sum.

Every term scores a batch of completions at once: `term(prompts, completions, records,
lengths) -> list[float]` (lengths are completion tokens). The reward of a completion is
Σ weight·term, and each term's mean is logged under its name, so a run shows which part of
the reward moved.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from honing.config import RewardSpec
from honing.errors import ConfigError

Prompt = str | list[dict[str, Any]]
Term = Callable[[Sequence[Prompt], Sequence[str], Sequence[dict[str, Any]], Sequence[int]], list[float]]

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` ("1,234" is one thousand two hundred and thirty-four), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _expected(record: dict[str, Any], field: str, kind: str) -> Any:
    if field not in record:
        raise ConfigError(f"a {kind} reward reads the record field {field!r}, which this prompt record lacks "
                          f"(it has {', '.join(sorted(record)) or 'no fields'})")
    return record[field]


def exact_match(field: str) -> Term:
    def term(prompts, completions, records, lengths):
        return [float(c.strip().casefold() == str(_expected(r, field, "exact_match")).strip().casefold())
                for c, r in zip(completions, records)]
    return term


def numeric(field: str, tolerance: float) -> Term:
    def term(prompts, completions, records, lengths):
        scores = []
        for completion, record in zip(completions, records):
            expected = float(str(_expected(record, field, "numeric")).replace(",", ""))
            got = last_number(completion)
            scores.append(float(got is not None and math.isclose(got, expected, rel_tol=0.0, abs_tol=tolerance)))
        return scores
    return term


def regex(pattern: str) -> Term:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"regex reward: {pattern!r} is not a valid regular expression: {err}") from None

    def term(prompts, completions, records, lengths):
        return [float(compiled.search(c) is not None) for c in completions]
    return term


def json_schema(schema: dict[str, Any]) -> Term:
    from honing.evals.metrics import json_schema as check

    def term(prompts, completions, records, lengths):
        return [check(c, {"schema": schema}) for c in completions]
    return term


def length_penalty(max_tokens: int) -> Term:
    def term(prompts, completions, records, lengths):
        return [-max(0, n - max_tokens) / max_tokens for n in lengths]
    return term


def function(spec: str) -> Term:
    """A user's `module:function(prompt, completion, record) -> float`, called per completion."""
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"reward function {spec!r} cannot be loaded: {err}") from None

    def term(prompts, completions, records, lengths):
        scores = []
        for prompt, completion, record in zip(prompts, completions, records):
            value = fn(prompt, completion, record)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"reward function {spec} returned {value!r}; it must return a finite number")
            scores.append(float(value))
        return scores
    return term


def reward_model(path: str, base_model: str | None, *, batch_size: int, system_prompt: str | None) -> Term:
    """The score of a reward model trained by `honing reward` (read at the answer's last token)."""
    from honing.models.reward import open_reward_model, score_responses

    model, tokenizer = open_reward_model(path, base_model=base_model)
    model.eval().requires_grad_(False)

    def term(prompts, completions, records, lengths):
        return score_responses(model, tokenizer, list(prompts), list(completions), batch_size=batch_size,
                               system_prompt=system_prompt)
    return term


def judge(spec: RewardSpec, *, batch_size: int) -> Term:
    """A judge model's 1–10 grade against the rubric, scaled to [0, 1]; an unreadable grade scores 0."""
    from honing.evals.judges import build_judge, judge_rubric

    model = build_judge(spec.judge, batch_size=batch_size)

    def term(prompts, completions, records, lengths):
        questions = [_question(p) for p in prompts]
        graded = judge_rubric(model, questions, completions, spec.rubric, [None] * len(questions))
        return [score if score is not None else 0.0 for score, _ in graded]
    return term


def _question(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt if m.get("role") != "system")


def build_term(spec: RewardSpec, *, batch_size: int = 8, system_prompt: str | None = None) -> Term:
    if spec.kind == "exact_match":
        return exact_match(spec.field)
    if spec.kind == "numeric":
        return numeric(spec.field, spec.tolerance)
    if spec.kind == "regex":
        return regex(spec.pattern)
    if spec.kind == "json_schema":
        return json_schema(spec.schema_)
    if spec.kind == "length_penalty":
        return length_penalty(spec.max_tokens)
    if spec.kind == "function":
        return function(spec.function)
    if spec.kind == "reward_model":
        return reward_model(spec.path, spec.base_model, batch_size=batch_size, system_prompt=system_prompt)
    return judge(spec, batch_size=batch_size)


@dataclass
class Scored:
    total: list[float]
    terms: dict[str, list[float]]


class RewardSuite:
    """The weighted sum of the configured terms."""

    def __init__(self, specs: Sequence[RewardSpec], *, batch_size: int = 8, system_prompt: str | None = None):
        names = [spec.label for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"reward names must differ (give `name:`), got {names}")
        self.specs = list(specs)
        self.terms = [build_term(spec, batch_size=batch_size, system_prompt=system_prompt) for spec in specs]

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str], records: Sequence[dict[str, Any]],
                 lengths: Sequence[int]) -> Scored:
        terms: dict[str, list[float]] = {}
        total = [0.0] * len(completions)
        for spec, term in zip(self.specs, self.terms):
            scores = term(prompts, completions, records, lengths)
            if len(scores) != len(completions):
                raise ConfigError(f"reward {spec.label} returned {len(scores)} scores for {len(completions)} completions")
            terms[spec.label] = scores
            total = [t + spec.weight * s for t, s in zip(total, scores)]
        return Scored(total, terms)

    def describe(self) -> list[dict[str, Any]]:
        return [spec.model_dump(by_alias=True, exclude_none=True) for spec in self.specs]
