"""A live `honing serve` in a subprocess on 127.0.0.1 (a free port), for the tests to call with the official client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HONING = [sys.executable, "-m", "honing.cli"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/v1)")


class Served:
    """A running server: its base URL, process, the log path, and what it printed so far."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path, lines: list[str]):
        self.process, self.url, self.log, self.lines = process, url, log, lines

    def client(self, key: str = "none", **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=120, **kwargs)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[Served]:
    """`honing serve ARGS --port 0`, until the block ends (then SIGTERM, then kill)."""
    log = tmp_path / "requests.sqlite"
    command = [*HONING, "serve", *args, "--port", "0", f"log.path={log}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env={**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", **(env or {})})
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                found.append(match[1])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout)
    try:
        if not found:
            process.kill()
            raise AssertionError(f"honing serve did not start within {timeout:g} s:\n{''.join(lines)}")
        yield Served(process, found[0], log, lines)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def wait_exit(process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return process.wait(1)


@pytest.fixture()
def serve(tmp_path):
    """serve(*args, env=...) -> a context manager over a live server."""
    return lambda *args, **kwargs: serving(tmp_path, *args, **kwargs)
