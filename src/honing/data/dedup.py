"""Exact and near-duplicate detection: a hash of normalised text, and MinHash (datasketch) with a banded LSH index.

Exact duplicates are found on `normalize_for_hash(text)` (NFKC, lower case, no punctuation,
single spaces), so "Hello,  World!" and "hello world" are the same text. Near duplicates are
found with MinHash signatures of shingles of that normalised text and a banded LSH index
(Broder 1997; Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3).

The first occurrence is kept; a later exact or near duplicate is reported with the key of the
kept record it duplicates. Only kept records are indexed, and no text is stored. Memory per
kept record, about 1.3 KB at the defaults: a 16-byte exact hash, the low 16 bits of each MinHash
value (256 bytes; enough to estimate similarity, a false match of one value has probability
2^-16), and one 64-bit hash per LSH band in a dict per band. datasketch's own MinHashLSH keeps
each band's raw bytes and a set per bucket, about 4 KB more per record, which put a 1 GB corpus
near the machine's memory; the bands, buckets and candidates are the same.

Parallel use (large files): workers compute `fingerprint(text, cfg)` (a top-level, picklable
function) over chunks of records, and the main process feeds the results, in input order, to
`Deduplicator.add_signature` / `check_signature`. The outcome is identical to `add(key, text)`.

Train/evaluation contamination: add every training record first (`add`), then `check` each
validation or test record. `check` never indexes anything, so a hit means the evaluation record
duplicates (or nearly duplicates) a training record: drop it from the evaluation side, where a
copy of training data would inflate the score. To also remove duplicates *within* the
validation data, `add(..., group="validation")` them instead of `check`: a hit's `of_group`
then says whether the original is a training or a validation record.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from datasketch import MinHash, MinHashLSH
from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.data.clean import record_text_fields

SCHEME = "affine64"
"""datasketch's permutation scheme: 64-bit hashes, so signatures are uint64 and collisions of
distinct shingles are negligible even for long documents. Fixed here so a library default
change cannot silently change results."""
_BLOCK = 4096  # signatures are stored in blocks of this many rows


def band_probability(s: float, bands: int, rows: int) -> float:
    """Probability that LSH with `bands` bands of `rows` rows reports a pair of Jaccard similarity s:
    1 - (1 - s^rows)^bands."""
    return 1.0 - (1.0 - s**rows) ** bands


class DedupConfig(StrictModel):
    """`honing data dedup`: remove exact and near-duplicate records (the first occurrence is kept)."""

    exact: bool = True
    """Remove records whose normalised text (NFKC, lower case, punctuation removed, whitespace
    collapsed) equals that of an earlier record."""
    near: bool = True
    """Remove records whose text is nearly the same as an earlier record's (MinHash LSH)."""
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    """Jaccard similarity of shingle sets at which two texts count as near duplicates. It sets the
    LSH bands b and rows r (datasketch's choice minimising the summed false-positive and
    false-negative probability, unless bands/rows are given), and LSH catches a pair of similarity s
    with probability P = 1 - (1 - s^r)^b: an S-curve around the threshold, not a sharp cut. At the
    defaults (threshold 0.8, num_perm 128) b = 9, r = 13:
    s = 0.6: 1.2%, 0.7: 8.4%, 0.75: 19.5%, 0.8: 39.9%, 0.85: 68.6%, 0.9: 92.9%, 0.95: 99.8%.
    A reported pair's `similarity` is its estimated Jaccard (MinHash agreement); no second filter
    is applied to it."""
    ngram: int = Field(5, ge=1)
    """Shingle size. Texts of at least `ngram` words use word n-grams (robust to a changed word:
    it touches only n shingles); shorter texts (a short prompt) have too few word n-grams to
    compare, so they use character n-grams of the normalised text instead (the whole text if
    shorter still). Two texts on different sides of that line share no shingles."""
    num_perm: int = Field(128, ge=2)
    """MinHash permutations: the signature length. More means a finer similarity estimate
    (standard error sqrt(s(1-s)/num_perm), 0.035 at s = 0.8) and more memory."""
    bands: int | None = Field(None, ge=2)
    """LSH bands b; set together with rows (b × rows <= num_perm). Null: datasketch's optimum for
    the threshold. The values used are reported by Deduplicator.params()."""
    rows: int | None = Field(None, ge=1)
    """LSH rows per band r; set together with bands."""
    seed: int = 1
    """Seed of the MinHash permutations: the same seed gives the same signatures in every process."""
    fields: list[str] | None = None
    """Top-level record fields whose text is compared (e.g. [instruction] or [prompt] to find
    repeated questions with different answers); null: every text field (clean.record_text_fields)."""

    @model_validator(mode="after")
    def _check(self) -> DedupConfig:
        if not (self.exact or self.near):
            raise ValueError("dedup has nothing to do: set exact or near (or both) to true")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both dedup.bands and dedup.rows, or neither (datasketch then picks them)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands × rows ({self.bands} × {self.rows}) must not exceed num_perm ({self.num_perm})"
            )
        return self


# --------------------------------------------------------------------------- text → fingerprint

_SPACES = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _punctuation_table() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), mapped to deletion. Built once per process."""
    return {
        code: None for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)).startswith("P")
    }


def normalize_for_hash(text: str) -> str:
    """`text` in the form exact deduplication compares: NFKC, lower case, punctuation deleted,
    whitespace collapsed to single spaces and stripped."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_punctuation_table())
    return _SPACES.sub(" ", text).strip()


def exact_hash(text: str) -> bytes:
    """16-byte BLAKE2b digest of the normalised text."""
    return hashlib.blake2b(normalize_for_hash(text).encode("utf-8"), digest_size=16).digest()


def shingles(normalized: str, n: int) -> set[str]:
    """Shingles of normalised text: word n-grams, or character n-grams for texts of fewer than n words."""
    words = normalized.split(" ") if normalized else []
    if len(words) >= n:
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
    if len(normalized) > n:
        return {normalized[i : i + n] for i in range(len(normalized) - n + 1)}
    return {normalized} if normalized else set()


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    return MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations


def _minhash(signature: np.ndarray | None, cfg: DedupConfig) -> MinHash:
    return MinHash(
        num_perm=cfg.num_perm,
        seed=cfg.seed,
        scheme=SCHEME,
        hashvalues=signature,
        permutations=_permutations(cfg.num_perm, cfg.seed),
    )


def _signature_of_normalized(normalized: str, cfg: DedupConfig) -> np.ndarray:
    minhash = _minhash(None, cfg)
    minhash.update_batch([shingle.encode("utf-8") for shingle in shingles(normalized, cfg.ngram)])
    return minhash.hashvalues  # (num_perm,) uint64


def minhash_signature(text: str, cfg: DedupConfig) -> np.ndarray:
    """The MinHash signature of `text`: `cfg.num_perm` uint64 values, the same in every process
    for the same cfg.seed. An empty text has the all-maximum signature, which is never matched."""
    return _signature_of_normalized(normalize_for_hash(text), cfg)


@dataclass
class Fingerprint:
    """What the deduplicator needs of one text: computed in workers, consumed in the main process."""

    exact_hash: bytes | None
    signature: np.ndarray | None


def fingerprint(text: str, cfg: DedupConfig) -> Fingerprint:
    """The exact hash (if cfg.exact) and MinHash signature (if cfg.near) of `text`; top-level and
    picklable, for `multiprocessing.Pool.map`."""
    normalized = normalize_for_hash(text)
    return Fingerprint(
        hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).digest() if cfg.exact else None,
        _signature_of_normalized(normalized, cfg) if cfg.near else None,
    )


def record_dedup_text(record: dict[str, Any], fields: list[str] | None = None) -> str:
    """The text of `record` that deduplication compares: its text fields (those under the given
    top-level fields, or all) joined by newlines."""
    return "\n".join(
        text for path, text in record_text_fields(record) if fields is None or path[0] in fields
    )


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class DupResult:
    """Whether a text duplicates one already indexed, and which."""

    is_duplicate: bool
    kind: Literal["exact", "near"] | None = None
    of: str | None = None
    """Key of the kept record it duplicates."""
    of_group: str | None = None
    """Group of that record (e.g. "train")."""
    similarity: float | None = None
    """Estimated Jaccard similarity with that record (1.0 for exact duplicates)."""


_UNIQUE = DupResult(False)


class _BandIndex:
    """LSH buckets: for each band, a dict from a 64-bit hash of the band's values to the first
    record put there. Kept records never share a bucket (a shared bucket makes the later one a
    duplicate), so one record per bucket is all the index needs."""

    def __init__(self, bands: int, rows: int) -> None:
        self.bands, self.rows = bands, rows
        self._tables: list[dict[int, int]] = [{} for _ in range(bands)]

    def _keys(self, signature: np.ndarray) -> list[int]:
        view = np.ascontiguousarray(signature[: self.bands * self.rows], dtype=np.uint64).reshape(self.bands, self.rows)
        return [int.from_bytes(hashlib.blake2b(band.tobytes(), digest_size=8).digest(), "little") for band in view]

    def insert(self, index: int, signature: np.ndarray) -> None:
        for table, key in zip(self._tables, self._keys(signature)):
            table.setdefault(key, index)

    def query(self, signature: np.ndarray) -> set[int]:
        return {table[key] for table, key in zip(self._tables, self._keys(signature)) if key in table}


@functools.lru_cache(maxsize=16)
def _optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)  # datasketch computes its optimum
    return lsh.b, lsh.r


class Deduplicator:
    """Keeps the first occurrence of each text and reports later exact and near duplicates.

    Holds hashes and signatures only. Keys should be unique (e.g. "file:line")."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        if cfg.bands is not None and cfg.rows is not None:
            self.bands, self.rows = cfg.bands, cfg.rows
        else:
            self.bands, self.rows = _optimal_bands_rows(cfg.threshold, cfg.num_perm)
        if cfg.near and self.bands * self.rows > cfg.num_perm:
            raise ValueError(f"bands × rows ({self.bands} × {self.rows}) exceeds num_perm ({cfg.num_perm})")
        self._lsh = _BandIndex(self.bands, self.rows) if cfg.near else None
        self._empty_signature = _signature_of_normalized("", cfg) if cfg.near else None
        self._exact: dict[bytes, int] = {}
        self._keys: list[str] = []
        self._groups: list[str] = []
        self._blocks: list[np.ndarray] = []  # (_BLOCK, num_perm) uint16 each: the low bits of each value
        self.counts = {"added": 0, "kept": 0, "exact": 0, "near": 0}

    def params(self) -> dict[str, Any]:
        """The settings actually used, for the run record."""
        return {
            "exact": self.cfg.exact,
            "near": self.cfg.near,
            "threshold": self.cfg.threshold,
            "ngram": self.cfg.ngram,
            "num_perm": self.cfg.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "seed": self.cfg.seed,
            "scheme": SCHEME,
            "catch_probability": {
                str(s): round(band_probability(s, self.bands, self.rows), 4) for s in (0.6, 0.7, 0.8, 0.9, 0.95)
            },
        }

    def __len__(self) -> int:
        """Number of kept (indexed) texts."""
        return len(self._keys)

    # ---- text API

    def add(self, key: str, text: str, *, group: str = "train") -> DupResult:
        """Index `text` under `key` unless it duplicates an indexed text, which is then reported."""
        found = fingerprint(text, self.cfg)
        return self.add_signature(key, found.exact_hash, found.signature, group=group)

    def check(self, text: str) -> DupResult:
        """Whether `text` duplicates an indexed text, without indexing it (contamination checks)."""
        found = fingerprint(text, self.cfg)
        return self.check_signature(found.exact_hash, found.signature)

    # ---- precomputed fingerprints (the parallel path)

    def add_signature(
        self, key: str, exact_hash: bytes | None, signature: np.ndarray | None, *, group: str = "train"
    ) -> DupResult:
        """As `add`, from `fingerprint(text, cfg)`'s parts."""
        self.counts["added"] += 1
        result = self.check_signature(exact_hash, signature)
        if result.is_duplicate:
            self.counts[result.kind] += 1
            return result
        index = len(self._keys)
        self._keys.append(key)
        self._groups.append(group)
        if self.cfg.exact and exact_hash is not None:
            self._exact[exact_hash] = index
        if self._lsh is not None and signature is not None:
            self._store(index, signature)
            if not self._is_empty(signature):
                self._lsh.insert(index, signature)
        self.counts["kept"] += 1
        return result

    def check_signature(self, exact_hash: bytes | None, signature: np.ndarray | None) -> DupResult:
        """As `check`, from `fingerprint(text, cfg)`'s parts."""
        if self.cfg.exact and exact_hash is not None and exact_hash in self._exact:
            index = self._exact[exact_hash]
            return DupResult(True, "exact", self._keys[index], self._groups[index], 1.0)
        if self._lsh is None or signature is None or self._is_empty(signature):
            return _UNIQUE
        if len(signature) != self.cfg.num_perm:
            raise ValueError(f"signature has {len(signature)} values, the deduplicator uses num_perm={self.cfg.num_perm}")
        candidates = self._lsh.query(signature)
        if not candidates:
            return _UNIQUE
        # Most similar first; among equals the earliest kept record.
        best = max(candidates, key=lambda index: (self._similarity(signature, index), -index))
        return DupResult(True, "near", self._keys[best], self._groups[best], self._similarity(signature, best))

    # ---- storage

    def _store(self, index: int, signature: np.ndarray) -> None:
        block, row = divmod(index, _BLOCK)
        while len(self._blocks) <= block:
            self._blocks.append(np.empty((_BLOCK, self.cfg.num_perm), dtype=np.uint16))
        self._blocks[block][row] = signature.astype(np.uint16)  # keeps the low 16 bits

    def _similarity(self, signature: np.ndarray, index: int) -> float:
        block, row = divmod(index, _BLOCK)
        return float(np.count_nonzero(self._blocks[block][row] == signature.astype(np.uint16))) / self.cfg.num_perm

    def _is_empty(self, signature: np.ndarray) -> bool:
        return bool(np.array_equal(signature, self._empty_signature))
