"""Process a stream of records in chunks on a pool of worker processes, in order.

A command gives a picklable *step* (an object with `process(file, line, payload)`); it is sent
once to every worker (the pool's initializer), then chunks of `chunk_size` items go out and
their results come back in input order, so the output is the same for any number of workers.

At most 2 × workers chunks are in flight: `Pool.imap` would read its whole input ahead of the
workers (its feeder thread does not wait), so the window is kept here with `apply_async` and a
queue of pending results — the same ordered results, in bounded memory.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from honing.workbench.io import Item


class Step(Protocol):
    def process(self, file: str, line: int, payload: Any) -> Any: ...


_STEP: Step | None = None  # the step of this worker process


def _init_worker(step: Step) -> None:
    global _STEP
    _STEP = step


def _process_chunk(chunk: list[Item]) -> list[Any]:
    assert _STEP is not None
    return [_STEP.process(file, line, payload) for file, line, payload in chunk]


def resolve_workers(workers: int | None) -> int:
    """The number of worker processes: as given, or one per CPU core."""
    return workers or os.cpu_count() or 1


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _context() -> multiprocessing.context.BaseContext:
    # fork is cheap and needs no re-import; elsewhere spawn is the only safe choice.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def run_step(step: Step, items: Iterable[Item], *, workers: int | None, chunk_size: int) -> Iterator[tuple[Item, Any]]:
    """(item, step.process(*item)) for every item, in input order."""
    count = resolve_workers(workers)
    if count == 1:
        for chunk in chunks(items, chunk_size):
            yield from zip(chunk, (step.process(*item) for item in chunk))
        return
    with _context().Pool(count, initializer=_init_worker, initargs=(step,)) as pool:
        pending: deque[tuple[list[Item], Any]] = deque()
        for chunk in chunks(items, chunk_size):
            pending.append((chunk, pool.apply_async(_process_chunk, (chunk,))))
            if len(pending) >= 2 * count:
                done, result = pending.popleft()
                yield from zip(done, result.get())
        while pending:
            done, result = pending.popleft()
            yield from zip(done, result.get())
