"""Feedback in the request log, as training data (`honing monitor export`).

    sft.jsonl          one {"messages": the logged conversation + the corrected answer} per correction
    preferences.jsonl  {"prompt": the logged conversation, "chosen", "rejected"} pairs:
                       a choice among a request's n answers   chosen = the picked one, rejected = each other one
                       a correction                           chosen = the correction, rejected = the logged answer
                       up and down ratings on two answers     chosen = the one rated up, rejected = the one down
                       of one request
    skipped            every feedback row that gave nothing, with the reason (a down-rating with no correction
                       and no up-rated other answer gives no pair; answers rated both up and down, or choices
                       that disagree, give none either)

Every record carries `provenance` (request ids, feedback ids, model, version, times); `honing sft` and `honing
dpo` read only their own keys, so the files load unchanged. Each record is checked with honing's own format
rules (`honing.data.formats.normalize`) before it is written, so what is exported is what they accept; the
same pair or conversation from several feedback rows is written once, with all of their ids. A completions
request's prompt becomes one user message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from honing.data.prompts import ROLES
from honing.serve.drift import content_text
from honing.serve.monitor import matches, when

REASONS = {
    "no_text": "the log keeps no text of this request (log.store_text=false)",
    "not_answered": "the request was not answered (its status is not 200)",
    "not_in_log": "the request is not in the log",
    "conversation": "the logged request is not a conversation honing's chat format holds",
    "down_only": "a down-rating with no correction and no up-rated other answer of the request gives no pair",
    "up_only": "an up-rating with no down-rated other answer of the request gives no pair",
    "rated_both": "the same answer was rated both up and down",
    "choices_disagree": "the choices given on this request pick different answers",
    "single_answer": "a choice on a request with one answer compares nothing",
    "same_text": "the preferred and the other answer are the same text",
    "no_answer": "the answer the feedback is about is not in the log",
    "comment_only": "a comment only (no rating, correction or choice)",
    "invalid": "the record does not pass honing's format check",
}
"""Why a feedback row gave no record: code -> explanation (skipped.jsonl has the code and the detail)."""


@dataclass
class Exported:
    """What an export writes: the records, the feedback rows that gave nothing, and the counts."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    preferences: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    outside_filter: int = 0
    merged: int = 0

    def counts(self) -> dict[str, Any]:
        by_source: dict[str, int] = {}
        for record in self.preferences:
            for source in record["provenance"]["sources"]:
                by_source[source] = by_source.get(source, 0) + 1
        skipped: dict[str, int] = {}
        for row in self.skipped:
            skipped[row["reason"]] = skipped.get(row["reason"], 0) + 1
        return {"sft": len(self.sft), "preferences": len(self.preferences), "preferences_by_source": by_source,
                "skipped": skipped, "skipped_rows": len(self.skipped), "outside_filter": self.outside_filter,
                "duplicates_merged": self.merged, "reasons": {code: REASONS[code] for code in skipped}}


class _Request:
    """One logged request with its feedback: what each feedback row gave, or why it gave nothing."""

    def __init__(self, row: dict[str, Any], feedback: list[dict[str, Any]]):
        self.row = row
        self.feedback = feedback
        self.answers = {c.get("index", i): c.get("text") for i, c in enumerate(row.get("choices") or [])}
        self.records: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
        """(kind sft | preference, record without provenance, the feedback rows it came from)."""
        self.why: dict[int, tuple[str, str]] = {}
        """feedback id -> (reason code, detail), the first reason found; a row that gave a record is not skipped."""
        self.kind = "chat"

    def skip(self, rows: list[dict[str, Any]], code: str, detail: str = "") -> None:
        for row in rows:
            self.why.setdefault(row["id"], (code, detail or REASONS[code]))

    def answer(self, index: int) -> str | None:
        text = self.answers.get(index)
        return text if isinstance(text, str) else None

    def pair(self, prompt: list[dict[str, str]], chosen: int | str, rejected: int, source: str,
             rows: list[dict[str, Any]]) -> None:
        """A preference pair: `chosen` is an answer's index, or a text of its own (a correction)."""
        chosen_text = chosen if isinstance(chosen, str) else self.answer(chosen)
        rejected_text = self.answer(rejected)
        if chosen_text is None or rejected_text is None:
            self.skip(rows, "no_answer", f"answer {rejected if rejected_text is None else chosen} is not in the log")
        elif chosen_text.strip() == rejected_text.strip():
            self.skip(rows, "same_text")
        else:
            self.records.append(("preference", {"prompt": prompt, "chosen": chosen_text, "rejected": rejected_text,
                                                "source": source}, rows))


# --------------------------------------------------------------------------- a request's feedback


def conversation(request: dict[str, Any]) -> tuple[list[dict[str, str]] | None, str]:
    """(the prompt as chat messages, "chat" | "completions"), or (None, why) when it is not one."""
    if isinstance(request.get("messages"), list):
        messages = []
        for message in request["messages"]:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ROLES:
                return None, f"it has a {role!r} message; honing's chat format holds system, user and assistant"
            messages.append({"role": role, "content": content_text(message.get("content"))})
        return messages, "chat"
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}], "completions"
    return None, "it holds neither messages nor one prompt"


def _ratings(request: _Request, prompt: list[dict[str, str]]) -> None:
    ups: dict[int, list[dict[str, Any]]] = {}
    downs: dict[int, list[dict[str, Any]]] = {}
    for row in request.feedback:
        if row.get("rating") in ("up", "down"):
            (ups if row["rating"] == "up" else downs).setdefault(row["answer_index"], []).append(row)
    for index in set(ups) & set(downs):
        request.skip(ups.pop(index) + downs.pop(index), "rated_both", f"answer {index} was rated both up and down")
    for up, up_rows in sorted(ups.items()):
        for down, down_rows in sorted(downs.items()):
            request.pair(prompt, up, down, "ratings", up_rows + down_rows)
    if not downs:
        request.skip([r for rows in ups.values() for r in rows], "up_only")
    if not ups:
        request.skip([r for rows in downs.values() for r in rows if not r.get("correction")], "down_only")


def _choices(request: _Request, prompt: list[dict[str, str]]) -> None:
    rows = [r for r in request.feedback if r.get("choice") is not None]
    picked = sorted({r["choice"] for r in rows})
    if not rows:
        return
    if len(picked) > 1:
        request.skip(rows, "choices_disagree", f"answers {', '.join(map(str, picked))} were each picked")
        return
    others = [i for i in sorted(request.answers) if i != picked[0]]
    if not others:
        request.skip(rows, "single_answer")
    for other in others:
        request.pair(prompt, picked[0], other, "choice", rows)


def _corrections(request: _Request, prompt: list[dict[str, str]]) -> None:
    for row in request.feedback:
        correction = row.get("correction")
        if not correction or not correction.strip():
            continue
        request.records.append(("sft", {"messages": [*prompt, {"role": "assistant", "content": correction}],
                                        "source": "correction"}, [row]))
        request.pair(prompt, correction, row["answer_index"], "correction", [row])


def request_records(row: dict[str, Any] | None, feedback: list[dict[str, Any]]) -> _Request:
    """Everything one request's feedback gives."""
    request = _Request(row or {}, feedback)
    if row is None:
        request.skip(feedback, "not_in_log")
        return request
    if row["status"] != 200:
        request.skip(feedback, "not_answered")
        return request
    if row.get("request") is None or row.get("choices") is None:
        request.skip(feedback, "no_text")
        return request
    prompt, kind = conversation(row["request"])
    if prompt is None:
        request.skip(feedback, "conversation", f"the logged request is not a conversation: {kind}")
        return request
    request.kind = kind
    _corrections(request, prompt)
    _choices(request, prompt)
    _ratings(request, prompt)
    used = {r["id"] for _, _, rows in request.records for r in rows}
    request.skip([r for r in feedback if r["id"] not in used and r.get("rating") is None and r.get("choice") is None
                  and not r.get("correction")], "comment_only")
    return request


# --------------------------------------------------------------------------- the export


def _provenance(request: _Request, rows: list[dict[str, Any]], source: str) -> dict[str, Any]:
    row = request.row
    return {"sources": [source], "request_ids": [row["id"]], "feedback_ids": [r["id"] for r in rows],
            "model": row.get("model"), "model_version": row.get("model_version"),
            "requested_at": when(row["created"]), "feedback_at": when(max(r["created"] for r in rows)),
            "endpoint": request.kind}


def _checked(kind: str, record: dict[str, Any]) -> str | None:
    """Why honing's sft (chat) or dpo (preference) reading would refuse this record; None when it reads it."""
    from honing.data.formats import RecordError, normalize

    try:
        normalize(record, "chat" if kind == "sft" else "preference")
    except RecordError as err:
        return str(err)
    return None


def _merge(into: dict[str, Any], provenance: dict[str, Any]) -> None:
    mine = into["provenance"]
    for key in ("sources", "request_ids", "feedback_ids"):
        mine[key] = list(dict.fromkeys(mine[key] + provenance[key]))
    mine["feedback_at"] = max(mine["feedback_at"], provenance["feedback_at"])


def export_feedback(requests: dict[str, dict[str, Any]], feedback: list[dict[str, Any]],
                    model: str | None) -> Exported:
    """The SFT records and preference pairs of these feedback rows (on these logged requests), filtered by model."""
    out = Exported()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in feedback:
        by_request.setdefault(row["request_id"], []).append(row)
    seen: dict[str, dict[str, Any]] = {}
    for request_id, rows in by_request.items():
        row = requests.get(request_id)
        if row is not None and not matches(row, model):
            out.outside_filter += len(rows)
            continue
        request = request_records(row, rows)
        written: set[int] = set()
        for kind, record, used in request.records:
            source = record.pop("source")
            problem = _checked(kind, record)
            if problem:  # listed even when the same row gave another record (a correction's SFT row)
                out.skipped += [{"feedback_id": r["id"], "request_id": request_id, "reason": "invalid",
                                 "detail": f"{kind} record: {problem}"} for r in used]
                continue
            written |= {r["id"] for r in used}
            provenance = _provenance(request, used, source)
            key = json.dumps([kind, request.row.get("model_version"), record], sort_keys=True, ensure_ascii=False)
            if key in seen:
                _merge(seen[key], provenance)
                out.merged += 1
                continue
            seen[key] = {**record, "provenance": provenance}
            (out.sft if kind == "sft" else out.preferences).append(seen[key])
        for feedback_id, (code, detail) in request.why.items():
            if feedback_id not in written:
                out.skipped.append({"feedback_id": feedback_id, "request_id": request_id, "reason": code,
                                    "detail": detail})
    return out
