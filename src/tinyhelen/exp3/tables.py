"""The EXP3 tables, rendered from the typed result only (``card``: the report card's section, ``document``:
``reports/exp3.md``, with the difficulty scores' correlations beside the result)."""
from __future__ import annotations

import pandas as pd

from tinyhelen.exp3.result import Exp3Result
from tinyhelen.tables import f, mean_sd, table



def exp3_summary(e3: Exp3Result) -> pd.DataFrame:
    runs = pd.DataFrame([r.model_dump() for r in e3.runs])
    g = runs.groupby("strategy", sort=False)
    df = pd.DataFrame({
        "seeds": g.size(),
        "reached": g.steps_to_target.count().astype(str) + "/" + g.size().astype(str),
        "steps to target": g.steps_to_target.agg(mean_sd),
        "data to target (unique pool tokens seen)": g.data_to_target.agg(mean_sd),
        "final val loss": g.final_val_loss.agg(mean_sd),
        "pool used": g.pool_fraction.agg(lambda x: f"{x.mean():.2f}"),
    }).reindex(e3.strategies)
    for fld, col in (("steps_to_target", "step reduction"), ("data_to_target", "data reduction")):
        df[col] = [("" if s == e3.target_from else
                    (lambda x: "target not reached" if x is None else f"{x:+.1%}")(e3.reduction(s, fld)))
                   for s in df.index]
    return df.reset_index()


def exp3_glue(e3: Exp3Result) -> pd.DataFrame:
    g = pd.DataFrame([{"strategy": r.strategy, "step": r.step, "mean test score": r.mean_test_score, **r.tasks}
                      for r in e3.glue]).groupby(["strategy", "step"], sort=False)
    return g.agg(lambda x: mean_sd(x, ".3f")).reset_index()


def card(e3: Exp3Result) -> list[str]:
    head = [f"Target validation loss {e3.target_loss:.4g} (from `{e3.target_from}`); budget {e3.max_steps} steps x "
            f"{e3.batch_size} x {e3.seq_len} tokens; pool {f(e3.pool_units)} units / {f(e3.pool_tokens)} tokens; "
            f"selected strategy (`curriculum`): `{e3.selected}`. Mean ± std over seeds.", ""]
    out = head + table(exp3_summary(e3))
    if e3.glue:
        out += [f"Leaner-GLUE of the proxy ({', '.join(e3.glue_tasks)}; test scores, mean ± std over seeds):",
                ""] + table(exp3_glue(e3))
    return out


def document(e3: Exp3Result, correlations: dict[str, dict[str, float]] | None = None) -> str:
    runs = pd.DataFrame([{"strategy": r.strategy, "seed": r.seed, "final val loss": f"{r.final_val_loss:.4f}",
                          "best val loss": f"{r.best_val_loss:.4f}",
                          "steps to target": "never" if r.steps_to_target is None else r.steps_to_target,
                          "data to target": f(r.data_to_target), "pool used": f"{r.pool_fraction:.2f}",
                          "expansions": r.expansions} for r in e3.runs])
    lines = ["# EXP3: curriculum learning with a tiny proxy", "", "From the run files `runs/exp3/`.", ""]
    lines += card(e3) + ["## Every run", ""] + table(runs)
    if correlations:
        names = list(correlations)
        lines += ["## Spearman correlation between difficulty scores (pool units)", ""] + table(pd.DataFrame(
            [{"": a, **{b: f"{correlations[a][b]:.2f}" for b in names}} for a in names]))
    lines += ["Reduction = 1 - mean steps (or unique pool tokens seen) to reach the target / the same for "
              f"`{e3.target_from}`; positive = fewer. The study reports about 20% for `lmloss`.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
