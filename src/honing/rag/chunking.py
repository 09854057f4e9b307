"""Chunks of a document, by tokens, with overlap, along its structure.

    document ─▶ sections (a chunk never crosses a heading)
             ─▶ paragraphs, kept whole when they fit in a chunk
             ─▶ a paragraph too long for one chunk: its sentences; a sentence too long: windows of
                chunk_tokens tokens that overlap by overlap_tokens
             ─▶ units packed greedily into chunks of at most chunk_tokens; a new chunk in the same section starts
                with the last sentences of the one before, up to overlap_tokens

Tokens are counted with the embedding model's tokenizer, given as `spans(text) -> [(start, end), ...]` (character
offsets of each token); a section is tokenised once and every count after that is a bisection of its offsets.
A chunk's text is a slice of the document's text, so its character start and end are exact.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from honing.rag.documents import Document, Section

TokenSpans = Callable[[str], list[tuple[int, int]]]
"""A tokenizer as character offsets: text -> [(start, end) of each token]."""
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
SENTENCE_END = re.compile(r"(?<=[.!?。])[\"')\]]*\s+")


@dataclass
class Chunk:
    """One retrievable piece of a document."""

    id: str
    """`<source>#<index>`: stable while the document's chunking is unchanged."""
    source: str
    index: int
    start: int
    """Character offsets of `text` in the document's text."""
    end: int
    headings: tuple[str, ...]
    text: str
    tokens: int
    sha256: str
    """Hash of what is embedded (headings + text): equal hashes share one embedding across reruns."""

    @property
    def embedded_text(self) -> str:
        """What is embedded and searched: the heading path, then the text."""
        return (" > ".join(self.headings) + "\n\n" + self.text) if self.headings else self.text


class _Counter:
    """Token counts of spans of one text, from its token offsets."""

    def __init__(self, text: str, spans: TokenSpans):
        self.offsets = spans(text)
        self.starts = [s for s, _ in self.offsets]
        self.ends = [e for _, e in self.offsets]

    def count(self, start: int, end: int) -> int:
        return max(0, bisect_right(self.ends, end) - bisect_left(self.starts, start))

    def windows(self, start: int, end: int, size: int, overlap: int) -> list[tuple[int, int]]:
        """Spans of `size` tokens each, overlapping by `overlap` tokens, covering [start, end)."""
        first, last = bisect_left(self.starts, start), bisect_right(self.ends, end)
        spans, step = [], size - overlap
        for i in range(first, last, step):
            j = min(i + size, last)
            spans.append((self.offsets[i][0], self.offsets[j - 1][1]))
            if j == last:
                break
        return spans


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    offset = start + len(piece) - len(piece.lstrip())
    return offset, offset + len(stripped)


def split_on(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The non-blank pieces of text[start:end] between matches of `pattern`, as trimmed spans."""
    pieces, cursor = [], start
    for match in pattern.finditer(text, start, end):
        pieces.append(_trimmed(text, cursor, match.start()))
        cursor = match.end()
    pieces.append(_trimmed(text, cursor, end))
    return [piece for piece in pieces if piece]


def _units(text: str, counter: _Counter, size: int, overlap: int) -> list[tuple[int, int, bool]]:
    """(start, end, is_window) pieces no longer than `size` tokens: whole paragraphs, else sentences, else windows."""
    units = []
    for p_start, p_end in split_on(PARAGRAPH_BREAK, text, 0, len(text)):
        if counter.count(p_start, p_end) <= size:
            units.append((p_start, p_end, False))
            continue
        for s_start, s_end in split_on(SENTENCE_END, text, p_start, p_end):
            if counter.count(s_start, s_end) <= size:
                units.append((s_start, s_end, False))
            else:
                units.extend((w_start, w_end, True) for w_start, w_end in counter.windows(s_start, s_end, size, overlap))
    return units


def _overlap_start(text: str, counter: _Counter, unit: tuple[int, int, bool], overlap: int) -> int | None:
    """Where the carried-over tail of a chunk ending with `unit` starts: its last whole sentences that fit in
    `overlap` tokens; None when not even the last one fits (or the unit is a window, which overlaps by itself)."""
    start, end, is_window = unit
    if is_window or overlap == 0:
        return None
    carried = None
    for s_start, _ in reversed(split_on(SENTENCE_END, text, start, end)):
        if counter.count(s_start, end) > overlap:
            break
        carried = s_start
    return carried


def chunk_section(section: Section, spans: TokenSpans, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of the section's chunks, offsets within the section's text."""
    text, counter = section.text, _Counter(section.text, spans)
    chunks: list[tuple[int, int, int]] = []
    begin = last = None
    for unit in _units(text, counter, size, overlap):
        u_start, u_end, is_window = unit
        if begin is not None and counter.count(begin, u_end) <= size and not is_window:
            last = unit
            continue
        if begin is not None:
            chunks.append((begin, last[1], counter.count(begin, last[1])))
            carried = _overlap_start(text, counter, last, overlap)
            if carried is not None and not is_window and counter.count(carried, u_end) <= size:
                begin, last = carried, unit
                continue
        begin, last = u_start, unit
    if begin is not None:
        chunks.append((begin, last[1], counter.count(begin, last[1])))
    return chunks


def chunk_document(document: Document, source: str, spans: TokenSpans, size: int, overlap: int) -> list[Chunk]:
    """Every chunk of the document, numbered in order; `source` names it in chunk ids."""
    chunks: list[Chunk] = []
    for section in document.sections:
        for start, end, tokens in chunk_section(section, spans, size, overlap):
            start, end = section.start + start, section.start + end
            text = document.text[start:end]
            digest = hashlib.sha256("\x1f".join([*section.headings, text]).encode()).hexdigest()
            chunks.append(Chunk(f"{source}#{len(chunks)}", source, len(chunks), start, end, section.headings, text,
                                tokens, digest))
    return chunks


def whitespace_spans(text: str) -> list[tuple[int, int]]:
    """A tokenizer of words (runs of non-space): for tests and as a fallback that needs no model."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
