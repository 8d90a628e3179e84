"""The EXP1 tables, rendered from the typed result only (``card``: the report card's section, ``document``:
``reports/exp1.md``)."""
from __future__ import annotations

import pandas as pd

from tinyhelen.exp1.result import Exp1Result
from tinyhelen.tables import f, table



def exp1_scores(e1: Exp1Result) -> pd.DataFrame:
    """arch x initialisation rows, task columns (test mean ± std over seeds at the best lr), the mean."""
    cells = pd.DataFrame([c.model_dump() for c in e1.cells])
    cells["cell"] = [f"{t:.3f} ± {s:.3f}" for t, s in zip(cells.test, cells["std"])]
    wide = cells.pivot(index=["arch", "init"], columns="task", values="cell")[e1.tasks]
    wide[f"mean ({len(e1.study_tasks())} study tasks)"] = [
        (lambda v: "n/a" if v is None else f"**{v:.3f}**")(e1.mean_score(a, i)) for a, i in wide.index]
    order = pd.MultiIndex.from_product([e1.archs, e1.inits], names=["arch", "init"])
    return wide.reindex(order).reset_index().rename(columns={"init": "pretrained on"})


def exp1_pretrain(e1: Exp1Result, detail: bool = False) -> pd.DataFrame:
    rows = []
    for r in e1.pretrain:
        row = {"run": f"{r.arch}-{r.side}", "tokens": f(r.tokens_seen), "steps": f(r.steps),
               "non-embedding params": f(r.non_embedding_params), "train loss": f(r.train_loss),
               "val loss": f(r.val_loss)}
        if detail:
            row.update({"selected lr": f(r.lr, "g"), "lowest val loss (step)": f"{f(r.best_val_loss)} "
                        f"({f(r.best_step)})", "lowest val loss per lr": ", ".join(
                            f"{lr}: {f(v)}" for lr, v in (r.lr_sweep or {}).items()) or "n/a"})
        rows.append(row)
    return pd.DataFrame(rows)


def _exp1_head(e1: Exp1Result) -> str:
    excluded = [t for t in e1.tasks if t not in e1.study_tasks()]
    note = f" {', '.join(excluded)}: shown, not in the mean (the study did not run it)." if excluded else ""
    return (f"Leaner-GLUE test score (task metric; mean ± std over seeds at the best learning rate), preset "
            f"`{e1.preset}`.{note}")


def card(e1: Exp1Result) -> list[str]:
    return [_exp1_head(e1), ""] + table(exp1_scores(e1)) + ["Pretraining runs:", ""] + table(exp1_pretrain(e1))


def document(e1: Exp1Result) -> str:
    lr = pd.DataFrame([{"arch": c.arch, "pretrained on": c.init, "task": c.task, "best lr": f(c.best_lr, "g"),
                        **{f"seed {s}": f"{v:.3f}" for s, v in c.seeds.items()}} for c in e1.cells])
    lines = [f"# EXP1: pretraining corpus x architecture on Leaner-GLUE (preset `{e1.preset}`)", "",
             f"Every pretraining run saw {e1.tokens_per_run:,} tokens. " + _exp1_head(e1) + " Each fine-tuning run "
             "is scored on test with the weights of its best validation epoch; the learning rate is the one with "
             "the best mean validation score over seeds. CoLA: MCC; MRPC: mean(F1, acc); STS-B: mean(Pearson, "
             "Spearman); others: accuracy. From the run files `runs/glue/` and `runs/pretrain/`.", ""]
    lines += table(exp1_scores(e1)) + ["## Per seed at the best learning rate", ""] + table(lr)
    lines += ["## Pretraining runs", "", "Each run swept the learning rates of `pretrain.lr` and kept the one with "
              "the lowest validation loss; fine-tuning starts from its weights at that loss (step shown).", ""]
    return "\n".join(lines + table(exp1_pretrain(e1, detail=True))).rstrip("\n") + "\n"
