"""Batch sources of the training loop (``tinyhelen.train.loop``): the protocol, the part of a global batch a
process builds (``Shard``), the split into micro-batches, and prefetching in a background thread.

A global batch of ``n`` rows is dealt among ``world`` processes by rows: process ``rank`` takes rows ``rank,
rank + world, ...`` (``Shard.rows``), so the data order and the token count do not depend on the number of
processes, and each process builds only its rows (on its own device).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Shard:
    """This process's part of a global batch: rows ``rank, rank + world, ...``, built on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of ``n`` rows (index a list, array or tensor with it)."""
        return slice(self.rank, n, self.world)

    def count(self, n: int) -> int:
        return len(range(self.rank, n, self.world))


class BatchSource(Protocol):
    def size(self, step: int) -> int:
        """Rows of the global batch of optimizer step ``step`` (all processes)."""

    def batch(self, step: int, shard: Shard) -> Batch:
        """``shard``'s rows of the global batch of step ``step`` (model kwargs incl. ``labels``). Called once
        per step on every process (a source that keeps a state advances it by the whole global batch)."""

    def tokens(self, batch: Batch) -> int:
        """Tokens of ``batch`` (this process's rows) counted as seen."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a checkpoint (``{}`` if ``batch`` depends on the step only)."""

    def load_state(self, state: dict[str, Any]) -> None: ...


class Prefetch:
    """This process's batches of a source, the next one prepared in a background thread (on the process's
    device) while the current step runs, when the source allows it (``source.prefetch``: its batch depends on
    the step only, not on what the callbacks do between steps). Otherwise (or with ``enabled`` false) batches
    are made on demand."""

    def __init__(self, source: BatchSource, end: int, part: Callable[[int], tuple[Shard, bool]],
                 device: torch.device, enabled: bool | None = None):
        self.source, self.end, self.part = source, end, part
        self.enabled = bool(getattr(source, "prefetch", False)) if enabled is None else enabled
        self.pool = None
        self.pending: dict[int, Any] = {}
        if self.enabled:
            from concurrent.futures import ThreadPoolExecutor

            init = None
            if device.type == "cuda":  # the thread's current GPU: this process's (a thread starts on GPU 0)
                index = device.index if device.index is not None else torch.cuda.current_device()
                init = lambda: torch.cuda.set_device(index)  # noqa: E731
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch", initializer=init)

    def _make(self, step: int) -> tuple[Batch, bool]:
        shard, stand_in = self.part(step)
        return self.source.batch(step, shard), stand_in

    def get(self, step: int) -> tuple[Batch, bool]:
        """This process's batch of ``step`` and whether it is a stand-in row (no rows of its own)."""
        fut = self.pending.pop(step, None)
        got = fut.result() if fut is not None else self._make(step)
        if self.pool is not None and step + 1 < self.end:
            self.pending[step + 1] = self.pool.submit(self._make, step + 1)
        return got

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def split_rows(rows: int, parts: int) -> list[int]:
    """Sizes of ``parts`` consecutive micro-batches of ``rows`` rows (differing by at most one, larger first)."""
    return [rows // parts + (j < rows % parts) for j in range(parts)]
