"""LLM-as-judge: pairwise comparison with the order swapped, and single-answer grading on a rubric.

A judge is a ChatModel (honing.models.chat): a local model, or an OpenAI-compatible endpoint that
the user configured (nothing is sent anywhere else); its `identity` is recorded beside its scores.
Judges are greedy, so verdicts reproduce.

Pairwise: each pair is judged twice, candidate first and then base first. Position bias is
the best-known judge failure; when the two verdicts disagree the pair counts as a tie, and how
often that happened is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from honing.config import JudgeConfig, SamplingConfig

if TYPE_CHECKING:
    from honing.models.chat import ChatModel

Messages = list[dict[str, str]]

PAIRWISE_SYSTEM = (
    "You are an impartial judge. Compare two answers to the user's question and decide which is more "
    "helpful, correct and appropriate. Do not let the order or the length of the answers sway you."
)
PAIRWISE_USER = (
    "Question:\n{question}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
    "{reference}Which answer is better? Reply with one line: \"A\", \"B\" or \"TIE\"."
)
RUBRIC_SYSTEM = "You are a strict grader. Grade the answer against the rubric."
RUBRIC_USER = (
    "Rubric:\n{rubric}\n\nQuestion:\n{question}\n\nAnswer:\n{answer}\n\n{reference}"
    "Give a score from 1 (fails the rubric) to 10 (fully meets it). Reply with one line: \"Score: N\"."
)
DEFAULT_RUBRIC = "The answer is correct, directly addresses the question, is clear, and contains nothing harmful or invented."


def build_judge(cfg: JudgeConfig, *, batch_size: int = 8) -> ChatModel:
    """The judge `cfg` names, answering greedily in at most cfg.max_new_tokens."""
    from honing.models.chat import ChatModel

    return ChatModel.load(cfg, SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0), role="judge",
                          batch_size=batch_size)


def _reference_block(reference: str | None) -> str:
    return f"[Reference answer]\n{reference}\n\n" if reference else ""


def pairwise_prompt(question: str, a: str, b: str, reference: str | None = None) -> Messages:
    user = PAIRWISE_USER.format(question=question, a=a, b=b, reference=_reference_block(reference))
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def rubric_prompt(question: str, answer: str, rubric: str | None, reference: str | None = None) -> Messages:
    user = RUBRIC_USER.format(rubric=rubric or DEFAULT_RUBRIC, question=question, answer=answer,
                              reference=_reference_block(reference))
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": user}]


# A and B are capitals (a reply starting "a better answer..." is not a verdict for A); TIE in any case.
_VERDICT = re.compile(r"^\W*(?:[Aa]nswer\s+)?(A|B|TIE|[Tt]ie)\b")
_VERDICT_ANYWHERE = re.compile(r"\b(?:[Aa]nswer|[Vv]erdict|better)\W*(?:is\W*)?(A|B|TIE|[Tt]ie)\b")


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "TIE" from a judge's reply (at the start, or after 'Answer'/'Verdict'); None if absent."""
    match = _VERDICT.match(text) or _VERDICT_ANYWHERE.search(text)
    return match.group(1).upper() if match else None


def parse_score(text: str, low: int = 1, high: int = 10) -> float | None:
    """The grade as a share in [0, 1] ((score − low) / (high − low)), or None when there is no grade in range."""
    match = re.search(r"score\W*(\d+(?:\.\d+)?)", text, re.IGNORECASE) or re.search(r"\b(\d+(?:\.\d+)?)\b", text)
    if not match:
        return None
    value = float(match.group(1))
    return (value - low) / (high - low) if low <= value <= high else None


@dataclass
class PairwiseOutcome:
    score: float  # for the candidate: 1 win, 0.5 tie, 0 loss
    outcome: str  # win | loss | tie
    verdicts: tuple[str | None, str | None]  # (candidate shown first, base shown first)
    consistent: bool  # both orders agree (a tie both times counts as agreement)


def combine_verdicts(first: str | None, second: str | None) -> PairwiseOutcome:
    """first: the candidate was A; second: the base was A. Disagreement (or an unreadable verdict) is a tie."""
    as_candidate = {"A": "win", "B": "loss", "TIE": "tie"}
    swapped = {"A": "loss", "B": "win", "TIE": "tie"}
    one, two = as_candidate.get(first or ""), swapped.get(second or "")
    consistent = one is not None and one == two
    outcome = one if consistent else "tie"
    return PairwiseOutcome({"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome], outcome, (first, second), consistent)


def judge_pairwise(judge: ChatModel, questions: Sequence[str], candidate: Sequence[str], base: Sequence[str],
                   references: Sequence[str | None]) -> list[PairwiseOutcome]:
    forward = [pairwise_prompt(q, c, b, r) for q, c, b, r in zip(questions, candidate, base, references)]
    backward = [pairwise_prompt(q, b, c, r) for q, c, b, r in zip(questions, candidate, base, references)]
    replies = judge.texts(forward + backward)
    n = len(forward)
    return [combine_verdicts(parse_verdict(replies[i]), parse_verdict(replies[n + i])) for i in range(n)]


def judge_rubric(judge: ChatModel, questions: Sequence[str], answers: Sequence[str], rubric: str | None,
                 references: Sequence[str | None]) -> list[tuple[float | None, str]]:
    replies = judge.texts([rubric_prompt(q, a, rubric, r) for q, a, r in zip(questions, answers, references)])
    return [(parse_score(reply), reply) for reply in replies]
