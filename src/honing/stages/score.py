"""`honing score`: score answers with a reward model trained by `honing reward`.

    read answers (file:line errors) ─▶ reward model (+ its base, for an adapter) ─▶ score_responses
    ─▶ output written atomically: each input record plus `score` ─▶ summary (and win rate over a baseline)

Each prompt + answer is rendered exactly as a side of a training pair, by the same function the
RL stage uses (`honing.models.reward.score_responses`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.config import ScoreConfig
from honing.errors import DataError
from honing.io import write_jsonl_atomic
from honing.ui import console


@dataclass
class Answer:
    """One record to score: where it is, the record itself, its prompt and the answer."""

    where: str
    record: Any
    prompt: str | list[dict[str, str]]
    response: str


def answer_of(record: Any, where: str) -> tuple[str | list[dict[str, str]], str]:
    """(prompt, answer): a `response` with the record's prompt (`prompt`, `messages` or `instruction`,
    as `honing generate` reads it), or the last turn of `messages` when it is the assistant's."""
    from honing.data.prompts import prompt_of, turn as _turn

    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be an object, not {type(record).__name__}")
    if "response" in record:
        if not isinstance(record["response"], str):
            raise DataError(f"{where}: `response` must be a string, not {type(record['response']).__name__}")
        return prompt_of(record, where), record["response"]
    messages = record.get("messages") or record.get("conversations")
    if isinstance(messages, list) and len(messages) > 1:
        turns = [_turn(m, where) for m in messages]
        if turns[-1]["role"] == "assistant":
            return turns[:-1], turns[-1]["content"]
    raise DataError(f"{where}: no answer to score: give `response` (with `prompt`, `messages` or `instruction`), "
                    "or `messages` ending with the assistant's answer")


def read_answers(path: str | Path) -> list[Answer]:
    from honing.data.loading import read_records

    answers = [Answer(f"{file}:{line}", record, *answer_of(record, f"{file}:{line}"))
               for file, line, record in read_records(path)]
    if not answers:
        raise DataError(f"{path} holds no records to score")
    return answers


def check_same_prompts(answers: list[Answer], baseline: list[Answer]) -> None:
    """The baseline must answer the same prompts in the same order, or a win rate means nothing."""
    if len(baseline) != len(answers):
        raise DataError(f"the baseline has {len(baseline)} records and the input {len(answers)}: "
                        "give answers to the same prompts, in the same order")
    from honing.data.prompts import as_messages

    for mine, theirs in zip(answers, baseline):
        if as_messages(mine.prompt) != as_messages(theirs.prompt):
            raise DataError(f"{theirs.where}: its prompt differs from {mine.where}'s: "
                            "the baseline must answer the same prompts, in the same order")


def score_all(reward_model: Any, tokenizer: Any, answers: list[Answer], cfg: ScoreConfig) -> list[float]:
    """score_responses over the answers; an answer it cannot score is reported by file and line."""
    from honing.models.reward import ResponseError, score_responses

    try:
        return score_responses(reward_model, tokenizer, [a.prompt for a in answers], [a.response for a in answers],
                               batch_size=cfg.batch_size, max_length=cfg.max_length, system_prompt=cfg.system_prompt)
    except ResponseError as err:
        raise DataError(f"{answers[err.index].where}: {err.reason}") from None


def summarize(scores: list[float], baseline: list[float] | None) -> dict[str, Any]:
    """Mean and spread of the scores; with a baseline, its mean and the win rate (ties count half)."""
    n = len(scores)
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    summary: dict[str, Any] = {"records": n, "mean_score": mean, "std_score": std,
                               "min_score": min(scores), "max_score": max(scores)}
    if baseline is not None:
        wins = sum(s > b for s, b in zip(scores, baseline))
        ties = sum(s == b for s, b in zip(scores, baseline))
        summary.update({"baseline_mean_score": sum(baseline) / n, "wins": wins, "ties": ties, "losses": n - wins - ties,
                        "win_rate": (wins + 0.5 * ties) / n,
                        "mean_difference": sum(s - b for s, b in zip(scores, baseline)) / n})
    return summary


def write_scored(output: Path, answers: list[Answer], scores: list[float], baseline: list[float] | None) -> None:
    rows = []
    for i, (answer, score) in enumerate(zip(answers, scores)):
        row = {**answer.record, "score": score}
        if baseline is not None:
            row["baseline_score"] = baseline[i]
        rows.append(row)
    write_jsonl_atomic(output, rows)


def score_file(cfg: ScoreConfig) -> dict[str, Any]:
    from honing.models.reward import open_reward_model

    output = Path(cfg.output)
    if output.suffix.lower() != ".jsonl":
        raise DataError(f"output {output} must be a .jsonl file")
    answers = read_answers(cfg.input)
    baseline_answers = read_answers(cfg.baseline) if cfg.baseline else None
    if baseline_answers is not None:
        check_same_prompts(answers, baseline_answers)
    reward_model, tokenizer = open_reward_model(cfg.reward_model, base_model=cfg.base_model)
    scores = score_all(reward_model, tokenizer, answers, cfg)
    baseline = score_all(reward_model, tokenizer, baseline_answers, cfg) if baseline_answers is not None else None
    write_scored(output, answers, scores, baseline)
    summary = summarize(scores, baseline)
    console.print(f"{summary['records']} answers scored → {output}: mean {summary['mean_score']:.3f} "
                  f"(sd {summary['std_score']:.3f}, min {summary['min_score']:.3f}, max {summary['max_score']:.3f})")
    if baseline is not None:
        console.print(f"baseline {cfg.baseline}: mean {summary['baseline_mean_score']:.3f}; input wins "
                      f"{summary['wins']}, ties {summary['ties']}, loses {summary['losses']}: "
                      f"win rate {summary['win_rate']:.3f}, mean difference {summary['mean_difference']:+.3f}")
    return {"output": str(output), **summary}


run = score_file
