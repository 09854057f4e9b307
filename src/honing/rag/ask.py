"""A question answered from retrieved chunks: the prompt (each chunk labelled with its id, and the instruction to
cite the ids used), and the citations read back from the answer.

The answer goes through honing's one ChatModel, so any model honing can name answers: local, adapter, endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from honing.rag.search import Hit

INSTRUCTION = ("Answer the question using only the context below. After each statement, cite the id of the context "
               "passage it comes from in square brackets, like [{example}]. If the context does not hold the answer, "
               "say that you do not know.")
QUESTION_MARK = "\n\nQuestion: "
"""What precedes the question in rag_prompt's turn (the request log's drift reads the question back after it)."""
CITATION = re.compile(r"\[([^\[\]\n]+?)\]")


def rag_prompt(question: str, hits: Sequence[Hit], instruction: str | None = None) -> str:
    """The user turn: the instruction (default: answer from the context and cite its ids), the labelled chunks,
    then the question."""
    example = hits[0].id if hits else "doc.md#0"
    context = "\n\n".join(f"[{hit.id}]\n{hit.chunk['text'].strip()}" for hit in hits)
    told = instruction if instruction is not None else INSTRUCTION.format(example=example)
    return f"{told}\n\nContext:\n\n{context}{QUESTION_MARK}{question}"


def cited_ids(answer: str) -> list[str]:
    """The ids the answer cites, in order, once each: [a.md#1], [a.md#1, b.md#2] and [a.md#1; b.md#2] all count."""
    found: dict[str, None] = {}
    for group in CITATION.findall(answer):
        for item in re.split(r"[;,]\s*", group):
            if item.strip():
                found[item.strip()] = None
    return list(found)


@dataclass
class Citations:
    """The answer's citations, split by whether they name a chunk that was retrieved for it."""

    retrieved: list[str]
    unknown: list[str]


def check_citations(answer: str, hits: Sequence[Hit]) -> Citations:
    ids = {hit.id for hit in hits}
    cited = cited_ids(answer)
    return Citations([c for c in cited if c in ids], [c for c in cited if c not in ids])
