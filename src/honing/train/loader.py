"""The batches of each optimiser step, optionally built one step ahead in a background thread.

The items of a step depend only on (seed, step), so building step s+1 while step s computes
changes nothing but the wall time: the same tensors arrive in the same order. With CUDA the
tensors are pinned in the background thread so the copies to the GPU are asynchronous.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

from honing.config import TrainConfig

MicroBatches = list[dict[str, torch.Tensor]]


def prefetch_enabled(setting: str, device: torch.device) -> bool:
    """auto: on with CUDA (the host is idle while the GPU computes), off on CPU (where the same
    cores run the step, so a second thread only competes with it)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


class StepBatches:
    """`get(step)` returns this rank's micro-batches for `step`; with prefetch, step+1's are already on the way."""

    def __init__(
        self,
        items: Sequence[Any],
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
        indices_of: Callable[[int], list[list[int]]],
        total_steps: int,
        *,
        prefetch: bool,
        pin_memory: bool = False,
    ):
        self.items, self.collate, self.indices_of, self.total_steps = items, collate, indices_of, total_steps
        self.pin_memory = pin_memory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="honing-prefetch") if prefetch else None
        self._pending: dict[int, Future] = {}

    def _build(self, step: int) -> MicroBatches:
        batches = [self.collate([self.items[i] for i in chunk]) for chunk in self.indices_of(step)]
        if self.pin_memory:
            batches = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
        return batches

    def get(self, step: int) -> MicroBatches:
        if self._pool is None:
            return self._build(step)
        future = self._pending.pop(step, None)
        batches = future.result() if future is not None else self._build(step)
        for stale in [s for s in self._pending if s != step + 1]:
            self._pending.pop(stale).cancel()
        if step + 1 < self.total_steps and step + 1 not in self._pending:
            self._pending[step + 1] = self._pool.submit(self._build, step + 1)
        return batches

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> StepBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def for_config(items, collate, indices_of, total_steps: int, cfg: TrainConfig, device: torch.device) -> StepBatches:
    prefetch = prefetch_enabled(cfg.prefetch, device)
    return StepBatches(items, collate, indices_of, total_steps, prefetch=prefetch,
                       pin_memory=prefetch and device.type == "cuda")
