"""EXP3 report: table strategy x seed, steps/data to reach a target validation loss, reductions vs the
reference strategy (``full-random``), and the loss curves of every run.

Definitions (also in ``docs/exp3.md``):

* **target loss**: ``exp3.report.target_loss`` if set; otherwise the *highest* best-so-far validation loss
  that every seed of the reference strategy (``exp3.report.target_from``, default ``full-random``) reaches
  by the end of its budget, i.e. ``max over seeds of min(val_loss)``: every reference run reaches it.
* **steps to target**: the first evaluation step whose validation loss is <= the target (None: never
  within the budget). **tokens to target** = steps x batch x seq_len (training tokens, not a second
  measurement). **data to target** = the unique pool tokens seen by that step (tokens of distinct units
  that entered a training batch; a unit read twice counts once).
* **reduction** of a strategy = ``1 - mean(steps to target) / mean(reference's steps to target)``
  (positive = fewer steps; the study reports about 20% for ``lmloss``); **data reduction** likewise
  with data to target. Reported only when every seed of the strategy reached the target.
* **typed result**: ``build`` returns ``tinyhelen.results.Exp3Result`` (every run; the budget and the proxy's
  size); its ``metrics()`` are the DVC metrics ``reports/exp3.json``, per-seed figures stay in the result.
* **spread**: sample standard deviation over seeds (``std``) and the range ``[min, max]``.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, ClassVar, Literal

from tinyhelen.io import atomic_path
from tinyhelen.results import Result, Schema, mean_or_none, rounded


class Exp3Run(Schema):
    """One (strategy, seed) run. ``steps_to_target``: first evaluation step at or below the target loss
    (None: not within the budget); ``data_to_target``: unique pool tokens the run had seen by then (tokens
    of distinct units that entered a training batch; not steps x batch); ``data_at_end``: the same at the
    end of the budget; ``pool_tokens_at_target``: tokens of the units in the pool at that step."""

    strategy: str
    seed: int
    final_val_loss: float
    best_val_loss: float
    pool_fraction: float
    expansions: int
    steps_to_target: int | None
    data_to_target: int | None
    data_at_end: int | None = None
    pool_tokens_at_target: int | None = None


class Exp3Glue(Schema):
    """Leaner-GLUE of one proxy checkpoint: ``strategy`` ``untrained`` with ``step`` 0 is the random-init
    proxy of that seed; ``tasks``: test score per task."""

    strategy: str
    seed: int
    step: int
    mean_test_score: float
    tasks: dict[str, float]


class Exp3Result(Result):
    name: ClassVar[str] = "exp3"
    kind: Literal["exp3"] = "exp3"
    strategies: list[str]
    seeds: list[int]
    selected: str
    target_loss: float
    target_from: str
    max_steps: int
    eval_every: int
    batch_size: int
    seq_len: int
    pool_units: int
    pool_tokens: int
    preset: str
    non_embedding_params: int | None
    runs: list[Exp3Run]
    glue: list[Exp3Glue] = []
    glue_tasks: list[str] = []

    @property
    def tokens_per_run(self) -> int:
        return self.max_steps * self.batch_size * self.seq_len

    def runs_of(self, strategy: str) -> dict[int, Exp3Run]:
        return {r.seed: r for r in self.runs if r.strategy == strategy}

    def reduction(self, strategy: str, field: str) -> float | None:
        """``1 - mean(field of strategy) / mean(field of target_from)`` when every run of both reached."""
        a, b = (list(self.runs_of(s).values()) for s in (strategy, self.target_from))
        va, vb = [getattr(r, field) for r in a], [getattr(r, field) for r in b]
        if not va or not vb or None in va or None in vb or not mean_or_none(vb):
            return None
        return round(1 - mean_or_none(va) / mean_or_none(vb), 4)

    def summary_row(self, strategy: str) -> dict[str, Any]:
        runs = list(self.runs_of(strategy).values())
        reached = [r for r in runs if r.steps_to_target is not None]
        return {"final_val_loss": rounded(mean_or_none([r.final_val_loss for r in runs])),
                "steps_to_target": rounded(mean_or_none([r.steps_to_target for r in reached])),
                "reached": len(reached), "runs": len(runs),
                "step_reduction": self.reduction(strategy, "steps_to_target"),
                "data_reduction": self.reduction(strategy, "data_to_target"),
                "pool_fraction": rounded(mean_or_none([r.pool_fraction for r in runs]))}

    def metrics(self) -> dict[str, Any]:
        return {"selected": {"strategy": self.selected, **self.summary_row(self.selected)},
                "target_loss": self.target_loss,
                "strategies": {s: {k: v for k, v in self.summary_row(s).items() if k not in ("runs",)}
                               for s in self.strategies}}




def run_name(strategy: str, seed: int) -> str:
    """A run's name (``dvc.yaml`` spells it ``${strategy}-s${seed}``): its directory under
    ``data/curriculum/runs``, its DVCLive log, its ``exp3_glue`` scores file."""
    return f"{strategy}-s{seed}"


def first_reach(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation at or below ``target``: its step, training tokens (steps x batch), unique pool
    tokens seen (``data``: the data-to-target figure) and the pool's size in tokens then."""
    for r in curve:
        if r["val_loss"] is not None and r["val_loss"] <= target:
            return {"step": int(r["step"]), "tokens": int(r["tokens"]), "data": int(r["seen_tokens"]),
                    "pool_tokens": int(r["pool_tokens"])}
    return None


def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": round(statistics.fmean(xs), 5), "std": round(statistics.stdev(xs), 5) if len(xs) > 1 else 0.0,
            "min": round(min(xs), 5), "max": round(max(xs), 5)}


def build(runs: dict[tuple[str, int], dict], strategies: list[str], seeds: list[int], selected: str,
          target_loss: float | None, target_from: str, train: Any, pool_units: int, pool_tokens: int,
          non_embedding_params: int | None, glue: tuple[list[Exp3Glue], list[str]] = ([], [])) -> Exp3Result:
    """The typed EXP3 result (``tinyhelen.results.Exp3Result``): every run's figures and the budget.
    ``train``: the ``exp3.train`` section (steps, batch, sequence length, evaluation interval, model)."""
    if target_loss is None:
        if target_from not in strategies:
            raise ValueError(f"exp3.report.target_from={target_from!r} is not in exp3.strategies")
        target_loss = max(min(r["val_loss"] for r in runs[(target_from, s)]["curve"]) for s in seeds)
    if selected not in strategies:
        raise ValueError(f"curriculum={selected!r} is not among exp3.strategies {strategies}")
    per_run = []
    for (s, seed), run in runs.items():
        hit = first_reach(run["curve"], target_loss)
        sm = run["summary"]
        per_run.append(Exp3Run(strategy=s, seed=seed, final_val_loss=sm["final_val_loss"],
                               best_val_loss=sm["best_val_loss"], pool_fraction=sm["pool_fraction"],
                               expansions=sm["expansions"], steps_to_target=hit and hit["step"],
                               data_to_target=hit and hit["data"], data_at_end=int(run["curve"][-1]["seen_tokens"]),
                               pool_tokens_at_target=hit and hit["pool_tokens"]))
    return Exp3Result(strategies=strategies, seeds=seeds, selected=selected, target_loss=round(target_loss, 5),
                      target_from=target_from, max_steps=train.max_steps, eval_every=train.eval_every,
                      batch_size=train.batch_size, seq_len=train.seq_len, pool_units=pool_units,
                      pool_tokens=pool_tokens, preset=train.model.preset, non_embedding_params=non_embedding_params,
                      runs=per_run, glue=glue[0], glue_tasks=glue[1])


def aggregate(res: Exp3Result) -> dict[str, dict[str, Any]]:
    """Per strategy: mean, std, min, max over seeds of each figure, reached count and the reductions."""
    agg: dict[str, dict[str, Any]] = {}
    for s in res.strategies:
        rows = list(res.runs_of(s).values())
        reached = [r for r in rows if r.steps_to_target is not None]
        agg[s] = {"final_val_loss": _stats([r.final_val_loss for r in rows]),
                  "best_val_loss": _stats([r.best_val_loss for r in rows]),
                  "pool_fraction": _stats([r.pool_fraction for r in rows]),
                  "steps_to_target": _stats([r.steps_to_target for r in reached]),
                  "data_to_target": _stats([r.data_to_target for r in reached]),
                  "reached": f"{len(reached)}/{len(rows)}",
                  "step_reduction": res.reduction(s, "steps_to_target"),
                  "data_reduction": res.reduction(s, "data_to_target")}
    return agg


def glue_table(res: Exp3Result) -> list[dict[str, Any]]:
    """Leaner-GLUE per strategy and checkpoint step (the untrained proxy at step 0): mean and std over
    seeds of the mean test score and the mean of each task's test score."""
    out = []
    for name in dict.fromkeys(g.strategy for g in res.glue):
        for step in sorted({g.step for g in res.glue if g.strategy == name}):
            rows = [g for g in res.glue if g.strategy == name and g.step == step]
            row: dict[str, Any] = {"strategy": name, "step": step, "seeds": len(rows),
                                   "mean_test_score": _stats([g.mean_test_score for g in rows])}
            for t in res.glue_tasks:
                row[t] = round(statistics.fmean(g.tasks[t] for g in rows), 4)
            out.append(row)
    return out


def curve_rows(runs: dict[tuple[str, int], dict], strategies: list[str], column: str) -> list[dict[str, Any]]:
    """Wide rows ``step, tokens, <strategy>...``: the mean over seeds of ``column`` at each evaluation."""
    steps = sorted({int(r["step"]) for run in runs.values() for r in run["curve"]})
    rows = []
    for st in steps:
        row: dict[str, Any] = {"step": st}
        for s in strategies:
            vals = [r[column] for (name, _), run in runs.items() if name == s for r in run["curve"]
                    if int(r["step"]) == st and r[column] is not None]
            row[s] = round(statistics.fmean(vals), 5) if vals else None
        rows.append(row)
    return rows


def plot_png(runs: dict[tuple[str, int], dict], strategies: list[str], target: float, path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("tab10")
    for k, s in enumerate(strategies):
        for (name, seed), run in sorted(runs.items()):
            if name != s:
                continue
            xs = [r["step"] for r in run["curve"]]
            ax1.plot(xs, [r["val_loss"] for r in run["curve"]], color=cmap(k % 10), lw=1,
                     alpha=0.8, label=s if seed == min(sd for n, sd in runs if n == s) else None)
            ax2.plot(xs, [r["pool_fraction"] for r in run["curve"]], color=cmap(k % 10), lw=1, alpha=0.8)
    ax1.axhline(target, color="k", ls="--", lw=0.8, label="target")
    ax1.set_xlabel("step")
    ax1.set_ylabel("validation loss (nats/token)")
    ax1.set_title("EXP3 validation loss (each line one seed)")
    lo = min(r["val_loss"] for run in runs.values() for r in run["curve"])
    ax1.set_ylim(lo - 0.1, lo + 2.0 if math.isfinite(lo) else None)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("step")
    ax2.set_ylabel("share of units in the pool")
    ax2.set_title("pool growth")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def correlations(scores: dict[str, Any]) -> dict[str, dict[str, float]]:
    from scipy.stats import spearmanr

    names = list(scores)
    return {a: {b: round(float(spearmanr(scores[a], scores[b]).statistic), 4) if a != b else 1.0 for b in names}
            for a in names}
