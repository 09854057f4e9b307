"""Find personal data and secrets in text, and replace them with typed placeholders.

A found item becomes `<EMAIL>`, `<PHONE>`, `<CREDIT_CARD>`, `<IBAN>`, `<IP_ADDRESS>`,
`<NATIONAL_ID>`, `<URL_WITH_CREDENTIALS>` or `<SECRET>`, so a model trained on the result still
learns where such things go without memorising any of them. What each type covers (patterns are
checked with a checksum or a parser where one exists, to keep false positives down):

    email                 local@domain.tld (ASCII; the top-level domain has 2-63 letters)
    phone                 international: "+", then 8-15 digits in groups separated by single
                          spaces, dots, dashes or a parenthesised group ("+44 20 7946 0958",
                          "+1 (415) 555-2671"; the country code does not start with 0; after
                          +1 exactly 10 digits); North American: "(415) 555-2671",
                          "415-555-2671", "415.555.2671", optionally preceded by "1-" or "1 ",
                          with valid NANP area and exchange codes (first digit 2-9).
                          Not covered: bare digit runs ("4155552671") and national formats
                          without "+" outside North America ("020 7946 0958"), which cannot be
                          told from order numbers and ids.
    credit_card           13-19 digits, optionally in groups of four separated by single
                          spaces or dashes (or Amex/Diners 4-6-5/4-6-4), with a length that the
                          network of its leading digits issues (Visa 4: 13/16/19, Mastercard 2/5:
                          16, Amex 34/37: 15, Diners 30/36/38/39: 14/16, JCB 35 / Discover and
                          UnionPay 6: 16-19), passing the Luhn check, and not part of a decimal
                          number. Any such digit run that passes Luhn (1 in 10) is caught too.
    iban                  ISO 13616: two capital letters, two check digits, 11-30 capitals or
                          digits (spaces between groups of 4 allowed), valid mod-97 checksum.
    ip_address            IPv4 dotted quads with every octet <= 255 and no leading zeros
                          ("1.2.3.4" is an address, so a bare four-part version number matches;
                          "v1.2.3.4" and "1.2.3.4.5" do not), and IPv6 addresses that the
                          `ipaddress` module accepts, with three groups, a group of 3-4 hex
                          digits, or "::1" (so Python slices such as x[1::2] are not addresses).
    national_id           US social security numbers ddd-dd-dddd (hyphens required; area not
                          000, 666 or 9xx, group not 00, serial not 0000) and UK National
                          Insurance numbers ("AB 12 34 56 C" or "AB123456C") following HMRC's
                          prefix rules (first letter not D F I Q U V, second not D F I O Q U V,
                          not BG GB KN NK NT TN ZZ): HMRC's specimen "QQ 12 34 56 C" is therefore
                          not matched.
    url_with_credentials  scheme://user:password@host...; the whole URL is replaced (the host of
                          a leaked connection string is itself sensitive).
    secret                AWS access key ids (AKIA/ASIA + 16), GitHub tokens (ghp_ gho_ ghs_ ghu_
                          ghr_ + 30 or more, github_pat_), OpenAI/Anthropic-style sk-... keys (20
                          or more characters with a digit), Stripe sk_live_/rk_live_ keys, Slack
                          xox[baprs]- tokens, Google AIza keys, JSON Web Tokens (eyJ...eyJ...),
                          PEM private-key blocks (BEGIN to END over base64 and header lines, or to
                          the end of the base64 lines when truncated), and the value of
                          assignments such as `api_key = "..."`, `"token": "..."`,
                          `PASSWORD=...` (key containing api_key, apikey, secret, token,
                          password, passwd, pwd, auth_key, access_key, private_key) when the value
                          is a literal token (letters, digits and +/=_-.~!@#$%^, not followed
                          by "(" or "["), has 16 or more characters, letters and at least one
                          digit, is not a dotted or snake_case name, host name or path, is less
                          than half made of words ([A-Z]?[a-z]{3,}, as in class names such as
                          LayoutLMv3Tokenizer), and has at least 3.5 bits of Shannon entropy per
                          character (so code such as `api_key = settings.OPENAI_API_KEY` is left
                          alone). Short or dictionary passwords (`password = "changeme"`,
                          "CorrectHorseBatteryStaple1") are NOT caught: without entropy they
                          cannot be told from examples and placeholders.

Overlaps: secrets and URLs with credentials are found first and win over anything inside them
(the email-like "user:pw@host" of a URL, an IP inside a key); among the others the earliest,
then the longest match wins.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import model_validator

from honing.config.base import StrictModel
from honing.data.clean import TextPath, record_text_fields, set_text_field

PIIType = Literal[
    "email", "phone", "credit_card", "iban", "ip_address", "national_id", "url_with_credentials", "secret"
]
PII_TYPES: tuple[str, ...] = get_args(PIIType)
_FIRST = ("secret", "url_with_credentials")  # found first; win over matches inside them


def placeholder(pii_type: str) -> str:
    """The text that replaces a match of `pii_type`, e.g. <EMAIL>."""
    return f"<{pii_type.upper()}>"


class PIIConfig(StrictModel):
    """`honing data pii`: find personal data and secrets in every text field of every record."""

    types: list[PIIType] = list(PII_TYPES)
    """Which kinds to look for: email, phone, credit_card, iban, ip_address, national_id,
    url_with_credentials, secret (see honing.data.pii for exactly what each covers)."""
    action: Literal["redact", "drop", "report"] = "redact"
    """redact: replace each find with a typed placeholder such as <EMAIL>; drop: remove every record
    with any find; report: change nothing, only count and list the finds."""

    @model_validator(mode="after")
    def _check(self) -> PIIConfig:
        if not self.types:
            raise ValueError("pii.types is empty: list at least one kind, e.g. [email, phone]")
        return self


@dataclass(frozen=True)
class PIIMatch:
    """One find: its kind and where it is in the text."""

    type: str
    start: int
    end: int
    text: str


# --------------------------------------------------------------------------- checks


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (credit cards)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without spaces: country and check digits moved to the end,
    letters read as 10..35, the number mod 97 must be 1."""
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Bits per character of `text`'s character distribution."""
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


# --------------------------------------------------------------------------- finders
#
# Each finder yields (start, end) spans of one type in a text. Cheap substring tests skip the
# regular expressions for texts that cannot contain a match.

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,4})){1,7}(?![\w-])")
_PHONE_NA = re.compile(
    r"(?<![\w(+.-])(?:1[ .\-]?)?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}(?![\w-]|\.\d)"
)
_CARD = re.compile(r"(?<![\w.-])[2-6]\d{2,3}(?:[ \-]?\d){9,16}(?![\w-]|\.\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?:%[0-9A-Za-z]+)?(?![\w:])"
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_URL_CREDENTIALS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:\"'<>\[\]]+:[^\s/?#@\"'<>]+@[^\s\"'<>`]+")
_SECRET_TOKENS = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
    r"|\b[sr]k_live_[A-Za-z0-9]{16,}"
    r"|\bsk-[A-Za-z0-9_\-]{20,}"
    r"|\bxox[baprs]-[A-Za-z0-9\-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
)
_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----"
    # The body is base64 plus header lines (Proc-Type: 4,ENCRYPTED); a block cut off before its END
    # line runs to the end of the base64 lines.
    r"(?:[A-Za-z0-9+/=\s:,\-]*?-----END \1PRIVATE KEY-----|(?:[^\S\n]*\n[A-Za-z0-9+/=]{16,})+)",
    re.DOTALL,
)
_ASSIGNMENT = re.compile(
    r"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd|auth[_-]?key|access[_-]?key|private[_-]?key)"
    r"[A-Za-z0-9_\-]*[\"']?\s*(?::=|=>|=|:)\s*[\"'`]?(?P<value>[A-Za-z0-9+/=_\-.~!@#$%^]{16,})"
    r"(?=[\s\"'`,;)\]}]|$)"  # a call or index such as get_token(...) is code, not a value
)
_TRAILING_PUNCTUATION = ".,;:!?)]}>"
_CODE_NAME = re.compile(
    r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"  # dotted name: settings.API_KEY
    r"|[a-z][a-z0-9]*(?:_[a-z0-9]+){2,}"  # snake_case name
    r"|[a-z0-9\-]+(?:\.[a-z0-9\-]+)+(?:/\S*)?"  # host name or path
)
_WORD = re.compile(r"[A-Z]?[a-z]{3,}")


def _looks_like_secret(value: str) -> bool:
    """A random-looking literal: long, letters and digits, not a name from code, not made of words
    (CamelCase class names such as LayoutLMv3Tokenizer have digits and high entropy too)."""
    return (
        len(value) >= 16
        and any(ch.isdigit() for ch in value)
        and any(ch.isalpha() for ch in value)
        and not _CODE_NAME.fullmatch(value)
        and sum(len(word) for word in _WORD.findall(value)) < len(value) / 2
        and shannon_entropy(value) >= 3.5
    )


def _emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:
        for m in _EMAIL.finditer(text):
            yield m.span()


def _valid_prefix(m: re.Match[str], valid: Callable[[str], bool], separators: str) -> tuple[int, int] | None:
    """The span of the longest valid prefix of a match, cut at separators. A pattern that allows
    separators also takes a following number or capitalised word as one more group ("+44 20 7946
    0958 2024"); dropping trailing groups until the check holds recovers the real find."""
    candidate = m.group()
    while candidate:
        if valid(candidate):
            return m.start(), m.start() + len(candidate)
        cut = max(candidate.rfind(sep) for sep in separators)
        if cut <= 0:
            return None
        candidate = candidate[:cut]
    return None


def _phone_valid(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    # +1 is the North American plan: exactly 10 digits follow it.
    return digits == 11 if candidate.startswith("+1") else 8 <= digits <= 15


_CARD_GROUPS = ((4, 6, 5), (4, 6, 4))  # Amex, Diners; the others print in fours
_CARD_LENGTHS = (  # (leading digits, lengths) of the major networks, most specific first
    (("34", "37"), (15,)),  # American Express
    (("30", "36", "38", "39"), (14, 16)),  # Diners Club
    (("35", "6"), (16, 17, 18, 19)),  # JCB, Discover, UnionPay
    (("4",), (13, 16, 19)),  # Visa
    (("2", "5"), (16,)),  # Mastercard
)


def _card_valid(candidate: str) -> bool:
    groups = tuple(len(group) for group in re.split(r"[ \-]", candidate))
    if len(groups) > 1 and groups not in _CARD_GROUPS:
        # Printed cards group digits in fours (the last group may be shorter); other groupings
        # are dates, times or ids ("20080830 172159").
        if any(size != 4 for size in groups[:-1]) or groups[-1] > 4:
            return False
    digits = candidate.replace(" ", "").replace("-", "")
    lengths = next((lengths for prefixes, lengths in _CARD_LENGTHS if digits.startswith(prefixes)), ())
    return len(digits) in lengths and luhn_valid(digits)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if m.group().count(".") == 1 and not any(sep in m.group() for sep in " -("):
                continue  # a signed decimal such as +35236450.6
            if (span := _valid_prefix(m, _phone_valid, " .-")) is not None:
                yield span
    for m in _PHONE_NA.finditer(text):
        yield m.span()


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        if (span := _valid_prefix(m, _card_valid, " -")) is not None:
            yield span


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        if (span := _valid_prefix(m, lambda c: iban_valid(c.replace(" ", "")), " ")) is not None:
            yield span


def _ip_addresses(text: str) -> Iterator[tuple[int, int]]:
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            yield m.span()
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            candidate = m.group()
            groups = [group for group in candidate.split("%")[0].split(":") if group]
            # Python slices (x[1::2], a[::3]) look like short addresses: ask for three groups, a
            # group of three or more hex digits (fe80::1), or the loopback ::1.
            if not (len(groups) >= 3 or any(len(group) >= 3 for group in groups) or candidate == "::1"):
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield m.span()


def _national_ids(text: str) -> Iterator[tuple[int, int]]:
    for pattern in (_SSN, _NINO):
        for m in pattern.finditer(text):
            yield m.span()


def _urls_with_credentials(text: str) -> Iterator[tuple[int, int]]:
    if "://" in text:
        for m in _URL_CREDENTIALS.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in _TRAILING_PUNCTUATION:
                end -= 1
            yield m.start(), end


def _secrets(text: str) -> Iterator[tuple[int, int]]:
    for m in _SECRET_TOKENS.finditer(text):
        token = m.group()
        # sk-... also names ordinary kebab-case words; a key has digits in it.
        if token.startswith("sk-") and not any(ch.isdigit() for ch in token):
            continue
        yield m.span()
    if "PRIVATE KEY-----" in text:
        for m in _PEM.finditer(text):
            yield m.start(), m.start() + len(m.group().rstrip())
    for m in _ASSIGNMENT.finditer(text):
        value = m.group("value").rstrip(_TRAILING_PUNCTUATION)
        if _looks_like_secret(value):
            yield m.start("value"), m.start("value") + len(value)


_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails,
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "ip_address": _ip_addresses,
    "national_id": _national_ids,
    "url_with_credentials": _urls_with_credentials,
    "secret": _secrets,
}


def find_pii(text: str, types: list[str] | tuple[str, ...] | None = None) -> list[PIIMatch]:
    """Non-overlapping finds of the given types (default: all) in `text`, in text order.

    Secrets and URLs with credentials are placed first; then every other find, earliest and
    then longest first, is kept unless it overlaps one already kept."""
    types = PII_TYPES if types is None else types
    unknown = set(types) - set(PII_TYPES)
    if unknown:
        raise ValueError(f"unknown PII types {sorted(unknown)}; known: {', '.join(PII_TYPES)}")
    candidates = [
        (pii_type not in _FIRST, start, -(end - start), pii_type, end)
        for pii_type in types
        for start, end in _FINDERS[pii_type](text)
        if end > start
    ]
    kept: list[PIIMatch] = []
    for _, start, _, pii_type, end in sorted(candidates):
        if all(end <= other.start or start >= other.end for other in kept):
            kept.append(PIIMatch(pii_type, start, end, text[start:end]))
    return sorted(kept, key=lambda match: match.start)


def redact(text: str, matches: list[PIIMatch]) -> str:
    """`text` with every match (non-overlapping, as `find_pii` returns them) replaced by its placeholder."""
    parts, position = [], 0
    for match in sorted(matches, key=lambda m: m.start):
        parts += [text[position : match.start], placeholder(match.type)]
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


# --------------------------------------------------------------------------- records


@dataclass
class PIIResult:
    """What scrubbing found in one record and what became of it."""

    record: dict[str, Any] | None
    """The redacted record (a copy when anything was redacted), the unchanged record (report, or
    nothing found), or None (action drop and something found)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Finds per type, e.g. {"email": 2}; empty when nothing was found."""
    findings: list[tuple[TextPath, PIIMatch]] = field(default_factory=list)
    """Each find with the path of the text field it is in (for reports)."""


class PIIScrubber:
    """Applies a PIIConfig to one record at a time, whatever its format; picklable."""

    def __init__(self, cfg: PIIConfig) -> None:
        self.cfg = cfg

    def scrub(self, record: dict[str, Any]) -> PIIResult:
        """Find PII in every text field (see clean.record_text_fields) and act on it. The input
        record is never modified."""
        findings = [
            (path, match)
            for path, text in record_text_fields(record)
            for match in find_pii(text, self.cfg.types)
        ]
        counts = dict(Counter(match.type for _, match in findings))
        if not findings or self.cfg.action == "report":
            return PIIResult(record, counts, findings)
        if self.cfg.action == "drop":
            return PIIResult(None, counts, findings)
        out = copy.deepcopy(record)
        by_path: dict[TextPath, list[PIIMatch]] = {}
        for path, match in findings:
            by_path.setdefault(path, []).append(match)
        for path, text in record_text_fields(record):
            if path in by_path:
                set_text_field(out, path, redact(text, by_path[path]))
        return PIIResult(out, counts, findings)
