"""Retrieval evaluation on a QA set with gold sources or chunk ids: the ranking scored per question, and, when the
model answered, the answer scored (found, cited, grounded); then means with bootstrap intervals, per `kind` too.

    questions    a .jsonl of {question, sources | chunks, answer?, aliases?, kind?, split?, id?}; file:line errors
    scoring      recall@k, MRR, nDCG@k (honing.rag.metrics); answer found (answer or alias, normalised); citations
                 of retrieved vs unknown ids; groundedness by the judge, claim by claim, or by word overlap
    summary      bootstrap_mean of every metric, over all questions and per kind
    report       report.md from the summary and the per-question records

A judge's reply that does not give a verdict for every claim is counted as unparsed and left out of the mean; it
is never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from honing.errors import DataError
from honing.rag.ask import CITATION, check_citations
from honing.rag.metrics import contains_answer, groundedness, retrieval_scores, sentences, source_of

if TYPE_CHECKING:
    from honing.models.chat import ChatModel
    from honing.rag.search import Hit

BUNDLED = {"builtin:kestrelmark": ("questions.jsonl", "test"),
           "builtin:kestrelmark_train": ("questions.jsonl", "train")}
"""Bundled QA sets: (file under honing/rag/data/, the split kept). builtin:kestrelmark is the bundled task's 100 test
questions, the set `honing eval` and `honing ladder` call builtin:kestrelmark; gold sources are relative to
data/corpus/."""


@dataclass
class Question:
    """One question of the QA set: the gold ids (sources, or chunk ids with `#`) and, when given, the answer."""

    id: str
    question: str
    gold: list[str]
    answer: str | None = None
    aliases: list[str] = field(default_factory=list)
    kind: str | None = None
    line: int = 0


# --------------------------------------------------------------------------- questions


def data_path(spec: str) -> tuple[Path, str | None]:
    """(the QA file, the split a bundled set keeps; None: every line)."""
    if spec in BUNDLED:
        name, split = BUNDLED[spec]
        return Path(str(files("honing.rag") / "data" / name)), split
    if spec.startswith("builtin:"):
        raise DataError(f"data: unknown bundled QA set {spec!r}; bundled: {', '.join(BUNDLED)}")
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"data: {spec} does not exist; give a .jsonl of questions with gold sources or chunks, or "
                        "builtin:kestrelmark")
    return path, None


def _strings(row: dict[str, Any], key: str, where: str) -> list[str]:
    value = row.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: `{key}` must be a non-empty list of strings, got {json.dumps(value)[:80]}")
    return [v.strip() for v in value]


def parse_question(row: Any, where: str, number: int) -> Question:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with question and sources or chunks")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        raise DataError(f"{where}: no `question` (a non-empty string)")
    if "chunks" in row:
        gold = _strings(row, "chunks", where)
        if bad := [g for g in gold if "#" not in g]:
            raise DataError(f"{where}: `chunks` holds chunk ids (source#n); {bad[0]!r} is a source: put it in "
                            "`sources`")
    elif "sources" in row:
        gold = _strings(row, "sources", where)
        if bad := [g for g in gold if "#" in g]:
            raise DataError(f"{where}: `sources` holds document names; {bad[0]!r} is a chunk id: put it in `chunks`")
    else:
        raise DataError(f"{where}: no gold ids: give `sources` (document names, e.g. manuals/a.md) or `chunks` "
                        "(chunk ids, e.g. manuals/a.md#3)")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"{where}: `answer` must be a string")
    aliases = row.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError(f"{where}: `aliases` must be a list of strings")
    return Question(str(row.get("id", f"line{number}")), row["question"].strip(), gold, answer, aliases,
                    None if row.get("kind") is None else str(row["kind"]), number)


def load_questions(spec: str, split: str | None = None) -> tuple[Path, list[Question]]:
    """(the file, its questions of that split); a bad line is an error naming file:line and the key."""
    path, bundled_split = data_path(spec)
    questions, splits = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
        question = parse_question(row, where, number)
        row_split = row.get("split")
        if bundled_split is not None and row_split != bundled_split:
            continue
        splits.add(row_split)
        if split is None or row_split == split:
            questions.append(question)
    if not questions:
        named = sorted(str(s) for s in splits if s is not None)
        hint = f"; its splits: {', '.join(named)}" if named else "; it has no `split` field: set split=null"
        raise DataError(f"{path}: no question{'' if split is None else f' with split {split!r}'}{hint}")
    seen: dict[str, int] = {}
    for q in questions:
        if q.id in seen:
            raise DataError(f"{path}:{q.line}: id {q.id!r} is already used at line {seen[q.id]}")
        seen[q.id] = q.line
    return path, questions


def missing_gold(questions: Sequence[Question], documents: set[str]) -> dict[str, list[str]]:
    """Per question id, the gold ids whose document the index does not hold (they can never be retrieved)."""
    found = {}
    for q in questions:
        absent = [g for g in q.gold if source_of(g) not in documents]
        if absent:
            found[q.id] = absent
    return found


# --------------------------------------------------------------------------- scoring


def score_retrieval(question: Question, hits: Sequence[Hit], k: int) -> dict[str, Any]:
    ids = [hit.id for hit in hits]
    return {"id": question.id, "kind": question.kind, "question": question.question, "gold": question.gold,
            "retrieved": ids, **retrieval_scores(ids, question.gold, k)}


def without_citations(answer: str) -> str:
    return CITATION.sub("", answer)


def score_answer(question: Question, hits: Sequence[Hit], response: str) -> dict[str, Any]:
    """Found (the answer or an alias is in the response; None without an answer), and the citations."""
    citations = check_citations(response, hits)
    cited = citations.retrieved + citations.unknown
    gold = set(question.gold)
    return {"response": response, "expected": question.answer,
            "correct": None if question.answer is None else float(
                contains_answer(response, [question.answer, *question.aliases])),
            "cited": citations.retrieved, "cited_unknown": citations.unknown,
            "cites": float(bool(cited)),
            "citations_valid": len(citations.retrieved) / len(cited) if cited else None,
            "cites_gold": float(any(c in gold or source_of(c) in gold for c in citations.retrieved))}


GROUNDED_SYSTEM = ("You check whether statements are supported by a text. A statement is supported only when the "
                   "text says it or it follows directly from what the text says; what you know from elsewhere does "
                   "not count.")
GROUNDED_USER = ("Text:\n\n{context}\n\nStatements:\n{claims}\n\nFor each statement, is it supported by the text? "
                 "Reply with one line per statement, in order, and nothing else: \"1: yes\" or \"1: no\".")
VERDICT = re.compile(r"^\W*(?:statement\s*)?(\d+)\**\s*[:.)\-]\s*\**\s*(yes|no|supported|unsupported|not supported)\b",
                     re.IGNORECASE | re.MULTILINE)
LONE_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def grounded_prompt(claims: Sequence[str], hits: Sequence[Hit]) -> list[dict[str, str]]:
    context = "\n\n".join(f"[{hit.id}]\n{hit.chunk['text'].strip()}" for hit in hits)
    listed = "\n".join(f"{n}. {claim}" for n, claim in enumerate(claims, 1))
    return [{"role": "system", "content": GROUNDED_SYSTEM},
            {"role": "user", "content": GROUNDED_USER.format(context=context, claims=listed)}]


def parse_claim_verdicts(reply: str, claims: int) -> list[bool] | None:
    """One verdict per claim ("N: yes" / "N: no", first one for each N), or None when any claim has none."""
    verdicts: dict[int, bool] = {}
    for number, word in VERDICT.findall(reply):
        verdicts.setdefault(int(number), word.lower() in ("yes", "supported"))
    if claims == 1 and 1 not in verdicts and (lone := LONE_VERDICT.match(reply)):
        verdicts[1] = lone[1].lower() == "yes"
    if not all(n in verdicts for n in range(1, claims + 1)):
        return None
    return [verdicts[n] for n in range(1, claims + 1)]


def judge_groundedness(judge: ChatModel, responses: Sequence[str],
                       hits: Sequence[Sequence[Hit]]) -> list[dict[str, Any]]:
    """Per answer: its claims (sentences, citations removed), the judge's reply, and the share of claims it found
    supported (None: the reply was unparsed). An answer with no claim scores 0 without asking."""
    claims = [sentences(without_citations(r)) for r in responses]
    asked = [i for i, found in enumerate(claims) if found]
    replies = judge.texts([grounded_prompt(claims[i], hits[i]) for i in asked]) if asked else []
    results = [{"claims": found, "groundedness": 0.0, "judge_reply": None} for found in claims]
    for i, reply in zip(asked, replies):
        verdicts = parse_claim_verdicts(reply, len(claims[i]))
        results[i].update(judge_reply=reply, verdicts=verdicts,
                          groundedness=None if verdicts is None else sum(verdicts) / len(verdicts))
    return results


def overlap_groundedness(responses: Sequence[str], hits: Sequence[Sequence[Hit]],
                         threshold: float) -> list[dict[str, Any]]:
    return [{"groundedness": groundedness(without_citations(r), [h.chunk["text"] for h in found], threshold)}
            for r, found in zip(responses, hits)]


# --------------------------------------------------------------------------- summary


ANSWER_METRICS = ("correct", "cites", "citations_valid", "cites_gold", "groundedness")


def metric_names(k: int, answered: bool) -> list[str]:
    return [f"recall@{k}", "mrr", f"ndcg@{k}", *(ANSWER_METRICS if answered else ())]


def summarize(records: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Mean and 95% bootstrap interval of every metric (records where it is None are left out), over all the
    questions and per kind."""
    from honing.evals.stats import bootstrap_mean

    def mean(values: list[float]) -> dict[str, Any]:
        interval = bootstrap_mean(values).as_dict()
        return interval if values else {**interval, "mean": None, "low": None, "high": None}  # JSON has no NaN

    def means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {name: mean([r[name] for r in rows if r.get(name) is not None]) for name in names}

    kinds = sorted({r["kind"] for r in records if r["kind"] is not None})
    return {"all": means(records), "by_kind": {kind: means([r for r in records if r["kind"] == kind])
                                               for kind in kinds}}


def model_name(identity: dict[str, Any]) -> str:
    """A model's identity (ChatModel.identity) in a few words: its name, its endpoint's model, or its path."""
    return str(identity.get("name") or identity.get("model") or identity.get("path") or identity.get("kind"))


def _cell(interval: dict[str, Any]) -> str:
    if interval["n"] == 0:
        return "–"
    return f"{interval['mean']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def report_markdown(results: dict[str, Any]) -> str:
    """report.md: the settings, the metrics (all and per kind), the warnings, and the questions retrieval missed."""
    summary, names = results["summary"], results["metrics"]
    columns = ["all", *summary["by_kind"]]
    counts = [summary["all"][names[0]]["n"], *(summary["by_kind"][k][names[0]]["n"] for k in summary["by_kind"])]
    retrieval, split = results["retrieval"], "" if results["split"] is None else f", split {results['split']}"
    lines = ["# honing rag eval", "",
             f"- data: `{results['data']}` ({results['questions']} questions{split})",
             f"- index: `{results['index']}`",
             (f"- retrieval: {retrieval['mode']}, k = {retrieval['k']}, candidates = {retrieval['candidates']}, "
              f"reranker = {retrieval['reranker'] or 'none'}")]
    if results.get("groundedness_method"):
        lines.append(f"- groundedness: {results['groundedness_method']}"
                     + (f" (judge {model_name(results['judge'])}; {results['groundedness_unparsed']} replies unparsed, "
                        "left out)" if results["groundedness_method"] == "judge" else
                        f" (threshold {results['overlap_threshold']})"))
    lines += ["", "Means with 95% bootstrap intervals.", "",
              "| metric | " + " | ".join(f"{c} (n={n})" for c, n in zip(columns, counts)) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for name in names:
        cells = [_cell(summary["all"][name]), *(_cell(summary["by_kind"][k][name]) for k in summary["by_kind"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results["missing_gold"]:
        lines += ["", f"**{len(results['missing_gold'])} questions have gold ids the index holds no document for** "
                  "(they can never be retrieved): " + ", ".join(sorted(results["missing_gold"])[:20])]
    recall = names[0]
    missed = [r for r in results["per_question"] if r[recall] == 0.0]
    if missed:
        lines += ["", f"## Missed: no gold id in the top {results['retrieval']['k']} ({len(missed)})", "",
                  "| id | kind | question | gold | retrieved first |", "|---|---|---|---|---|"]
        for r in missed[:30]:
            question = r["question"].replace("|", "\\|")
            lines.append(f"| {r['id']} | {r['kind'] or ''} | {question} | {', '.join(r['gold'])} | "
                         f"{r['retrieved'][0] if r['retrieved'] else '–'} |")
        if len(missed) > 30:
            lines.append(f"\n…and {len(missed) - 30} more in results.json.")
    return "\n".join(lines) + "\n"
