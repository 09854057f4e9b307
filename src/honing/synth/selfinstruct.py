"""Self-instruct (Wang et al. 2022, as Alpaca used it): grow new tasks from a few seed tasks.

Each round:

    k in-context tasks (seeded RNG, from seeds + kept tasks) ─▶ teacher writes a NEW instruction
    ─▶ instruction checks: empty, unparseable_instruction, too_short, too_long, unseeable
       (mentions images, files, audio… the model cannot see), duplicate (ROUGE-L F1 > max_rouge_l
       against every kept instruction, seeds included, and earlier survivors of the round)
    ─▶ teacher writes an input (may be empty) and an output for each survivor
    ─▶ instance checks: unparseable_instance, empty_output, output_too_long
    ─▶ optional judge: judge_unreadable, judge_low (rubric share below min_judge_score)
    ─▶ kept (survivors past num_instructions are set aside as over_target)

Every rejected candidate is counted by rule and written to dropped.jsonl. The round's RNG and
the teacher's sampling seed are derived from (seed, round), and the pool of examples is read
back from the kept records, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from honing.errors import DataError
from honing.evals.metrics import _lcs_length, _rouge_tokens
from honing.config.synth import SynthConfig
from honing.interrupt import StopRequest
from honing.synth.store import SynthStore
from honing.models.chat import Messages
from honing.ui import console

TEMPLATE = "self-instruct@1"
"""Name and version of the two prompts below; bump the version whenever their text changes."""

INSTRUCTION_SYSTEM = "You write tasks for training a helpful language-model assistant."
INSTRUCTION_USER = (
    "Here are some example tasks:\n\n{examples}\n\n"
    "Write one new task that is different from all of them: a different verb, topic or kind of answer. "
    "It must be answerable with text alone (no images, files, audio or web browsing) and stated in one "
    "or two sentences.\nReply with one line: \"Instruction: <the new task>\""
)
INSTANCE_SYSTEM = "You write correct, complete examples of tasks for training a helpful language-model assistant."
INSTANCE_USER = (
    "Task: {instruction}\n\n"
    "If the task needs an input to work on (a text, a question, some numbers), write one; otherwise write "
    "<noinput>. Then write the correct, complete output.\nReply in exactly this form:\n"
    "Input: <the input, or <noinput>>\nOutput: <the output>"
)

# Alpaca's blacklist: tasks about things a text-only model cannot see or produce.
UNSEEABLE_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "photo", "photos", "file", "files",
                   "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_UNSEEABLE = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in UNSEEABLE_WORDS) + r")\b", re.IGNORECASE)
_INSTRUCTION = re.compile(r"^\W*(?:new\s+)?(?:instruction|task)(?:\s*\d+)?\s*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_INSTANCE = re.compile(r"input\s*:\s*(.*?)\s*output\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)
_OUTPUT_ONLY = re.compile(r"^\W*output\s*:\s*(.*)", re.IGNORECASE | re.DOTALL | re.MULTILINE)
_NO_INPUT = {"", "<noinput>", "<no input>", "noinput", "none", "n/a", "(none)", "-"}

INSTRUCTION_RULES = ("empty", "unparseable_instruction", "too_short", "too_long", "unseeable", "duplicate")
INSTANCE_RULES = ("unparseable_instance", "empty_output", "output_too_long")
JUDGE_RULES = ("judge_unreadable", "judge_low")


# --------------------------------------------------------------------------- prompts and parsing


def instruction_prompt(examples: list[str]) -> Messages:
    listed = "\n".join(f"Task {i}: {text}" for i, text in enumerate(examples, start=1))
    return [{"role": "system", "content": INSTRUCTION_SYSTEM},
            {"role": "user", "content": INSTRUCTION_USER.format(examples=listed)}]


def instance_prompt(instruction: str) -> Messages:
    return [{"role": "system", "content": INSTANCE_SYSTEM},
            {"role": "user", "content": INSTANCE_USER.format(instruction=instruction)}]


def parse_instruction(reply: str) -> str | None:
    """The first non-empty text after an "Instruction:" (or "Task N:") marker, on its line or, when
    the marker ends its line, on the next non-empty line; "" when markers hold no text; None
    when there is no marker."""
    lines = reply.splitlines()
    found = False
    for number, line in enumerate(lines):
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        found = True
        text = match.group(1).strip()
        if not text:
            following = next((later for later in lines[number + 1:] if later.strip()), "")
            text = "" if _INSTRUCTION.match(following) else following.strip()
        text = text.strip("\"'“”").strip()
        if text:
            return text
    return "" if found else None


def parse_instance(reply: str) -> tuple[str, str] | None:
    """(input, output) from "Input: … Output: …" (or "Output: …" alone); <noinput> and the like become ""."""
    match = _INSTANCE.search(reply)
    if match is None:
        alone = _OUTPUT_ONLY.search(reply)
        return None if alone is None else ("", alone.group(1).strip())
    given, output = match.group(1).strip(), match.group(2).strip()
    return ("" if given.lower() in _NO_INPUT else given), output


def instruction_rule(reply: str, cfg: SynthConfig) -> tuple[str | None, str | None]:
    """(instruction, None) when it passes the checks that need no other task, else (text or None, rule)."""
    if not reply.strip():
        return None, "empty"
    instruction = parse_instruction(reply)
    if instruction is None:
        return None, "unparseable_instruction"
    if not instruction:
        return instruction, "empty"
    if len(instruction) < cfg.min_chars:
        return instruction, "too_short"
    if len(instruction) > cfg.max_chars:
        return instruction, "too_long"
    if _UNSEEABLE.search(instruction):
        return instruction, "unseeable"
    return instruction, None


# --------------------------------------------------------------------------- near-duplicates


class NearDuplicates:
    """Kept instructions, tokenised once, and the most similar one to a new text by ROUGE-L F1
    (the same value as honing.evals.metrics.rouge_l_f1)."""

    def __init__(self, texts: list[str] = ()):  # type: ignore[assignment]
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.tokens.append(_rouge_tokens(text))

    def nearest(self, text: str) -> tuple[float, str | None]:
        tokens = _rouge_tokens(text)
        best, nearest = 0.0, None
        if not tokens:
            return best, nearest
        for other_text, other in zip(self.texts, self.tokens):
            if not other or 2 * min(len(tokens), len(other)) / (len(tokens) + len(other)) <= best:
                continue  # F1 cannot beat the best so far: skip the O(n·m) LCS
            lcs = _lcs_length(tokens, other)
            if lcs:
                precision, recall = lcs / len(tokens), lcs / len(other)
                score = 2 * precision * recall / (precision + recall)
                if score > best:
                    best, nearest = score, other_text
        return best, nearest


# --------------------------------------------------------------------------- the loop


def load_seeds(path: str) -> list[dict[str, str]]:
    """Seed tasks: records with a non-empty `instruction` (plus optional `input` and `output`)."""
    from honing.data.loading import read_records

    seeds = []
    for file, line, record in read_records(path):
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str) or not record["instruction"].strip():
            raise DataError(f"{file}:{line}: a seed task needs a non-empty `instruction` (Alpaca: instruction, input, output)")
        seeds.append({"instruction": record["instruction"].strip(), "input": str(record.get("input") or ""),
                      "output": str(record.get("output") or "")})
    if not seeds:
        raise DataError(f"{path} holds no seed tasks")
    return seeds


def derive_seed(seed: int, *parts: Any) -> int:
    """A sampling seed for one batch, from the run's seed and where the batch is (stable across resumes)."""
    return random.Random(":".join(str(p) for p in (seed, *parts))).getrandbits(31)


@dataclass
class Candidate:
    instruction: str
    rouge_l_max: float
    nearest: str | None
    input: str = ""
    output: str = ""
    judge_score: float | None = None


def self_instruct(cfg: SynthConfig, teacher: Any, judge: Any, store: SynthStore, state: dict[str, Any],
                  stop: StopRequest) -> tuple[dict[str, Any], bool]:
    """Rounds until num_instructions are kept, max_rounds are done or a stop is requested; (state, finished)."""
    seeds = load_seeds(cfg.seeds)
    kept_so_far = [record["instruction"] for record in store.kept_records()]
    pool = [seed["instruction"] for seed in seeds] + kept_so_far
    index = NearDuplicates(pool)
    while state["kept"] < cfg.num_instructions and state["round"] < cfg.max_rounds and not stop.requested:
        round_index = state["round"]
        kept, dropped = run_round(cfg, round_index, pool, index, teacher, judge,
                                  remaining=cfg.num_instructions - state["kept"])
        counts = Counter(state["dropped"])
        counts.update(d["reason"] for d in dropped)
        state = {**state, "round": round_index + 1, "kept": state["kept"] + len(kept),
                 "requested": state["requested"] + cfg.batch_size, "dropped": dict(sorted(counts.items()))}
        store.commit(kept, dropped, state)
        for record in kept:
            pool.append(record["instruction"])
            index.add(record["instruction"])
        console.print(f"round {round_index}: kept {len(kept)} of {cfg.batch_size} "
                      f"({state['kept']}/{cfg.num_instructions}); dropped {dict(Counter(d['reason'] for d in dropped))}")
    finished = state["kept"] >= cfg.num_instructions or state["round"] >= cfg.max_rounds
    return state, finished


def run_round(cfg: SynthConfig, round_index: int, pool: list[str], index: NearDuplicates, teacher: Any, judge: Any,
              *, remaining: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One round: (kept records, dropped entries with their rule)."""
    rng = random.Random(f"self-instruct:{cfg.seed}:{round_index}")
    prompts = [instruction_prompt(rng.sample(pool, min(cfg.in_context, len(pool)))) for _ in range(cfg.batch_size)]
    replies = teacher.texts(prompts, seed=derive_seed(cfg.seed, round_index, "instruction"))
    dropped: list[dict[str, Any]] = []

    def drop(rule: str, **details: Any) -> None:
        dropped.append({"reason": rule, "round": round_index, **details})

    candidates: list[Candidate] = []
    this_round = NearDuplicates()
    for reply in replies:
        instruction, rule = instruction_rule(reply, cfg)
        if rule is None:
            score, nearest = max(index.nearest(instruction), this_round.nearest(instruction), key=lambda x: x[0])
            if score > cfg.max_rouge_l:
                drop("duplicate", instruction=instruction, rouge_l_max=round(score, 4), nearest=nearest)
                continue
            candidates.append(Candidate(instruction, score, nearest))
            this_round.add(instruction)
        else:
            drop(rule, reply=reply, instruction=instruction)

    replies = teacher.texts([instance_prompt(c.instruction) for c in candidates],
                            seed=derive_seed(cfg.seed, round_index, "instance"))
    answered: list[Candidate] = []
    for candidate, reply in zip(candidates, replies):
        parsed = parse_instance(reply)
        if parsed is None:
            drop("unparseable_instance", instruction=candidate.instruction, reply=reply)
        elif not parsed[1]:
            drop("empty_output", instruction=candidate.instruction, reply=reply)
        elif len(parsed[1]) > cfg.max_output_chars:
            drop("output_too_long", instruction=candidate.instruction, reply=reply)
        else:
            candidate.input, candidate.output = parsed
            answered.append(candidate)

    if judge is not None and answered:
        answered = _judged(cfg, judge, answered, drop)

    kept = [_record(cfg, teacher, round_index, c) for c in answered[:remaining]]
    for candidate in answered[remaining:]:
        drop("over_target", instruction=candidate.instruction, input=candidate.input, output=candidate.output)
    return kept, dropped


def _judged(cfg: SynthConfig, judge: Any, answered: list[Candidate], drop: Any) -> list[Candidate]:
    from honing.evals.judges import judge_rubric

    questions = [c.instruction + (f"\n\n{c.input}" if c.input else "") for c in answered]
    grades = judge_rubric(judge, questions, [c.output for c in answered], cfg.rubric, [None] * len(answered))
    passed = []
    for candidate, (score, reply) in zip(answered, grades):
        candidate.judge_score = score
        if score is None:
            drop("judge_unreadable", instruction=candidate.instruction, judge_reply=reply)
        elif score < cfg.min_judge_score:
            drop("judge_low", instruction=candidate.instruction, judge_score=score, judge_reply=reply)
        else:
            passed.append(candidate)
    return passed


def _record(cfg: SynthConfig, teacher: Any, round_index: int, candidate: Candidate) -> dict[str, Any]:
    return {
        "instruction": candidate.instruction,
        "input": candidate.input,
        "output": candidate.output,
        "_provenance": {
            "method": "self-instruct",
            "teacher": teacher.identity,
            "template": TEMPLATE,
            "seed": cfg.seed,
            "round": round_index,
            "rouge_l_max": round(candidate.rouge_l_max, 4),
            "nearest": candidate.nearest,
            "judge_score": candidate.judge_score,
        },
    }
