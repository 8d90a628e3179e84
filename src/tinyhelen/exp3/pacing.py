"""Pacing: how many units (easiest first) are in the training pool at each evaluation.

* ``iterative`` (the study's schedule): start with the easiest ``start_fraction`` of units; whenever the
  validation loss has not improved on its best value (by more than ``min_delta``) for ``patience``
  consecutive evaluations, add the next ``increment`` of units and reset the counter (the best value is
  kept). Evaluations happen every ``eval_every`` steps, so the pool can only change there.
* ``linear``: competence ``c(t) = c0 + (1 - c0) t / T``; ``root``: ``c(t) = sqrt(c0^2 + (1 - c0^2) t / T)``
  (Platanios et al., 2019); ``step``: ``c0`` plus one ``increment`` every ``T / ceil((1 - c0) / increment)``
  steps. ``T = full_at * max_steps``; the pool holds ``ceil(c(t) N)`` units, never shrinking.

The pool never exceeds the ``N`` units. ``PlateauTracker`` is pure state (two numbers), so it is saved in
training checkpoints and a resumed run takes exactly the same decisions.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class PlateauTracker:
    """Counts evaluations without improvement of the best validation loss."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    bad: int = 0

    def update(self, loss: float) -> bool:
        """Record one evaluation; True means "plateau: expand now" (the counter restarts)."""
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.bad = 0
            return True
        return False

    def state(self) -> dict:
        return asdict(self)


def n_units(fraction: float, total: int) -> int:
    """Units in a share of the pool (at least one, at most all); rounding up, with float noise removed."""
    return max(1, min(total, math.ceil(round(fraction * total, 9))))


def competence(pacing: str, step: int, max_steps: int, start: float, increment: float, full_at: float) -> float:
    """Share of units in the pool at ``step`` for the step-based pacings (``linear``, ``root``, ``step``)."""
    horizon = max(1.0, full_at * max_steps)
    t = min(1.0, step / horizon)
    if pacing == "linear":
        return min(1.0, start + (1.0 - start) * t)
    if pacing == "root":
        return min(1.0, math.sqrt(start * start + (1.0 - start * start) * t))
    if pacing == "step":
        n_inc = max(1, math.ceil(round((1.0 - start) / increment, 9)))
        every = horizon / n_inc
        return min(1.0, start + increment * math.floor(round(step / every, 9)))
    raise ValueError(f"pacing {pacing!r} has no competence function")


def target_size(pacing: str, current: int, total: int, *, step: int, max_steps: int, start: float,
                increment: float, full_at: float, plateau: bool) -> int:
    """Pool size after an evaluation at ``step`` (``plateau``: the tracker's verdict for this evaluation)."""
    if pacing == "iterative":
        return min(total, current + n_units(increment, total)) if plateau else current
    return max(current, n_units(competence(pacing, step, max_steps, start, increment, full_at), total))


def checkpoint_steps(max_steps: int, eval_every: int, n: int) -> list[int]:
    """``n`` evenly spaced checkpoint steps: ``k * max_steps / n`` rounded down to an evaluation step
    (``max_steps`` itself is always an evaluation step)."""
    out = set()
    for k in range(1, n + 1):
        s = max_steps * k // n
        out.add(s if s == max_steps else max(eval_every, s - s % eval_every))
    return sorted(out)
