"""The processes of a run started by ``torchrun`` (or ``accelerate launch``): which one this is, and the few
collectives the stages need outside the training loop's own (gathering predictions, one process deciding).

Rank and world size come from ``torch.distributed`` once the training loop has created its process group
(``tinyhelen.train.compute.accelerator``), and before that from the launcher's ``RANK`` / ``WORLD_SIZE``, so a
stage can ask ``is_main()`` at any time without starting anything. Only the main process (rank 0) writes a
stage's outputs; the collectives are no-ops in a single process.
"""
from __future__ import annotations

import os
from typing import Any


def _group() -> Any:
    """``torch.distributed`` when a process group of several processes is running, else None (a single
    process; a launched process before the training loop has started the group cannot take part in a
    collective: an error)."""
    import sys

    dist = sys.modules.get("torch.distributed")  # no torch import for a stage that never trains
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist if dist.get_world_size() > 1 else None
    return None


def _collective() -> Any:
    g = _group()
    if g is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("a collective before the process group exists (the training loop starts it)")
    return g


def rank() -> int:
    g = _group()
    return g.get_rank() if g is not None else int(os.environ.get("RANK", "0"))


def world() -> int:
    g = _group()
    return g.get_world_size() if g is not None else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """This is the process that writes the outputs (rank 0; the only one without a launcher)."""
    return rank() == 0


def barrier() -> None:
    g = _collective()
    if g is not None:
        g.barrier()


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` in a single process)."""
    g = _collective()
    if g is None:
        return [obj]
    out: list[Any] = [None] * g.get_world_size()
    g.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every process (``obj`` in a single process)."""
    g = _collective()
    if g is None:
        return obj
    box = [obj]
    g.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(tensor: Any) -> Any:
    """``tensor`` summed over the processes, in place (unchanged in a single process)."""
    g = _collective()
    if g is not None:
        g.all_reduce(tensor, op=g.ReduceOp.SUM)
    return tensor
