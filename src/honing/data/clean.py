"""Cleaning records: normalise their text, then remove the ones that fail a quality rule.

Works on a record of any format honing reads (text, instruction, chat, sharegpt, preference)
without knowing which: `record_text_fields` finds every text a user or the model would see,
and `set_text_field` writes a cleaned one back. PII redaction (`honing.data.pii`) uses the same
pair.

A record goes through these steps, in this order:

1. normalisers, which rewrite each text field: `strip_html`, `normalize_unicode`,
   `remove_control_chars`, `fix_whitespace`. A field that had text and has none left
   removes the record (rule `empty`): a chat message with no content is not a valid turn.
2. rules on the record's joined text (all its text fields joined by "\\n"), cheapest first.
   The first rule that fails removes the record and names itself; the names are stable, for
   counts and run records:

       empty, min_chars, max_chars, min_words, max_words, gopher_mean_word_length,
       gopher_symbol_ratio, gopher_bullet_lines, gopher_ellipsis_lines, gopher_alpha_words,
       c4_lorem_ipsum, gopher_duplicate_lines, gopher_duplicate_line_chars,
       gopher_duplicate_paragraphs, gopher_duplicate_paragraph_chars,
       gopher_top_{n}gram (n = 2, 3, 4 by default), gopher_dup_{n}gram (n = 5..10),
       min_tokens, max_tokens

The rules come from Gopher (Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
Insights from Training Gopher", appendix A.1.1) and C4 (Raffel et al. 2020, "Exploring the
Limits of Transfer Learning with a Unified Text-to-Text Transformer", section 2.2). They were
tuned for web documents; instruction and chat data have short, code-heavy and maths-heavy
texts that several of them would wrongly remove, so every rule is off by default here.
`CleanConfig.for_documents()` turns on Gopher's thresholds for pre-training text.

Everything here is a pure function of (record, config), so a `Cleaner` can be pickled into a
multiprocessing pool that cleans chunks of a large file.
"""

from __future__ import annotations

import copy
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.errors import ConfigError

TextPath = tuple[str | int, ...]
"""Where a text sits in a record: keys and list indices, e.g. ("messages", 2, "content")."""

NON_TEXT_KEYS = frozenset({
    # identifiers and provenance
    "id", "_id", "uuid", "idx", "index", "key", "source", "dataset", "split", "url", "license",
    "hash", "sha256", "timestamp", "created_at", "date", "meta", "metadata",
    # structure of a turn or of a content part, not its words
    "role", "from", "name", "type", "tool_call_id",
    # labels
    "lang", "language", "label", "labels", "category", "score", "model",
})
"""Keys whose values are identifiers, provenance, roles or labels rather than text anyone reads
or the model learns; `record_text_fields` skips them (and everything under them) at every level."""


def record_text_fields(record: dict[str, Any]) -> list[tuple[TextPath, str]]:
    """Every user-visible text of `record`, with its path, in document order.

    Walks dicts and lists: a string under any key not in `NON_TEXT_KEYS` is a text field. So
    {"text"}, Alpaca's instruction/input/output/system, chat `messages[i].content`, ShareGPT
    `conversations[i].value`, preference prompt/chosen/rejected (strings or message lists), and
    unknown top-level strings such as "response" are all found without knowing the format.
    Numbers, booleans and nulls are not text.
    """
    return list(_walk(record, ()))


def _walk(value: Any, path: TextPath) -> Iterator[tuple[TextPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in NON_TEXT_KEYS:
                yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def set_text_field(record: dict[str, Any], path: TextPath, value: str) -> None:
    """Write `value` at `path` (from `record_text_fields`) into `record`, in place."""
    if not path:
        raise ValueError("a text path has at least one key")
    container: Any = record
    for step in path[:-1]:
        container = container[step]
    container[path[-1]] = value


def joined_text(record: dict[str, Any]) -> str:
    """All text fields of `record` joined by newlines: what the quality rules look at."""
    return "\n".join(text for _, text in record_text_fields(record))


# --------------------------------------------------------------------------- config

GOPHER_TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUPLICATE_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class CleanConfig(StrictModel):
    """`honing data clean`: normalise text, then remove records that fail a quality rule.

    Every quality rule is off by default: the Gopher and C4 thresholds quoted below were tuned
    on web documents and remove many good instruction/chat examples (short answers, code,
    maths). `CleanConfig.for_documents()` switches Gopher's rules on for pre-training text."""

    # --- normalisers (rewrite text)
    normalize_unicode: Literal["NFC", "NFKC"] | None = "NFKC"
    """Unicode normal form: NFKC also folds compatibility characters (the ligature "ﬁ" → "fi",
    full-width "１２" → "12", non-breaking space → space); NFC only composes accents; null leaves text as is."""
    fix_whitespace: bool = True
    """Turn \\r\\n and \\r into \\n, collapse runs of spaces/tabs inside a line to one space (a line's
    leading indentation is kept, for code), strip trailing spaces, allow at most one blank line in a
    row, and strip both ends of each text (the first line's indentation is kept when later lines
    are indented too)."""
    remove_control_chars: bool = True
    """Delete control characters (Unicode Cc) except \\n and \\t, plus the invisible U+200B zero-width
    space, U+FEFF byte-order mark, U+00AD soft hyphen and U+2060 word joiner."""
    strip_html: bool = False
    """Remove HTML tags (block tags such as <p>, <br>, <li> become line breaks), drop the contents of
    <script> and <style>, and unescape entities (&amp; → &). Off by default: text that merely mentions
    tags or compares with < and > (code, maths) would be damaged."""

    # --- length (of the joined text)
    min_chars: int | None = Field(None, ge=0)
    """Remove records whose joined text has fewer characters (rule min_chars)."""
    max_chars: int | None = Field(None, ge=1)
    """Remove records whose joined text has more characters (rule max_chars)."""
    min_words: int | None = Field(None, ge=0)
    """Remove records with fewer whitespace-separated words (rule min_words). Gopher keeps documents of
    50 to 100,000 words (Rae et al. 2021); for instruction data a short answer is often the right one."""
    max_words: int | None = Field(None, ge=1)
    """Remove records with more words (rule max_words); Gopher: 100,000."""
    min_tokens: int | None = Field(None, ge=0)
    """Remove records whose joined text has fewer tokens (rule min_tokens); needs a token counter
    given to the Cleaner (the stage passes the model's tokenizer)."""
    max_tokens: int | None = Field(None, ge=1)
    """Remove records with more tokens (rule max_tokens); needs a token counter, as min_tokens."""

    # --- Gopher quality rules (Rae et al. 2021, appendix A.1.1)
    mean_word_length: tuple[float, float] | None = None
    """Keep records whose mean word length (characters) lies in [low, high] (rule
    gopher_mean_word_length). Gopher: (3, 10)."""
    max_symbol_ratio: float | None = Field(None, gt=0)
    """Remove records where the number of '#' per word, or of ellipses ('...' or '…') per word,
    exceeds this (rule gopher_symbol_ratio). Gopher: 0.1."""
    max_bullet_line_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where more than this share of lines starts with a bullet (•, ‣, ◦, ▪, -, *)
    (rule gopher_bullet_lines). Gopher: 0.9."""
    max_ellipsis_line_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where more than this share of lines ends with an ellipsis ('...' or '…')
    (rule gopher_ellipsis_lines). Gopher: 0.3."""
    min_alpha_word_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where fewer than this share of words contains an alphabetic character
    (rule gopher_alpha_words). Gopher: 0.8."""
    max_duplicate_line_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where more than this share of non-empty lines repeats an earlier line
    (rule gopher_duplicate_lines). Gopher: 0.3."""
    max_duplicate_line_char_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where repeated lines hold more than this share of the characters
    (rule gopher_duplicate_line_chars). Gopher: 0.2."""
    max_duplicate_paragraph_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where more than this share of paragraphs (separated by blank lines) repeats an
    earlier one (rule gopher_duplicate_paragraphs). Gopher: 0.3."""
    max_duplicate_paragraph_char_fraction: float | None = Field(None, gt=0, le=1)
    """Remove records where repeated paragraphs hold more than this share of the characters
    (rule gopher_duplicate_paragraph_chars). Gopher: 0.2."""
    max_top_ngram_char_fraction: dict[int, float] | None = None
    """{n: limit}: remove records where the most frequent word n-gram (lower-cased, counted only if it
    occurs more than once) covers more than `limit` of the word characters, counting every
    occurrence (rule gopher_top_{n}gram). Gopher: {2: 0.20, 3: 0.18, 4: 0.16}."""
    max_duplicate_ngram_char_fraction: dict[int, float] | None = None
    """{n: limit}: remove records where the words inside repeated occurrences of any word n-gram (each
    occurrence after its first; a word covered by several counts once) hold more than `limit` of
    the word characters (rule gopher_dup_{n}gram). Gopher: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12,
    9: 0.11, 10: 0.10}."""

    # --- C4 (Raffel et al. 2020, section 2.2)
    drop_lorem_ipsum: bool = False
    """Remove records containing "lorem ipsum" in any case (rule c4_lorem_ipsum), as C4 does with
    placeholder pages."""

    @model_validator(mode="after")
    def _check(self) -> CleanConfig:
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words"), ("min_tokens", "max_tokens")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is larger than {high} ({hi})")
        if self.mean_word_length is not None:
            lo, hi = self.mean_word_length
            if not 0 <= lo <= hi:
                raise ValueError(f"mean_word_length must be (low, high) with 0 <= low <= high, not {self.mean_word_length}")
        for name in ("max_top_ngram_char_fraction", "max_duplicate_ngram_char_fraction"):
            for n, limit in (getattr(self, name) or {}).items():
                if n < 1 or not 0 < limit <= 1:
                    raise ValueError(f"{name}: n-gram sizes must be >= 1 and limits in (0, 1], not {n}: {limit}")
        return self

    @classmethod
    def for_documents(cls, **overrides: Any) -> CleanConfig:
        """Gopher's document rules (Rae et al. 2021) with their published thresholds."""
        gopher: dict[str, Any] = dict(
            min_words=50,
            max_words=100_000,
            mean_word_length=(3.0, 10.0),
            max_symbol_ratio=0.1,
            max_bullet_line_fraction=0.9,
            max_ellipsis_line_fraction=0.3,
            min_alpha_word_fraction=0.8,
            max_duplicate_line_fraction=0.3,
            max_duplicate_line_char_fraction=0.2,
            max_duplicate_paragraph_fraction=0.3,
            max_duplicate_paragraph_char_fraction=0.2,
            max_top_ngram_char_fraction=dict(GOPHER_TOP_NGRAMS),
            max_duplicate_ngram_char_fraction=dict(GOPHER_DUPLICATE_NGRAMS),
        )
        return cls(**{**gopher, **overrides})


# --------------------------------------------------------------------------- normalisers

_INVISIBLE = "\u200b\ufeff\u00ad\u2060"
_CONTROL_TABLE = {
    code: None
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *map(ord, _INVISIBLE)]
    if code not in (0x09, 0x0A)
}
_LINE_BREAKS = re.compile(r"\r\n?")
_INNER_SPACES = re.compile(r"(?<=\S)[^\S\n]+")
_TRAILING_SPACES = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_INDENTED_LINE = re.compile(r"\n[ \t]+\S")
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})


def remove_control_chars(text: str) -> str:
    """`text` without control characters (but \\n and \\t) and the invisible characters listed in
    CleanConfig.remove_control_chars; \\r\\n and \\r become \\n first so no line break is lost."""
    return _LINE_BREAKS.sub("\n", text).translate(_CONTROL_TABLE)


def fix_whitespace(text: str) -> str:
    """Whitespace tidied as described in CleanConfig.fix_whitespace."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _INNER_SPACES.sub(" ", text)  # after a non-space only: leading indentation stays
    text = _TRAILING_SPACES.sub("", text)
    text = _BLANK_LINES.sub("\n\n", text).strip("\n")
    # Keep the first line's indentation when the text is indented code, else strip it.
    return text if _INDENTED_LINE.search(text) else text.lstrip()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0  # depth inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """`text` without HTML tags, script/style contents and comments, with entities unescaped."""
    if "<" not in text:
        return html.unescape(text) if "&" in text else text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def clean_text(text: str, cfg: CleanConfig) -> str:
    """One text through the normalisers that `cfg` turns on, in the documented order."""
    if cfg.strip_html:
        text = strip_html(text)
    if cfg.normalize_unicode:
        text = unicodedata.normalize(cfg.normalize_unicode, text)
    if cfg.remove_control_chars:
        text = remove_control_chars(text)
    if cfg.fix_whitespace:
        text = fix_whitespace(text)
    return text


# --------------------------------------------------------------------------- rules

_BULLETS = ("•", "‣", "◦", "▪", "●", "-", "*")
_ELLIPSES = ("...", "…")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LOREM = re.compile(r"lorem\s+ipsum", re.IGNORECASE)


def _duplicate_share(parts: list[str]) -> tuple[float, float]:
    """(share of parts that repeat an earlier part, share of characters in those repeats)."""
    seen: set[str] = set()
    repeats = repeated_chars = 0
    for part in parts:
        if part in seen:
            repeats += 1
            repeated_chars += len(part)
        else:
            seen.add(part)
    total_chars = sum(map(len, parts)) or 1
    return repeats / max(len(parts), 1), repeated_chars / total_chars


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Share of word characters covered by all occurrences of the most frequent repeated n-gram."""
    grams = _ngrams(words, n)
    if not grams:
        return 0.0
    gram, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(map(len, gram)) / (sum(map(len, words)) or 1)


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Share of word characters inside repeated occurrences (not the first) of any n-gram;
    overlapping repeats count each word once."""
    if len(words) < n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for start, gram in enumerate(_ngrams(words, n)):
        if gram in seen:
            covered[start : start + n] = [True] * n
        else:
            seen.add(gram)
    repeated = sum(len(word) for word, hit in zip(words, covered) if hit)
    return repeated / (sum(map(len, words)) or 1)


def _quality_rule(text: str, cfg: CleanConfig, count_tokens: Callable[[str], int] | None) -> str | None:
    """The name of the first rule `text` fails, or None."""
    if cfg.min_chars is not None and len(text) < cfg.min_chars:
        return "min_chars"
    if cfg.max_chars is not None and len(text) > cfg.max_chars:
        return "max_chars"
    words = text.split()
    if cfg.min_words is not None and len(words) < cfg.min_words:
        return "min_words"
    if cfg.max_words is not None and len(words) > cfg.max_words:
        return "max_words"
    n_words = max(len(words), 1)
    if cfg.mean_word_length is not None:
        mean = sum(map(len, words)) / n_words
        if not cfg.mean_word_length[0] <= mean <= cfg.mean_word_length[1]:
            return "gopher_mean_word_length"
    if cfg.max_symbol_ratio is not None:
        ellipses = text.count("...") + text.count("…")
        if text.count("#") / n_words > cfg.max_symbol_ratio or ellipses / n_words > cfg.max_symbol_ratio:
            return "gopher_symbol_ratio"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = max(len(lines), 1)
    if cfg.max_bullet_line_fraction is not None:
        if sum(line.startswith(_BULLETS) for line in lines) / n_lines > cfg.max_bullet_line_fraction:
            return "gopher_bullet_lines"
    if cfg.max_ellipsis_line_fraction is not None:
        if sum(line.endswith(_ELLIPSES) for line in lines) / n_lines > cfg.max_ellipsis_line_fraction:
            return "gopher_ellipsis_lines"
    if cfg.min_alpha_word_fraction is not None:
        if sum(any(ch.isalpha() for ch in word) for word in words) / n_words < cfg.min_alpha_word_fraction:
            return "gopher_alpha_words"
    if cfg.drop_lorem_ipsum and _LOREM.search(text):
        return "c4_lorem_ipsum"
    if cfg.max_duplicate_line_fraction is not None or cfg.max_duplicate_line_char_fraction is not None:
        share, char_share = _duplicate_share(lines)
        if cfg.max_duplicate_line_fraction is not None and share > cfg.max_duplicate_line_fraction:
            return "gopher_duplicate_lines"
        if cfg.max_duplicate_line_char_fraction is not None and char_share > cfg.max_duplicate_line_char_fraction:
            return "gopher_duplicate_line_chars"
    if cfg.max_duplicate_paragraph_fraction is not None or cfg.max_duplicate_paragraph_char_fraction is not None:
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        share, char_share = _duplicate_share(paragraphs)
        if cfg.max_duplicate_paragraph_fraction is not None and share > cfg.max_duplicate_paragraph_fraction:
            return "gopher_duplicate_paragraphs"
        if (
            cfg.max_duplicate_paragraph_char_fraction is not None
            and char_share > cfg.max_duplicate_paragraph_char_fraction
        ):
            return "gopher_duplicate_paragraph_chars"
    if cfg.max_top_ngram_char_fraction or cfg.max_duplicate_ngram_char_fraction:
        lowered = [word.lower() for word in words]
        for n, limit in sorted((cfg.max_top_ngram_char_fraction or {}).items()):
            if top_ngram_char_fraction(lowered, n) > limit:
                return f"gopher_top_{n}gram"
        for n, limit in sorted((cfg.max_duplicate_ngram_char_fraction or {}).items()):
            if duplicate_ngram_char_fraction(lowered, n) > limit:
                return f"gopher_dup_{n}gram"
    if count_tokens is not None and (cfg.min_tokens is not None or cfg.max_tokens is not None):
        tokens = count_tokens(text)
        if cfg.min_tokens is not None and tokens < cfg.min_tokens:
            return "min_tokens"
        if cfg.max_tokens is not None and tokens > cfg.max_tokens:
            return "max_tokens"
    return None


# --------------------------------------------------------------------------- cleaner


@dataclass
class CleanResult:
    """What cleaning did to one record."""

    record: dict[str, Any] | None
    """The cleaned record (a copy when changed; the input object when not), or None if removed."""
    removed_by: str | None
    """The rule that removed the record, or None if it was kept."""
    changed: bool
    """Whether a normaliser rewrote any text (False for removed records)."""


class Cleaner:
    """Cleans one record at a time; picklable (for a process pool) when `count_tokens` is."""

    def __init__(self, cfg: CleanConfig, count_tokens: Callable[[str], int] | None = None) -> None:
        if (cfg.min_tokens is not None or cfg.max_tokens is not None) and count_tokens is None:
            raise ConfigError(
                "min_tokens/max_tokens need a tokenizer to count tokens: give the model (or tokenizer) "
                "to the clean stage, or use min_chars/max_chars instead"
            )
        self.cfg = cfg
        self.count_tokens = count_tokens

    def clean(self, record: dict[str, Any]) -> CleanResult:
        """The record with its texts normalised, or None and the name of the rule that removed it.
        The input record is never modified."""
        fields = record_text_fields(record)
        cleaned = [(path, text, clean_text(text, self.cfg)) for path, text in fields]
        emptied = any(old.strip() and not new.strip() for _, old, new in cleaned)
        if emptied or not any(new.strip() for _, _, new in cleaned):
            return CleanResult(None, "empty", False)
        changed = any(new != old for _, old, new in cleaned)
        rule = _quality_rule("\n".join(new for _, _, new in cleaned), self.cfg, self.count_tokens)
        if rule is not None:
            return CleanResult(None, rule, False)
        if not changed:
            return CleanResult(record, None, False)
        out = copy.deepcopy(record)
        for path, old, new in cleaned:
            if new != old:
                set_text_field(out, path, new)
        return CleanResult(out, None, True)
