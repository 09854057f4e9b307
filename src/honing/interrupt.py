"""Ctrl-C as a request: the first finishes the unit of work in hand (a training step, a synth
batch), saves, and stops; the second stops at once (KeyboardInterrupt).

    with StopRequest() as stop:
        for step in ...:
            ...
            if stop.requested:
                break   # after saving
"""

from __future__ import annotations

import signal
from typing import Any

from honing.ui import console

STEP_NOTICE = "interrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)"
BATCH_NOTICE = "stopping after the current batch (Ctrl-C again to stop now)"


class StopRequest:
    """Catches SIGINT while inside the block; `requested` turns true at the first Ctrl-C."""

    def __init__(self, notice: str = STEP_NOTICE) -> None:
        self.notice = notice
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C is not ours to catch
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print(f"[yellow]{self.notice}[/yellow]")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
