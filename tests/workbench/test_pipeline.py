"""honing.workbench.pipeline: results come back in input order for any number of workers, from
several processes, with at most 2 × workers chunks read ahead."""

from __future__ import annotations

import os
import time

import pytest

from honing.workbench.pipeline import chunks, resolve_workers, run_step


class SlowFirst:
    """Early items take longest, so with several workers later chunks finish first."""

    def process(self, file, line, payload):
        time.sleep(0.02 if line < 4 else 0.0)
        return (payload * 2, os.getpid())


def _items(n):
    return [("f.jsonl", line, line) for line in range(n)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_in_input_order_for_any_worker_count(workers):
    items = _items(23)
    out = list(run_step(SlowFirst(), items, workers=workers, chunk_size=2))
    assert [item for item, _ in out] == items
    assert [result for _, (result, _) in out] == [2 * line for line in range(23)]
    pids = {pid for _, (_, pid) in out}
    if workers == 1:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids and 1 < len(pids) <= workers


def test_reads_at_most_two_chunks_per_worker_ahead():
    drawn = []

    def source():
        for item in _items(200):
            drawn.append(item)
            yield item

    results = run_step(SlowFirst(), source(), workers=2, chunk_size=3)
    next(results)
    assert len(drawn) <= 2 * 2 * 3
    assert len(list(results)) == 199
    assert len(drawn) == 200


def test_chunks_and_worker_count():
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []
    assert resolve_workers(4) == 4
    assert resolve_workers(None) == (os.cpu_count() or 1)
