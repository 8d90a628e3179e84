"""The EXP2 tables, rendered from the typed result only (``card``: the report card's section, ``document``:
``reports/exp2.md``, with what the judge stage recorded beside the result: judge model, position agreement)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from tinyhelen.exp2.judge import METRIC_LABELS
from tinyhelen.exp2.result import Estimate, Exp2Result
from tinyhelen.tables import f, table


def _est(e: Estimate | None) -> str:
    if e is None or e.mean is None:
        return "n/a"
    return f"{e.mean:.3g}" + (f" [{e.lo:.3g}, {e.hi:.3g}]" if e.lo is not None and e.hi is not None else "")


def exp2_recipes(e2: Exp2Result, metrics: list[str] | None = None, field: str = "scores") -> pd.DataFrame:
    """Per recipe: the selected step and every metric of ``field`` (``scores``: Leaner-Eval; ``heldout``: the
    held-out prompts of its tuning data)."""
    metrics = metrics or list(dict.fromkeys(m for r in e2.recipes for m in getattr(r, field)))
    rows = []
    for r in e2.recipes:
        row = {"recipe (pretrain-tune)": r.recipe, "selected step": f(r.selected_step) if r.selected_step is not None
               else (r.no_signal or "none")}
        if field == "heldout":
            row["answers"] = f(r.heldout_answers)
        row.update({m + (" (main)" if m == e2.main_metric else ""): _est(getattr(r, field).get(m)) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def _heldout(e2: Exp2Result) -> list[str]:
    if not any(r.heldout for r in e2.recipes):
        return []
    return (["Held-out prompts of each recipe's own tuning data (its validation split, never trained on; not the "
             "study's), judged like Leaner-Eval:", ""] + table(exp2_recipes(e2, field="heldout")))


def _exp2_head(e2: Exp2Result) -> tuple[list[str], list[str]]:
    banner = [] if e2.judge_is_llm else [
        f"> **Proxy metrics, not LLM-judge scores** (judge backend `{e2.judge_backend}`). The EXP2 claims are "
        "*not measured* by them.", ""]
    info = [f"Instruction data: `{e2.instruct_source}`; mean [{e2.interval_level:.0%} bootstrap interval] over "
            f"{f(e2.questions) if e2.questions else 'all'} questions.", ""]
    return banner, info


def card(e2: Exp2Result) -> list[str]:
    banner, info = _exp2_head(e2)
    return banner + info + table(exp2_recipes(e2)) + _heldout(e2)


def document(e2: Exp2Result, provenance: dict[str, Any] | None = None) -> str:
    prov = provenance or {}
    banner, info = _exp2_head(e2)
    metrics = list(dict.fromkeys(m for r in e2.recipes for m in r.scores))
    lines = ["# EXP2: instruction tuning with four data recipes", ""] + banner + [
        "From the run files `runs/exp2/` (judged answers), `runs/instruct/` (tuning curves).", ""]
    if prov:
        lines += [f"Judge model: `{prov.get('judge_model')}`; {prov.get('n_boot')} bootstrap resamples of the "
                  f"questions; decoding: {prov.get('decoding')}.", ""]
    lines += ["## Per recipe (Leaner-Eval)", ""] + info + table(exp2_recipes(e2, metrics))
    lines += [f"- `{m}`: {METRIC_LABELS.get(m, m)}" for m in metrics] + [""] + _heldout(e2)
    bins = sorted({b for r in e2.recipes for b in r.by_bin})
    if bins:
        lines += [f"## Per similarity bin: {e2.main_metric}", ""] + table(pd.DataFrame(
            [{"recipe": r.recipe, **{f"split-{b}": _est(r.by_bin.get(b)) for b in bins}} for r in e2.recipes]))
    steps = sorted({c.step for r in e2.recipes for c in r.curve})
    if steps:
        cell = lambda c: _est(c) + (f" ({c.unscored_share:.0%} unscored)" if c.unscored_share else "")  # noqa: E731
        lines += [f"## Checkpoint selection (inner comparison): {e2.selection_metric}", ""] + table(pd.DataFrame(
            [{"recipe": r.recipe, **{f"step {s}": next((cell(c) for c in r.curve if c.step == s), "")
                                     for s in steps}} for r in e2.recipes]))
    if prov.get("agreement"):
        ag = prov["agreement"]
        lines += ["## Position bias (same answers, two presentation orders)", "",
                  f"Answers judged in both orders: {ag.get('answers')}. Position means (sum 0-15): "
                  f"{prov.get('position_means')}", ""] + table(pd.DataFrame(
                      [{"criterion": c, **{k: v for k, v in a.items()}} for c, a in ag.items() if isinstance(a, dict)]))
    return "\n".join(lines).rstrip("\n") + "\n"
