""""Reaches the baseline's performance": EXP3's pre-registered target definitions, and the steps and data a run
needs to reach a target.

A target is set by a **baseline** (``exp3.report.baselines``: ``full-random``, the study's full-data baseline,
and the iterative ``random`` control, same pacing as the curricula in a random order) under a **definition**
(``DEFINITIONS``, the primary one first). The definitions are code, not params: a verdict needs them to agree
(``tinyhelen.report.verdicts.decide_definitions``), so they are fixed before the runs they judge.

* ``final`` (primary): per seed, the baseline's validation loss at the end of its budget. Strategy seed s is
  compared with baseline seed s (paired).
* ``mean_final``: the final loss of the baseline's mean curve (the mean over its seeds of the loss at the
  last evaluation); one target for every seed.
* ``best``: per seed, the baseline's lowest validation loss over its run (paired).

**Steps to target**: the first evaluation step whose validation loss is at or below the target (None: not
within the budget). **Data to target**: the unique training tokens the run had consumed by that step
(``seen_tokens`` of its curve: the tokens of distinct units that entered a training batch, a unit read
twice counting once), for the baselines too: a baseline is measured against its own target the same way
(under ``final`` a monotone curve reaches it only at its last evaluation, under ``best`` at its best one).

**GLUE** (where ``exp3_glue`` ran; ``GLUE_DEFINITION``): per seed, the mean test score of the baseline's last
checkpoint; steps to target = the first checkpoint step whose score is at or above it; data = ``seen_tokens``
at that step.
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

DEFINITIONS: tuple[str, ...] = ("final", "mean_final", "best")
PRIMARY = DEFINITIONS[0]
GLUE_DEFINITION = "glue_last"
DEFINITION_TEXT = {
    "final": "per seed, the baseline's validation loss at the end of its budget (paired by seed)",
    "mean_final": "the final validation loss of the baseline's mean curve (one target for every seed)",
    "best": "per seed, the baseline's best validation loss (paired by seed)",
    GLUE_DEFINITION: "per seed, the baseline's Leaner-GLUE mean test score at its last checkpoint (paired)",
}

Curve = Sequence[Mapping[str, Any]]


def losses(curve: Curve) -> list[float]:
    return [r["val_loss"] for r in curve if r["val_loss"] is not None]


def targets(curves: Mapping[int, Curve], definition: str, seeds: Sequence[int]) -> dict[int, float]:
    """The target loss of each of ``seeds`` under ``definition`` from the baseline's ``curves`` (by seed); a
    seed the baseline did not run has no paired target."""
    finals = {s: losses(c)[-1] for s, c in curves.items()}
    if definition == "final":
        return {s: finals[s] for s in seeds if s in finals}
    if definition == "best":
        return {s: min(losses(curves[s])) for s in seeds if s in curves}
    if definition == "mean_final":
        return dict.fromkeys(seeds, statistics.fmean(finals.values())) if finals else {}
    raise ValueError(f"unknown target definition {definition!r}; known: {', '.join(DEFINITIONS)}")


def first_reach(curve: Curve, target: float) -> dict[str, int] | None:
    """The first evaluation at or below ``target``: its step, training tokens (steps x batch), unique training
    tokens consumed (``data``) and the pool's size in tokens then."""
    for r in curve:
        if r["val_loss"] is not None and r["val_loss"] <= target:
            return {"step": int(r["step"]), "tokens": int(r["tokens"]), "data": int(r["seen_tokens"]),
                    "pool_tokens": int(r["pool_tokens"])}
    return None


def glue_targets(scores: Mapping[int, Mapping[int, float]]) -> dict[int, float]:
    """Per seed, the baseline's score at its last checkpoint (``scores[seed][step]``)."""
    return {s: by_step[max(by_step)] for s, by_step in scores.items() if by_step}


def first_glue_reach(by_step: Mapping[int, float], target: float) -> int | None:
    """The first checkpoint step whose score is at or above ``target``."""
    return next((st for st in sorted(by_step) if by_step[st] >= target), None)


def seen_at(curve: Curve, step: int) -> int | None:
    """Unique training tokens consumed by ``step`` (its curve row)."""
    return next((int(r["seen_tokens"]) for r in curve if int(r["step"]) == step), None)


def reach(runs: Mapping[tuple[str, int], Mapping[str, Any]], strategies: Sequence[str], seeds: Sequence[int],
          baselines: Sequence[str]) -> list[dict[str, Any]]:
    """Every (baseline, definition, strategy, seed) with a target: the steps and data to reach it (``runs``:
    ``{(strategy, seed): {"curve": ...}}``)."""
    out = []
    for b in baselines:
        curves = {seed: runs[(b, seed)]["curve"] for seed in seeds if (b, seed) in runs}
        for d in DEFINITIONS:
            for seed, target in targets(curves, d, seeds).items():
                for s in strategies:
                    hit = first_reach(runs[(s, seed)]["curve"], target)
                    out.append({"baseline": b, "definition": d, "strategy": s, "seed": seed,
                                "target": round(target, 5), "steps_to_target": hit and hit["step"],
                                "data_to_target": hit and hit["data"], "pool_tokens_at_target": hit and hit["pool_tokens"]})
    return out


def glue_reach(runs: Mapping[tuple[str, int], Mapping[str, Any]], scores: Sequence[tuple[str, int, int, float]],
               strategies: Sequence[str], baselines: Sequence[str]) -> list[dict[str, Any]]:
    """``GLUE_DEFINITION`` per baseline and seed: the baseline's score at its last checkpoint and the first
    checkpoint of each strategy (same seed) at or above it. ``scores``: (strategy, seed, step, score)."""
    by: dict[str, dict[int, dict[int, float]]] = {}
    for name, seed, step, score in scores:
        by.setdefault(name, {}).setdefault(seed, {})[step] = score
    out = []
    for b in baselines:
        for seed, target in glue_targets(by.get(b, {})).items():
            for s in strategies:
                by_step = by.get(s, {}).get(seed)
                if not by_step or (s, seed) not in runs:
                    continue
                step = first_glue_reach(by_step, target)
                out.append({"baseline": b, "definition": GLUE_DEFINITION, "strategy": s, "seed": seed,
                            "target": round(target, 5), "steps_to_target": step,
                            "data_to_target": None if step is None else seen_at(runs[(s, seed)]["curve"], step)})
    return out
