"""Who may call the server, and how much: API keys (kept as SHA-256 hashes, compared in constant time), and per-key
rate and concurrency limits.

Keys come from HONING_API_KEYS (comma-separated) and from `api_keys_file` (one per line; a line starting with '#'
is a comment). The
server never keeps a key itself: only its hash, and a short key id (the first 12 hex digits of the hash) that
the request log and metrics show. Without keys the limits apply per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from honing.config.serve import ServeConfig, is_loopback
from honing.errors import HoningError

KEYS_ENV = "HONING_API_KEYS"


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def read_keys(cfg: ServeConfig) -> list[bytes]:
    """The hashes of every configured key; a one-line error for an unreadable keys file."""
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if cfg.api_keys_file:
        path = Path(cfg.api_keys_file)
        if not path.is_file():
            raise HoningError(f"api_keys_file {path} {'is not a file' if path.exists() else 'does not exist'}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise HoningError(f"api_keys_file {path} cannot be read as UTF-8 text: {err}") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):  # a comment is a whole line: '#' may be part of a key
                continue
            if any(c.isspace() for c in line):
                raise HoningError(f"{path}:{number}: a key holds whitespace; write one key per line")
            keys.append(line)
    return [_hash(k) for k in keys]


def check_exposure(cfg: ServeConfig, keys: list[bytes]) -> None:
    """Refuse to listen beyond loopback without keys."""
    if not is_loopback(cfg.host) and not keys:
        raise HoningError(f"host={cfg.host} would expose the server beyond this machine without API keys; set "
                          f"{KEYS_ENV} or api_keys_file, or serve on 127.0.0.1")


class Keys:
    """Checks a bearer token against the stored hashes."""

    def __init__(self, hashes: list[bytes]):
        self.hashes = hashes

    @property
    def required(self) -> bool:
        return bool(self.hashes)

    def identify(self, token: str | None) -> str | None:
        """The key id of a valid token, else None. Every stored hash is compared (no early exit), each with
        hmac.compare_digest, so the time taken says nothing about which key was close."""
        if not token:
            return None
        digest = _hash(token)
        found = None
        for stored in self.hashes:
            if hmac.compare_digest(stored, digest):
                found = stored
        return found.hex()[:12] if found is not None else None


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


class Limiter:
    """A token bucket (rate_per_minute, refilled continuously) and an in-flight count per caller."""

    def __init__(self, rate_per_minute: int, concurrency: int):
        self.rate = rate_per_minute
        self.concurrency = concurrency
        self.buckets: dict[str, _Bucket] = {}
        self.lock = threading.Lock()

    def admit(self, caller: str) -> str | None:
        """None when the request may run (count it; call done() after), else why not."""
        now = time.monotonic()
        with self.lock:
            bucket = self.buckets.setdefault(caller, _Bucket(float(self.rate), now))
            bucket.tokens = min(float(self.rate), bucket.tokens + (now - bucket.updated) * self.rate / 60.0)
            bucket.updated = now
            if bucket.in_flight >= self.concurrency:
                return f"more than {self.concurrency} requests in flight for this caller; wait for one to finish"
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) * 60.0 / self.rate
                return f"rate limit of {self.rate} requests per minute reached; retry in {wait:.1f} s"
            bucket.tokens -= 1.0
            bucket.in_flight += 1
            return None

    def done(self, caller: str) -> None:
        with self.lock:
            self.buckets[caller].in_flight -= 1
