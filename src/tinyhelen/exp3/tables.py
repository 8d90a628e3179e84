"""The EXP3 tables, rendered from the typed result only (``card``: the report card's section, ``document``:
``reports/exp3.md``, with the difficulty scores' correlations beside the result)."""
from __future__ import annotations

import pandas as pd

from tinyhelen.exp3 import targets as T
from tinyhelen.exp3.result import Exp3Result
from tinyhelen.tables import f, mean_sd, table


def exp3_summary(e3: Exp3Result) -> pd.DataFrame:
    """Per strategy over seeds: final and best validation loss (overall and per genre), pool used."""
    runs = pd.DataFrame([{**r.model_dump(exclude={"final_val_loss_by_genre"}),
                          **{f"final {g}": v for g, v in r.final_val_loss_by_genre.items()}} for r in e3.runs])
    g = runs.groupby("strategy", sort=False)
    cols = {"seeds": g.size(), "final val loss": g.final_val_loss.agg(mean_sd),
            "best val loss": g.best_val_loss.agg(mean_sd)}
    cols.update({f"final {gen}": g[f"final {gen}"].agg(mean_sd) for gen in e3.val_genres
                 if f"final {gen}" in runs})
    cols["pool used"] = g.pool_fraction.agg(lambda x: f"{x.mean():.2f}")
    return pd.DataFrame(cols).reindex(e3.strategies).reset_index()


def reach_table(e3: Exp3Result) -> pd.DataFrame:
    """Steps and data to target of every strategy vs every baseline under every target definition (GLUE too
    where it ran); reductions where every seed of both reached the target."""
    out = []
    for b in e3.baselines:
        for d in [*e3.definitions, T.GLUE_DEFINITION]:
            if not e3.reach_of(b, b, d):
                continue
            for s in e3.strategies:
                rows = list(e3.reach_of(s, b, d).values())
                hit = [r for r in rows if r.steps_to_target is not None]

                def red(fld: str) -> str:
                    if s == b:
                        return ""
                    x = e3.reduction(s, b, d, fld) if len(hit) == len(rows) else None
                    return "not all reached" if x is None else f"{x:+.1%}"

                target = e3.target_mean(b, d) if d != T.GLUE_DEFINITION else \
                    sum(r.target for r in rows) / len(rows)
                out.append({"baseline": b, "definition": d, "target": f(target, ".4f"), "strategy": s,
                            "reached": f"{len(hit)}/{len(rows)}",
                            "steps to target": mean_sd(pd.Series([r.steps_to_target for r in hit], dtype=float)),
                            "step reduction": red("steps_to_target"),
                            "data to target": mean_sd(pd.Series([r.data_to_target for r in hit], dtype=float)),
                            "data reduction": red("data_to_target")})
    return pd.DataFrame(out)


def exp3_glue(e3: Exp3Result) -> pd.DataFrame:
    g = pd.DataFrame([{"strategy": r.strategy, "step": r.step, "mean test score": r.mean_test_score, **r.tasks}
                      for r in e3.glue]).groupby(["strategy", "step"], sort=False)
    return g.agg(lambda x: mean_sd(x, ".3f")).reset_index()


def card(e3: Exp3Result) -> list[str]:
    pool = ", ".join(f"{g} {f(n)}" for g, n in e3.pool_genres.items())
    head = [f"Budget {e3.max_steps} steps x {e3.batch_size} x {e3.seq_len} tokens; pool {f(e3.pool_units)} units / "
            f"{f(e3.pool_tokens)} tokens" + (f" ({pool})" if pool else "") + f"; selected strategy (`curriculum`): "
            f"`{e3.selected}`; baselines " + ", ".join(f"`{b}`" for b in e3.baselines) + ". Mean ± std over seeds.",
            ""]
    out = head + table(exp3_summary(e3))
    defs = [*e3.definitions, *([T.GLUE_DEFINITION] if e3.glue_reach else [])]
    out += ["Steps and data to reach a baseline's performance. Target definitions: "
            + "; ".join(f"`{d}`: {T.DEFINITION_TEXT[d]}" for d in defs) + ". Data to target = unique training "
            "tokens consumed by then (baselines too). Reduction = 1 - mean (strategy) / mean (baseline to its own "
            "target); positive = fewer. The study reports about 20% for `lmloss` vs `full-random`.", ""]
    out += table(reach_table(e3))
    if e3.glue:
        out += [f"Leaner-GLUE of the proxy ({', '.join(e3.glue_tasks)}; test scores, mean ± std over seeds):",
                ""] + table(exp3_glue(e3))
    return out


def document(e3: Exp3Result, correlations: dict[str, dict[str, float]] | None = None) -> str:
    primary = {(r.strategy, r.seed): r for r in e3.reach if (r.baseline, r.definition) == (e3.baselines[0], T.PRIMARY)}

    def reach(r, fld: str) -> str:
        x = getattr(primary.get((r.strategy, r.seed)), fld, None)
        return "never" if x is None else f(x)

    runs = pd.DataFrame([{"strategy": r.strategy, "seed": r.seed, "final val loss": f"{r.final_val_loss:.4f}",
                          "best val loss": f"{r.best_val_loss:.4f}", "steps to target": reach(r, "steps_to_target"),
                          "data to target": reach(r, "data_to_target"), "data at end": f(r.data_at_end),
                          "pool used": f"{r.pool_fraction:.2f}", "expansions": r.expansions} for r in e3.runs])
    lines = ["# EXP3: curriculum learning with a tiny proxy", "", "From the run files `runs/exp3/`.", ""]
    lines += card(e3) + [f"## Every run (target: `{e3.baselines[0]}`, `{T.PRIMARY}`)", ""] + table(runs)
    if correlations:
        names = list(correlations)
        lines += ["## Spearman correlation between difficulty scores (pool units)", ""] + table(pd.DataFrame(
            [{"": a, **{b: f"{correlations[a][b]:.2f}" for b in names}} for a in names]))
    return "\n".join(lines).rstrip("\n") + "\n"
