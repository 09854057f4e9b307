"""Evaluation tasks: read a task's examples and give each the fields its kind needs.

    generation      prompt + reference(s), or pattern / schema for format metrics
    classification  prompt + label
    multiple_choice question + choices + answer (index or the choice's text)
    pairwise/rubric prompt (+ an optional reference answer shown to the judge)
    perplexity      any training format (text, instruction, chat, sharegpt): tokenised like training

Bad records stop the run with file:line; an evaluation never skips data silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.config import EvalTaskConfig
from honing.errors import ConfigError, DataError

BUILTIN_DIR = Path(__file__).parent / "data"

DEFAULT_METRICS = {
    "generation": ["exact_match_normalized", "token_f1"],
    "classification": ["accuracy", "macro_f1"],
    "multiple_choice": ["acc", "acc_norm"],
    "perplexity": ["loss", "perplexity"],
    "pairwise": ["win_rate"],
    "rubric": ["rubric_score"],
    "lm_eval": [],  # every metric the harness task reports
}
# Metrics a kind computes itself (not a per-answer metric from honing.evals.metrics).
KIND_METRICS = {
    "classification": {"accuracy", "macro_f1"},
    "multiple_choice": {"acc", "acc_norm"},
    "perplexity": {"loss", "perplexity"},
    "pairwise": {"win_rate"},
    "rubric": {"rubric_score"},
}


@dataclass
class Example:
    """One example of a task; `record` is what the metrics see (with `reference` filled in)."""

    id: str
    where: str  # file:line
    record: dict[str, Any]
    prompt: Any = None  # str or a list of chat messages
    choices: list[str] = field(default_factory=list)
    gold: int | None = None
    label: str | None = None

    def fingerprint(self) -> str:
        """What the model is asked, so a cached answer is reused only for the same question.
        A perplexity example has no prompt: the model scores the whole record."""
        asked = [self.prompt, self.choices] if self.prompt is not None else self.record
        payload = json.dumps(asked, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def builtin_path(spec: str) -> Path:
    name = spec.removeprefix("builtin:")
    if name == "quickstart":
        from honing.quickstart.task import DATA_DIR

        return DATA_DIR / "test.jsonl"
    if name == "kestrelmark":
        from honing.rag.make_ladder_data import DATA

        return DATA / "kestrelmark_test.jsonl"
    path = BUILTIN_DIR / f"{name}.jsonl"
    if not path.is_file():
        known = ["quickstart", "kestrelmark", *sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))]
        raise ConfigError(f"unknown bundled task data {spec!r}; bundled: {', '.join('builtin:' + k for k in known)}")
    return path


def data_path(task: EvalTaskConfig) -> Path:
    if task.data.startswith("builtin:"):
        return builtin_path(task.data)
    path = Path(task.data).expanduser()
    if not path.exists():
        raise DataError(f"task {task.name}: data {path} does not exist")
    return path


def metric_names(task: EvalTaskConfig, reported: list[str] | None = None) -> list[str]:
    """The task's metrics; for lm_eval tasks with none configured, those the harness `reported`."""
    if task.kind == "lm_eval":
        return list(task.metrics) or list(reported or [])
    names = list(task.metrics) or list(DEFAULT_METRICS[task.kind])
    own = KIND_METRICS.get(task.kind)
    if own is not None:
        wrong = [n for n in names if n not in own]
        if wrong:
            raise ConfigError(f"task {task.name}: a {task.kind} task reports {', '.join(sorted(own))}, not {', '.join(wrong)}")
    return names


def primary_metric(task: EvalTaskConfig, reported: list[str] | None = None) -> str:
    names = metric_names(task, reported)
    if not names:
        return task.primary or ""
    primary = task.primary or names[0]
    if primary not in names:
        raise ConfigError(f"task {task.name}: primary metric {primary!r} is not one of its metrics ({', '.join(names)})")
    return primary


def load_examples(task: EvalTaskConfig) -> list[Example]:
    from honing.data.loading import read_records

    if task.kind == "lm_eval":
        return []  # the harness reads its own documents; the stage records their ids after the first run
    path = data_path(task)
    examples = []
    for file, line, record in read_records(path):
        where = f"{file}:{line}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: each example must be an object, got {type(record).__name__}")
        examples.append(_example(task, record, where, len(examples)))
        if task.max_examples and len(examples) >= task.max_examples:
            break
    if not examples:
        raise DataError(f"task {task.name}: {path} holds no examples")
    if task.kind == "classification":
        _check_labels(task, examples)
    return examples


def _example(task: EvalTaskConfig, record: dict[str, Any], where: str, index: int) -> Example:
    example_id = str(record.get("id", index))
    if task.kind == "perplexity":
        return Example(example_id, where, record)
    if task.kind == "multiple_choice":
        return _multiple_choice(record, where, example_id)
    from honing.data.prompts import prompt_of

    prompt = prompt_of(record, where)
    reference = reference_of(record)
    scored = dict(record)
    if reference is not None and "references" not in scored:
        scored["reference"] = reference
    example = Example(example_id, where, scored, prompt=prompt)
    if task.kind == "classification":
        label = record.get("label", reference)
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{where}: a classification example needs a string `label`")
        example.label = label.strip()
    return example


def reference_of(record: dict[str, Any]) -> str | None:
    """The wanted answer: `reference`, `answer`, Alpaca's `output`, or a final assistant turn."""
    for key in ("reference", "answer", "output"):
        if isinstance(record.get(key), str):
            return record[key]
    messages = record.get("messages") or record.get("conversations")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        if last.get("role", last.get("from")) in ("assistant", "gpt"):
            content = last.get("content", last.get("value"))
            return content if isinstance(content, str) else None
    return None


def _multiple_choice(record: dict[str, Any], where: str, example_id: str) -> Example:
    question = next((record[k] for k in ("question", "prompt", "context") if isinstance(record.get(k), str)), None)
    choices = record.get("choices")
    if question is None:
        raise DataError(f"{where}: a multiple-choice example needs `question` (or `prompt`)")
    if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
        raise DataError(f"{where}: `choices` must be a list of at least two non-empty strings")
    answer = record.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise DataError(f"{where}: `answer` must be the index of the right choice or its text")
    if isinstance(answer, str):
        if answer not in choices:
            raise DataError(f"{where}: answer {answer!r} is not one of the choices")
        gold = choices.index(answer)
    else:
        gold = answer
        if not 0 <= gold < len(choices):
            raise DataError(f"{where}: answer index {gold} is out of range for {len(choices)} choices")
    return Example(example_id, where, dict(record), prompt=question, choices=list(choices), gold=gold)


def label_set(task: EvalTaskConfig, examples: list[Example]) -> list[str]:
    return list(task.labels) if task.labels else sorted({e.label for e in examples if e.label})


def _check_labels(task: EvalTaskConfig, examples: list[Example]) -> None:
    if task.labels:
        allowed = set(task.labels)
        for example in examples:
            if example.label not in allowed:
                raise DataError(f"{example.where}: label {example.label!r} is not in the task's labels ({', '.join(task.labels)})")
