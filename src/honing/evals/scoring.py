"""From raw model outputs to scores with intervals, paired differences, gate checks and the
examples where models disagree.

Every metric is a statistic over a task's examples: most are means of a per-example score;
macro-F1, loss and perplexity are not (they pool over examples), so their intervals and
differences resample whole rows and recompute the statistic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from honing.config import EvalConfig, EvalTaskConfig
from honing.evals import metrics as M
from honing.evals.stats import Interval, bootstrap_mean, bootstrap_paired_difference, bootstrap_statistic
from honing.evals.tasks import Example, label_set, metric_names, primary_metric

LOWER_IS_BETTER = {"loss", "perplexity"}


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass
class MetricRows:
    """One metric of one model on one task: a row per example and the statistic over rows.
    `per_example` (the row's own score, for the report's examples) is None where a row has no score of its own."""

    rows: list[Any]
    statistic: Callable[[list[Any]], float]
    per_example: list[float | None]
    is_mean: bool = False


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def mean_rows(values: Sequence[float | None]) -> MetricRows:
    kept = [float(v) for v in values if v is not None]
    return MetricRows(kept, _mean, list(values), is_mean=True)


def map_to_label(answer: str, labels: Sequence[str]) -> str:
    """A generated answer as a label: the whole answer (case and punctuation aside), else the
    label named first in it, else <other>."""
    def norm(text: str) -> str:
        return re.sub(r"[^\w\s-]", "", text).strip().lower()

    by_norm = {norm(label): label for label in labels}
    if norm(answer) in by_norm:
        return by_norm[norm(answer)]
    found = []
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", answer.lower())
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else M.OTHER_LABEL


def metric_rows(task: EvalTaskConfig, examples: list[Example], raw: list[dict[str, Any]],
                judged: list[dict[str, Any]] | None = None) -> dict[str, MetricRows]:
    """Every metric of the task for one model."""
    kind = task.kind
    if kind == "generation":
        out = {}
        for name in metric_names(task):
            metric = M.load_metric(name)
            out[name] = mean_rows([metric(r["answer"], e.record) for e, r in zip(examples, raw)])
        return out
    if kind == "multiple_choice":
        scores = [M.multiple_choice_scores(r["logprobs"], e.choices, e.gold) for e, r in zip(examples, raw)]
        return {name: mean_rows([s[name] for s in scores]) for name in metric_names(task)}
    if kind == "classification":
        labels = label_set(task, examples)
        predictions = predicted_labels(task, examples, raw)
        pairs = list(zip(predictions, [e.label for e in examples]))
        hits = [float(p == g) for p, g in pairs]
        out = {"accuracy": mean_rows(hits),
               "macro_f1": MetricRows(pairs, lambda rows: M.macro_f1([p for p, _ in rows], [g for _, g in rows], labels),
                                      hits)}
        return {name: out[name] for name in metric_names(task)}
    if kind == "perplexity":
        rows = [(r["loss_sum"], r["tokens"]) for r in raw]
        per_example = [r["loss_sum"] / r["tokens"] if r["tokens"] else None for r in raw]

        def loss(rows: list[tuple[float, int]]) -> float:
            tokens = sum(t for _, t in rows)
            return sum(s for s, _ in rows) / tokens if tokens else math.nan

        out = {"loss": MetricRows(rows, loss, per_example),
               "perplexity": MetricRows(rows, lambda r: math.exp(min(loss(r), 50.0)), per_example)}
        return {name: out[name] for name in metric_names(task)}
    if kind == "lm_eval":
        reported = list(raw[0]["scores"]) if raw else []
        return {name: mean_rows([r["scores"].get(name) for r in raw]) for name in metric_names(task, reported)}
    if kind in ("pairwise", "rubric"):
        if judged is None:
            return {}
        name = "win_rate" if kind == "pairwise" else "rubric_score"
        return {name: mean_rows([j.get("score") for j in judged])}
    raise ValueError(f"unknown task kind {kind}")


def predicted_labels(task: EvalTaskConfig, examples: list[Example], raw: list[dict[str, Any]]) -> list[str]:
    labels = label_set(task, examples)
    if task.classify_by == "loglikelihood":
        return [labels[max(range(len(labels)), key=lambda i: r["logprobs"][i])] for r in raw]
    return [map_to_label(r["answer"], labels) for r in raw]


def interval(rows: MetricRows, cfg: EvalConfig) -> Interval:
    if rows.is_mean:
        return bootstrap_mean(rows.rows, confidence=cfg.confidence, resamples=cfg.resamples)
    return bootstrap_statistic(rows.statistic, [rows.rows], confidence=cfg.confidence, resamples=cfg.resamples)


def difference(candidate: MetricRows, base: MetricRows, cfg: EvalConfig) -> Interval | None:
    """candidate − base over the same examples, paired; None when the rows do not pair up."""
    if candidate.is_mean and base.is_mean:
        if len(candidate.rows) != len(base.rows) or len(candidate.per_example) != len(base.per_example):
            return None  # e.g. a rubric grade missing for some examples: not paired
        return bootstrap_paired_difference(candidate.rows, base.rows, confidence=cfg.confidence, resamples=cfg.resamples)
    if len(candidate.rows) != len(base.rows):
        return None
    return bootstrap_statistic(lambda a, b: candidate.statistic(a) - base.statistic(b), [candidate.rows, base.rows],
                               confidence=cfg.confidence, resamples=cfg.resamples)


def gate_checks(cfg: EvalConfig, scores: dict[str, dict[str, dict[str, dict]]],
                differences: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Thresholds (task.min) for every candidate, and no regression beyond the tolerance on regression tasks."""
    checks = []
    # A single model is checked against the thresholds itself (there is nothing to compare it with).
    candidates = [m.name for m in cfg.models if m.name != baseline] or [baseline]
    for task in cfg.tasks:
        for model in candidates:
            for metric, limit in task.min.items():
                value = scores.get(model, {}).get(task.name, {}).get(metric, {}).get("mean")
                ok = value is not None and not math.isnan(value) and (
                    value >= limit if higher_is_better(metric) else value <= limit)
                relation = "≥" if higher_is_better(metric) else "≤"
                checks.append({"model": model, "task": task.name, "metric": metric, "kind": "threshold",
                               "value": value, "limit": limit, "passed": bool(ok),
                               "message": f"{_fmt(value)} (needs {relation} {_fmt(limit)})"})
            if task.regression:
                metric = primary_metric(task, list(scores.get(baseline, {}).get(task.name, {})))
                diff = next((d for d in differences if d["model"] == model and d["task"] == task.name
                             and d["metric"] == metric), None)
                if diff is None:
                    continue
                change = diff["diff"] if higher_is_better(metric) else -diff["diff"]
                ok = change >= -cfg.gate.regression_tolerance
                checks.append({"model": model, "task": task.name, "metric": metric, "kind": "regression",
                               "value": diff["diff"], "limit": -cfg.gate.regression_tolerance, "passed": bool(ok),
                               "message": (f"change {diff['diff']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}] against "
                                           f"{baseline} (tolerance {cfg.gate.regression_tolerance:g})")})
    return checks


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def prompt_text(example: Example) -> str:
    prompt = example.prompt
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return users[-1] if users else str(prompt[-1].get("content", ""))
    if prompt is None:
        record = example.record
        return str(record.get("text") or record.get("instruction") or record)[:2000]
    return str(prompt)


def disagreements(task: EvalTaskConfig, examples: list[Example], per_model: dict[str, dict[str, Any]],
                  limit: int) -> list[dict[str, Any]]:
    """Examples where the models' primary per-example scores differ most (answers shown)."""
    reported = next((list(d["rows"]) for d in per_model.values()), [])
    metric = primary_metric(task, reported)
    rows = []
    for index, example in enumerate(examples):
        scores = {name: data["rows"][metric].per_example[index] for name, data in per_model.items()
                  if metric in data["rows"]}
        known = [s for s in scores.values() if s is not None]
        if len(known) < 2 or max(known) == min(known):
            continue
        outputs = {name: _shown_output(task, data, index) for name, data in per_model.items()}
        reference = example.record.get("references") or example.record.get("reference") or example.label
        if task.kind == "multiple_choice":
            reference = example.choices[example.gold]
        rows.append((max(known) - min(known), index, {
            "id": example.id, "prompt": prompt_text(example), "reference": reference,
            "outputs": outputs, "scores": scores}))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return [r[2] for r in rows[:limit]]


def _shown_output(task: EvalTaskConfig, data: dict[str, Any], index: int) -> str:
    raw = data["raw"][index]
    if "answer" in raw:
        return raw["answer"]
    if task.kind in ("multiple_choice",) or "logprobs" in raw:
        logprobs = raw["logprobs"]
        best = max(range(len(logprobs)), key=logprobs.__getitem__)
        options = data["options"][index]
        return f"{options[best]} (log-likelihood {logprobs[best]:.2f})"
    if "loss_sum" in raw:
        return f"loss {raw['loss_sum'] / max(raw['tokens'], 1):.3f} over {raw['tokens']} tokens"
    return ""
