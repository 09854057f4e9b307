"""On-disk cache of tokenised data, keyed by everything that changes the tokens.

Format: one uncompressed `.npz` per key. Token ids and labels are stored as flat int32 arrays
plus per-example lengths: 4 bytes a token, loaded in one read with no pickle (allow_pickle is
off, so a cache file can never run code), and numpy is already a dependency. Stats and
rejects ride along as a JSON blob. Files are written to a temporary name and moved into place
with os.replace, so a crash never leaves a half-written file under a valid key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from honing.data.types import TokenizedExample
from honing.io import atomic_open

logger = logging.getLogger(__name__)

TOKENIZATION_VERSION = 1
"""Bump when a change in honing's tokenisation or masking would change cached examples."""


def cache_root(cache_dir: str | None = None) -> Path:
    """data.cache_dir, else $HONING_CACHE, else ~/.cache/honing/data."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("HONING_CACHE"):
        return Path(os.environ["HONING_CACHE"]).expanduser()
    return Path.home() / ".cache" / "honing" / "data"


def path_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes; for a directory, of every file's relative path and bytes in sorted order."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        _update_with_file(digest, path)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        _update_with_file(digest, file)
    return digest.hexdigest()


def _update_with_file(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides the ids: vocabulary, merges, normalisation, special tokens."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = getattr(tokenizer, "special_tokens_map", {}) or {}
    digest.update(json.dumps(special, sort_keys=True, default=str).encode())
    digest.update(type(tokenizer).__name__.encode())
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """sha256 of the parts (JSON with sorted keys) and TOKENIZATION_VERSION."""
    payload = json.dumps({**parts, "tokenization_version": TOKENIZATION_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_file(root: Path, key: str) -> Path:
    return root / f"{key}.npz"


def save(root: Path, key: str, splits: dict[str, list[TokenizedExample]], meta: dict[str, Any]) -> Path:
    """Write the examples of each split and a JSON-able meta dict, atomically."""
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)}
    for name, examples in splits.items():
        arrays[f"{name}.input_ids"] = np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int32)
        arrays[f"{name}.labels"] = np.fromiter((t for e in examples for t in e.labels), dtype=np.int32)
        arrays[f"{name}.lengths"] = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
        arrays[f"{name}.truncated"] = np.array([e.truncated for e in examples], dtype=bool)
    target = cache_file(root, key)
    with atomic_open(target, "wb") as out:
        np.savez(out, **arrays)
    return target


def load(root: Path, key: str, split_names: tuple[str, ...]) -> tuple[dict[str, list[TokenizedExample]], dict[str, Any]] | None:
    """The cached splits and meta, or None on a miss (or an unreadable file, which is then ignored)."""
    path = cache_file(root, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            splits = {name: _examples(data, name) for name in split_names}
    except Exception as err:  # a damaged cache file is not the user's problem: rebuild it
        logger.warning("ignoring unreadable data cache %s (%s)", path, err)
        return None
    return splits, meta


def _examples(data: Any, name: str) -> list[TokenizedExample]:
    ids = data[f"{name}.input_ids"].tolist()
    labels = data[f"{name}.labels"].tolist()
    truncated = data[f"{name}.truncated"].tolist()
    out, start = [], 0
    for length, was_truncated in zip(data[f"{name}.lengths"].tolist(), truncated):
        out.append(TokenizedExample(ids[start : start + length], labels[start : start + length], bool(was_truncated)))
        start += length
    return out
