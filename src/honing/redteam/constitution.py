"""Constitutional AI: a model critiques its own answer against a principle and rewrites it
(Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback"), and a feedback model picks
the answer that better follows a principle (RLAIF).

    constitution file   principles, each with a critique request, a revision request and the
                        question the feedback model answers; optional red-team categories it is for,
                        and optional worked examples shown before the real conversation (few-shot, as
                        in the paper: small models need to see what a critique and a revision look like)
    critique_and_revise  answer ─▶ critique (the principle's question about the answer) ─▶ revision,
                        in one conversation, `revisions` times; the last revision is the answer kept;
                        a revision that copies a worked example's words is not kept
    label_pairs          two answers shown to a feedback model twice, in both orders; only a verdict
                        that survives the swap becomes a pair (position bias is the best-known judge failure)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import Field, ValidationError, model_validator

from honing.config import StrictModel
from honing.errors import DataError

BUILTIN_CONSTITUTION = Path(__file__).parent / "data" / "constitution.yaml"

FEEDBACK_SYSTEM = ("You compare two answers of an AI assistant against a principle, impartially; order and length "
                   "do not matter.")
FEEDBACK_USER = (
    "Conversation:\n{conversation}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
    "Principle: {question}\nReply with one line: \"A\" or \"B\".")
_REVISION_PREAMBLE = re.compile(r"^\s*(?:(?:here(?:'s| is) (?:the |my |a )?)?(?:rewritten|revised|new|improved) "
                                r"(?:answer|response|version)\s*[:.]|revision\s*:|rewrite\s*:)\s*", re.IGNORECASE)


class Example(StrictModel):
    """A worked critique and revision, shown to the model before its own (few-shot)."""

    request: str = Field(min_length=1)
    """What the user asked."""
    answer: str = Field(min_length=1)
    """The answer that breaks the principle."""
    critique: str = Field(min_length=1)
    """What a good critique of that answer says."""
    revision: str = Field(min_length=1)
    """The rewritten answer."""


class Principle(StrictModel):
    """One principle of a constitution."""

    id: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    """Asked of the model about its own last answer."""
    revision: str = Field(min_length=1)
    """Asked after the critique: how to rewrite the answer."""
    choose: str = Field(min_length=1)
    """The question a feedback model answers about two answers ("Which answer is less harmful?")."""
    categories: list[str] = []
    """Red-team categories it is drawn for; empty: any prompt."""
    examples: list[Example] = []
    """Worked examples shown before the conversation in the critique and revision requests (few-shot)."""
    revision_opening: str | None = None
    """The words the revision starts with ("I can't help with that."); the model writes the rest. A small model
    that cannot find a refusal on its own can continue one (and the probe's detectors still judge the whole)."""

    @model_validator(mode="after")
    def _examples_open_as_revisions_do(self) -> Principle:
        for k, ex in enumerate(self.examples):
            if self.revision_opening and not ex.revision.startswith(self.revision_opening):
                raise ValueError(f"examples[{k}].revision must start with revision_opening {self.revision_opening!r} "
                                 "(the example shows the model what its revisions look like)")
        return self

    def demonstration(self) -> list[dict[str, str]]:
        """The examples as finished exchanges: request, answer, critique request, critique, revision request, revision."""
        turns: list[dict[str, str]] = []
        for ex in self.examples:
            turns += [{"role": "user", "content": ex.request}, {"role": "assistant", "content": ex.answer},
                      {"role": "user", "content": self.critique}, {"role": "assistant", "content": ex.critique},
                      {"role": "user", "content": self.revision + REVISION_SUFFIX},
                      {"role": "assistant", "content": ex.revision}]
        return turns

    def copies_example(self, text: str, span: int = 8) -> bool:
        """Whether `text` repeats `span` consecutive words of an example's critique or revision (a small model
        parrots the demonstration instead of revising its own answer)."""
        words = _words(text)
        if len(words) < span:
            return False
        mine = {tuple(words[i:i + span]) for i in range(len(words) - span + 1)}
        for ex in self.examples:
            written = ex.revision[len(self.revision_opening or ""):]  # the opening is everyone's: not copying
            for source in (written, ex.critique):
                theirs = _words(source)
                if any(tuple(theirs[i:i + span]) in mine for i in range(len(theirs) - span + 1)):
                    return True
        return False


REVISION_SUFFIX = " Reply with the rewritten answer only."


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@dataclass
class Constitution:
    principles: list[Principle]
    source: str

    def draw(self, rng: random.Random, category: str | None = None) -> Principle:
        """A principle for a prompt of this category: among those made for it, else among the general ones."""
        made_for = [p for p in self.principles if category and category in p.categories]
        general = [p for p in self.principles if not p.categories]
        return rng.choice(made_for or general or self.principles)


def load_constitution(path: str | Path | None = None) -> Constitution:
    """The principles of a YAML file (`principles:` list); errors name the file and the principle's line."""
    from honing.redteam.probes import _LINE, _LineLoader, _strip_lines, _validation_text

    path = Path(path) if path else BUILTIN_CONSTITUTION
    if not path.is_file():
        raise DataError(f"constitution {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("principles"), list) or not data["principles"]:
        raise DataError(f"{path}: expected a mapping with a non-empty `principles:` list")
    principles, seen = [], {}
    for entry in data["principles"]:
        line = entry.get(_LINE, "?") if isinstance(entry, dict) else "?"
        try:
            principle = Principle.model_validate(_strip_lines(entry))
        except ValidationError as err:
            raise DataError(f"{path}:{line}: {_validation_text(err)}") from None
        if principle.id in seen:
            raise DataError(f"{path}:{line}: principle id {principle.id!r} is already used at line {seen[principle.id]}")
        seen[principle.id] = line
        principles.append(principle)
    return Constitution(principles, str(path))


# --------------------------------------------------------------------------- critique and revision


def critique_conversation(conversation: list[dict[str, str]], answer: str, principle: Principle) -> list[dict[str, str]]:
    """The conversation, its answer and the critique request; the principle's worked examples go first (after
    any system message, which stays the conversation's first turn)."""
    head = 0
    while head < len(conversation) and conversation[head]["role"] == "system":
        head += 1
    return [*conversation[:head], *principle.demonstration(), *conversation[head:],
            {"role": "assistant", "content": answer}, {"role": "user", "content": principle.critique}]


def revision_conversation(conversation: list[dict[str, str]], answer: str, critique: str,
                          principle: Principle) -> list[dict[str, str]]:
    turns = [*critique_conversation(conversation, answer, principle), {"role": "assistant", "content": critique},
             {"role": "user", "content": principle.revision + REVISION_SUFFIX}]
    if principle.revision_opening:  # a prefill: the reply continues the opening
        turns.append({"role": "assistant", "content": principle.revision_opening})
    return turns


def with_opening(principle: Principle, reply: str) -> str:
    """The whole revision: the principle's opening (when it has one) and the model's continuation of it."""
    return f"{principle.revision_opening} {reply}".strip() if principle.revision_opening else reply


def clean_revision(text: str) -> str:
    """The revised answer without a preamble ("Here is the revised answer:") or wrapping quotes."""
    text = _REVISION_PREAMBLE.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


@dataclass
class Revision:
    """One prompt through the loop: the original answer, each step, and the answer kept."""

    original: str
    revised: str
    steps: list[dict[str, str]]
    """Per round: principle, critique, revision."""


def critique_and_revise(model: Any, conversations: list[list[dict[str, str]]], answers: list[str],
                        principles: list[list[Principle]], *, seed: int, samples: int = 1,
                        accept: Callable[[int, str], bool] | None = None) -> list[Revision]:
    """`len(principles[i])` rounds for prompt i; every round is one batch of critiques, then one of revisions.
    An empty revision keeps the answer of the round before (recorded as such).

    With `samples` > 1 and `accept(i, revision)`, a round draws up to `samples` revisions of the same critique
    (each with its own seed), stops for a prompt at the first one `accept` takes, and keeps that one; when none is
    taken it keeps the first non-empty one, as with one sample. Each step records how many were drawn.
    A revision that copies the principle's worked examples counts as empty (the step records how many did)."""

    current = list(answers)
    steps: list[list[dict[str, str]]] = [[] for _ in answers]
    rounds = max((len(p) for p in principles), default=0)
    for r in range(rounds):
        todo = [i for i in range(len(answers)) if len(principles[i]) > r]
        critiques = dict(zip(todo, model.texts([critique_conversation(conversations[i], current[i], principles[i][r])
                                               for i in todo], seed=seed + 2 * r)))
        drawn: dict[int, list[str]] = {i: [] for i in todo}
        copied: dict[int, int] = {i: 0 for i in todo}
        chosen: dict[int, str] = {}
        pending = list(todo)
        for s in range(samples if accept is not None else 1):
            if not pending:
                break
            revisions = model.texts([revision_conversation(conversations[i], current[i], critiques[i], principles[i][r])
                                    for i in pending], seed=seed + 2 * rounds * s + 2 * r + 1)
            for i, revision in zip(pending, revisions):
                written = clean_revision(revision)  # the model's words, after the principle's opening if any
                cleaned = with_opening(principles[i][r], written)
                if written and principles[i][r].copies_example(written):
                    copied[i] += 1
                    cleaned = ""
                drawn[i].append(cleaned)
                if cleaned and accept is not None and accept(i, cleaned):
                    chosen[i] = cleaned
            pending = [i for i in pending if i not in chosen]
        for i in todo:
            cleaned = chosen.get(i) or next((d for d in drawn[i] if d), "")
            step = {"principle": principles[i][r].id, "critique": critiques[i], "revision": cleaned,
                    "kept": bool(cleaned)}
            if principles[i][r].examples:
                step["copied_example"] = copied[i]
            if accept is not None:
                step |= {"samples": len(drawn[i]), "accepted": i in chosen}
            steps[i].append(step)
            if cleaned:
                current[i] = cleaned
    return [Revision(a, c, s) for a, c, s in zip(answers, current, steps)]


# --------------------------------------------------------------------------- AI feedback


def feedback_prompt(conversation: list[dict[str, str]], a: str, b: str, principle: Principle) -> list[dict[str, str]]:
    shown = "\n".join(f"{m['role']}: {m['content']}" for m in conversation if m["role"] != "system")
    return [{"role": "system", "content": FEEDBACK_SYSTEM},
            {"role": "user", "content": FEEDBACK_USER.format(conversation=shown, a=a, b=b, question=principle.choose)}]


def label_pairs(feedback: Any, conversations: list[list[dict[str, str]]], first: list[str], second: list[str],
                principles: list[Principle], *, seed: int) -> list[dict[str, Any] | None]:
    """For each prompt, which of (first, second) better follows its principle: asked with first as A, then
    with second as A. Returns {chosen, rejected, verdicts} when both orders agree, else None."""
    from honing.evals.judges import parse_verdict

    forward = [feedback_prompt(c, a, b, p) for c, a, b, p in zip(conversations, first, second, principles)]
    backward = [feedback_prompt(c, b, a, p) for c, a, b, p in zip(conversations, first, second, principles)]
    replies = feedback.texts(forward + backward, seed=seed)
    n = len(forward)
    out: list[dict[str, Any] | None] = []
    for i in range(n):
        one, two = parse_verdict(replies[i]), parse_verdict(replies[n + i])
        verdicts = [one, two]
        if one == "A" and two == "B":
            out.append({"chosen": first[i], "rejected": second[i], "verdicts": verdicts})
        elif one == "B" and two == "A":
            out.append({"chosen": second[i], "rejected": first[i], "verdicts": verdicts})
        else:
            out.append(None)  # a tie, an unreadable verdict, or one that flipped with the order
    return out
