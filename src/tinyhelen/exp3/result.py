"""EXP3 report: every (strategy, seed) run, the steps and data each needs to reach a baseline's performance
under every target definition (``tinyhelen.exp3.targets``), reductions vs each baseline, per-genre losses,
Leaner-GLUE of the checkpoints and the loss curves.

Definitions (also in ``docs/exp3.md``):

* **baselines** (``exp3.report.baselines``): ``full-random`` (the study's) and the iterative ``random``
  control; every strategy (the baselines too) is measured against the target each baseline sets;
* **target definitions** (``targets.DEFINITIONS``): ``final`` (primary: per seed, the baseline's loss at the
  end of its budget, paired), ``mean_final`` (the final loss of the baseline's mean curve), ``best`` (per
  seed, the baseline's best loss, paired);
* **steps to target**: the first evaluation step at or below the target; **data to target**: the unique
  training tokens consumed by then (``seen_tokens``; a unit read twice counts once);
* **reduction** of a strategy vs a baseline under a definition = ``1 - mean(strategy's steps to target) /
  mean(baseline's steps to its own target)`` over the seeds (positive = fewer; the study reports about 20%
  for ``lmloss`` vs ``full-random``); **data reduction** likewise. In the metrics only when every seed of both
  reached the target; the report card judges them per seed (``tinyhelen.report.claims``);
* **typed result**: ``build`` returns ``Exp3Result`` (every run, every (baseline, definition, strategy, seed)
  reach, the budget, the proxy's size); its ``metrics()`` are the DVC metrics ``reports/exp3.json`` (the
  primary definition), per-seed figures and the other definitions stay in the result;
* **spread**: sample standard deviation over seeds (``std``) and the range ``[min, max]``.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, ClassVar, Literal

from tinyhelen.exp3 import targets as T
from tinyhelen.io import atomic_path
from tinyhelen.results import Result, Schema, mean_or_none, rounded


class Exp3Run(Schema):
    """One (strategy, seed) run: losses at the end (overall and per validation genre), the best loss, the share
    of units in the pool at the end, expansions, and ``data_at_end``: the unique training tokens it consumed
    over its whole budget."""

    strategy: str
    seed: int
    final_val_loss: float
    best_val_loss: float
    final_val_loss_by_genre: dict[str, float] = {}
    pool_fraction: float
    expansions: int
    data_at_end: int | None = None


class Exp3Reach(Schema):
    """A run against a baseline's target under a definition: ``target`` (a loss; for ``glue_last`` a score),
    ``steps_to_target`` (None: not within the budget), ``data_to_target`` (unique training tokens consumed by
    then), ``pool_tokens_at_target`` (the pool's size then: what it could have read)."""

    baseline: str
    definition: str
    strategy: str
    seed: int
    target: float
    steps_to_target: int | None
    data_to_target: int | None
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
    baselines: list[str]
    definitions: list[str]
    max_steps: int
    eval_every: int
    batch_size: int
    seq_len: int
    pool_units: int
    pool_tokens: int
    pool_genres: dict[str, int] = {}
    val_genres: list[str] = []
    preset: str
    non_embedding_params: int | None
    runs: list[Exp3Run]
    reach: list[Exp3Reach]
    glue: list[Exp3Glue] = []
    glue_tasks: list[str] = []
    glue_reach: list[Exp3Reach] = []

    @property
    def tokens_per_run(self) -> int:
        return self.max_steps * self.batch_size * self.seq_len

    def runs_of(self, strategy: str) -> dict[int, Exp3Run]:
        return {r.seed: r for r in self.runs if r.strategy == strategy}

    def reach_of(self, strategy: str, baseline: str, definition: str) -> dict[int, Exp3Reach]:
        rows = self.glue_reach if definition == T.GLUE_DEFINITION else self.reach
        return {r.seed: r for r in rows if (r.strategy, r.baseline, r.definition) == (strategy, baseline, definition)}

    def per_seed(self, strategy: str, baseline: str, definition: str, field: str) -> dict[int, int | None]:
        """``steps_to_target`` or ``data_to_target`` of each seed that has a target."""
        return {s: getattr(r, field) for s, r in self.reach_of(strategy, baseline, definition).items()}

    def reduction(self, strategy: str, baseline: str, definition: str, field: str) -> float | None:
        """``1 - mean(field of strategy) / mean(field of baseline)`` over the seeds both have, when every one
        of them reached its target."""
        a, b = (self.per_seed(x, baseline, definition, field) for x in (strategy, baseline))
        seeds = sorted(set(a) & set(b))
        va, vb = [a[s] for s in seeds], [b[s] for s in seeds]
        if not seeds or None in va or None in vb or not mean_or_none(vb):
            return None
        return round(1 - mean_or_none(va) / mean_or_none(vb), 4)

    def target_mean(self, baseline: str, definition: str) -> float | None:
        rows = self.reach_of(baseline, baseline, definition)
        return rounded(mean_or_none([r.target for r in rows.values()]))

    def vs(self, strategy: str, baseline: str, definition: str) -> dict[str, Any]:
        """Steps and data to the baseline's target (means over the seeds that reached it) and the reductions."""
        rows = list(self.reach_of(strategy, baseline, definition).values())
        hit = [r for r in rows if r.steps_to_target is not None]
        return {"steps_to_target": rounded(mean_or_none([r.steps_to_target for r in hit]), 2),
                "data_to_target": rounded(mean_or_none([r.data_to_target for r in hit]), 1),
                "reached": len(hit), "runs": len(rows),
                "step_reduction": self.reduction(strategy, baseline, definition, "steps_to_target"),
                "data_reduction": self.reduction(strategy, baseline, definition, "data_to_target")}

    def summary_row(self, strategy: str) -> dict[str, Any]:
        runs = list(self.runs_of(strategy).values())
        row: dict[str, Any] = {"final_val_loss": rounded(mean_or_none([r.final_val_loss for r in runs])),
                               "best_val_loss": rounded(mean_or_none([r.best_val_loss for r in runs])),
                               "pool_fraction": rounded(mean_or_none([r.pool_fraction for r in runs]))}
        for b in self.baselines:
            row[b] = {k: v for k, v in self.vs(strategy, b, T.PRIMARY).items() if k != "runs"}
        return row

    def metrics(self) -> dict[str, Any]:
        """The primary definition's figures (``final``); the other definitions are in the typed result."""
        sel = self.summary_row(self.selected)
        return {"selected": {"strategy": self.selected, "final_val_loss": sel["final_val_loss"],
                             **{b: {k: sel[b][k] for k in ("step_reduction", "data_reduction")}
                                for b in self.baselines}},
                "definition": T.PRIMARY,
                "targets": {b: {d: self.target_mean(b, d) for d in self.definitions} for b in self.baselines},
                "strategies": {s: self.summary_row(s) for s in self.strategies}}


def run_name(strategy: str, seed: int) -> str:
    """A run's name (``dvc.yaml`` spells it ``${strategy}-s${seed}``): its directory under
    ``data/curriculum/runs``, its DVCLive log, its ``exp3_glue`` scores file."""
    return f"{strategy}-s{seed}"


def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": round(statistics.fmean(xs), 5), "std": round(statistics.stdev(xs), 5) if len(xs) > 1 else 0.0,
            "min": round(min(xs), 5), "max": round(max(xs), 5)}


def build(runs: dict[tuple[str, int], dict], strategies: list[str], seeds: list[int], selected: str,
          baselines: list[str], train: Any, pool_units: int, pool_tokens: int, non_embedding_params: int | None,
          glue: tuple[list[Exp3Glue], list[str]] = ([], []), pool_genres: dict[str, int] | None = None) -> Exp3Result:
    """The typed EXP3 result (``Exp3Result``): every run's figures, every reach, the budget. ``baselines``:
    ``exp3.report.baselines`` (those among ``strategies`` are used); ``train``: the ``exp3.train`` section."""
    if selected not in strategies:
        raise ValueError(f"curriculum={selected!r} is not among exp3.strategies {strategies}")
    used = [b for b in baselines if b in strategies]
    if not used:
        raise ValueError(f"exp3.report.baselines {baselines}: none is among exp3.strategies {strategies}")
    per_run, genres = [], []
    for (s, seed), run in runs.items():
        sm, last = run["summary"], run["curve"][-1]
        by_genre = {k[len("val_loss_"):]: v for k, v in last.items() if k.startswith("val_loss_") and v is not None}
        genres = genres or list(by_genre)
        per_run.append(Exp3Run(strategy=s, seed=seed, final_val_loss=sm["final_val_loss"],
                               best_val_loss=sm["best_val_loss"], final_val_loss_by_genre=by_genre,
                               pool_fraction=sm["pool_fraction"], expansions=sm["expansions"],
                               data_at_end=int(last["seen_tokens"])))
    return Exp3Result(strategies=strategies, seeds=seeds, selected=selected, baselines=used,
                      definitions=list(T.DEFINITIONS), max_steps=train.max_steps, eval_every=train.eval_every,
                      batch_size=train.batch_size, seq_len=train.seq_len, pool_units=pool_units,
                      pool_tokens=pool_tokens, pool_genres=pool_genres or {}, val_genres=genres,
                      preset=train.model.preset, non_embedding_params=non_embedding_params, runs=per_run,
                      reach=[Exp3Reach(**r) for r in T.reach(runs, strategies, seeds, used)],
                      glue=glue[0], glue_tasks=glue[1],
                      glue_reach=[Exp3Reach(**r) for r in T.glue_reach(
                          runs, [(g.strategy, g.seed, g.step, g.mean_test_score) for g in glue[0]], strategies, used)])


def aggregate(res: Exp3Result) -> dict[str, dict[str, Any]]:
    """Per strategy: mean, std, min, max over seeds of each figure, and vs every baseline under every
    definition the steps and data to target and the reductions."""
    agg: dict[str, dict[str, Any]] = {}
    for s in res.strategies:
        rows = list(res.runs_of(s).values())
        agg[s] = {"final_val_loss": _stats([r.final_val_loss for r in rows]),
                  "best_val_loss": _stats([r.best_val_loss for r in rows]),
                  "final_val_loss_by_genre": {g: _stats([r.final_val_loss_by_genre[g] for r in rows
                                                         if g in r.final_val_loss_by_genre]) for g in res.val_genres},
                  "pool_fraction": _stats([r.pool_fraction for r in rows]),
                  "vs": {b: {d: res.vs(s, b, d) for d in [*res.definitions, T.GLUE_DEFINITION]
                             if res.reach_of(s, b, d)} for b in res.baselines}}
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


def plot_png(runs: dict[tuple[str, int], dict], strategies: list[str], target: float | None,
             path: Path | str) -> None:
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
    if target is not None:
        ax1.axhline(target, color="k", ls="--", lw=0.8, label="target (mean, primary)")
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
