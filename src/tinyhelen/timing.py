"""Wall-clock figures of the running stage (seconds, throughput, MFU): never in DVC metrics files.

DVC metrics must be deterministic (same params -> byte-identical files, so ``dvc metrics diff`` shows only
what a change caused). Library code records its timings and throughput here instead::

    from tinyhelen import timing
    timing.record(tokens_per_s=1234.5, seconds=12.3)               # flat figures of this stage
    timing.record(**{"llama-leaner": {"tokens_per_s": 1234.5}})    # or grouped

``tinyhelen.cli.stage_main`` writes everything recorded into ``reports/timings/<stage>.json`` (git-ignored,
not a DVC output) under ``perf`` together with the stage's wall time; the ``report`` stage shows it.
"""
from __future__ import annotations

from typing import Any

_RECORDED: dict[str, Any] = {}


def record(**figures: Any) -> None:
    """Add (or overwrite) wall-clock figures of the running stage."""
    _RECORDED.update(figures)


def recorded() -> dict[str, Any]:
    """Everything recorded so far in this process (a copy)."""
    return dict(_RECORDED)


def clear() -> None:
    _RECORDED.clear()
