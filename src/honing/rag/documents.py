"""Documents as text with headings: .md and .txt as they are, .html through the standard library's parser (headings
become Markdown headings), .jsonl one section per record (a text field), .pdf through pypdf.

A document that cannot be read as text (missing, binary, undecodable, empty, an unreadable PDF) raises BadDocument
with the reason; the index stage skips it into rejects or stops, per config.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from honing.errors import HoningError

SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".jsonl", ".pdf")
"""What `honing rag index` reads; a directory is searched for these."""
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
"""A fenced code block: a `# comment` inside one is not a heading."""


class BadDocument(Exception):
    """A document that yields no text: the reason, said for a user."""


@dataclass
class Section:
    """A run of text under one heading path; `start` is where its text begins in the document's text."""

    headings: tuple[str, ...]
    text: str
    start: int


@dataclass
class Document:
    path: Path
    text: str
    sections: list[Section]


def find_documents(paths: list[str], exclude: Path | None = None) -> dict[str, Path]:
    """The files to index, by the name chunk ids give them: a file under a given directory is named relative to
    that directory (`docs/` -> `manuals/a.md`), a given file by its file name. Two files with one name are an
    error naming both. Files under `exclude` (the index itself) are left out."""
    found: dict[str, Path] = {}
    skip = exclude.resolve() if exclude else None
    for given in paths:
        path = Path(given)
        files = ([(file.relative_to(path).as_posix(), file) for file in sorted(path.rglob("*"))
                  if file.is_file() and file.suffix.lower() in SUFFIXES] if path.is_dir() else [(path.name, path)])
        for name, file in files:
            if skip and file.resolve().is_relative_to(skip):
                continue
            if name in found and found[name].resolve() != file.resolve():
                raise HoningError(f"{found[name]} and {file} would both be named {name} in chunk ids; index them "
                                  "into separate indexes, or give their common parent directory")
            found.setdefault(name, file)
    return found


def read_document(path: Path, text_field: str = "text") -> Document:
    """The document's text and sections; BadDocument when it has none."""
    if not path.is_file():
        raise BadDocument("no such file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BadDocument(f"not a supported document type ({', '.join(SUFFIXES)})")
    if suffix == ".pdf":
        text = _pdf_text(path)
    else:
        raw = path.read_bytes()
        if b"\x00" in raw[:8192]:
            raise BadDocument("binary content (NUL bytes), not text")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise BadDocument(f"not UTF-8 text (byte {err.start})") from None
        if suffix in (".html", ".htm"):
            text = html_to_text(text)
        elif suffix == ".jsonl":
            return _jsonl_document(path, text, text_field)
    if not text.strip():
        raise BadDocument("empty: no text to index")
    return Document(path, text, split_sections(text))


def split_sections(text: str) -> list[Section]:
    """Sections at Markdown headings (`#` to `######`, not inside fenced code); each keeps the path of headings
    above it. Text before the first heading is a section with no heading."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    cursor = 0
    fences = [(m.start(), m.end()) for m in FENCE.finditer(text)]
    for match in HEADING.finditer(text):
        if any(start <= match.start() < end for start, end in fences):
            continue
        _add_section(sections, path, text, cursor, match.start())
        level = len(match[1])
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match[2].strip())]
        cursor = match.end()
    _add_section(sections, path, text, cursor, len(text))
    return sections


def _add_section(sections: list[Section], path: list[tuple[int, str]], text: str, start: int, end: int) -> None:
    body = text[start:end]
    if body.strip():
        sections.append(Section(tuple(title for _, title in path), body, start))


def _jsonl_document(path: Path, text: str, text_field: str) -> Document:
    parts, sections, cursor = [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadDocument(f"line {number}: not JSON ({err.msg})") from None
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise BadDocument(f"line {number}: no text field {text_field!r} (set text_field)")
        if value.strip():
            sections.append(Section((f"record {number}",), value, cursor))
            parts.append(value)
            cursor += len(value) + 2
    if not sections:
        raise BadDocument(f"empty: no record has text in {text_field!r}")
    return Document(path, "\n\n".join(parts), sections)


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, OSError, ValueError, KeyError) as err:
        raise BadDocument(f"unreadable PDF ({type(err).__name__}: {err})") from None
    return "\n\n".join(page.strip() for page in pages)


class _TextOf(HTMLParser):
    """Visible text of an HTML page: headings as Markdown headings, blocks as paragraphs; scripts and styles dropped."""

    BLOCKS = {"p", "div", "li", "br", "tr", "table", "ul", "ol", "section", "article", "pre", "blockquote"}
    HIDDEN = {"script", "style", "head", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """The page's text, headings kept as `#` lines, paragraphs separated by a blank line."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
