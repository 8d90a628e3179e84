"""EXP2's typed result (``Exp2Result``), built from its run files alone (``from_runs``):

* ``runs/exp2/inner.tsv`` (written by ``judge_inner``): every checkpoint's judged answers to the 31
  inner-comparison questions; the checkpoint selection is recomputed from it (``judge.select_checkpoints``);
* ``runs/exp2/answers.tsv`` (written by ``judge``): the selected checkpoints' judged Leaner-Eval answers and
  their answers to held-out prompts of their tuning data; per recipe the mean of every metric (the backend's and
  the answer statistics) with its bootstrap interval (``summarise``), per similarity bin;
* ``runs/instruct/<recipe>.tsv`` (written by ``instruct_tune``): each recipe's tuning curve (steps, tokens);
* ``runs/pretrain/llama-leaner.tsv``: the size of the pretrained LLaMA the recipes start from.

The tables and the figure are rendered from the typed result (``tinyhelen.report.tables``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from tinyhelen import runfiles
from tinyhelen.exp2.judge import BACKENDS, HIGHER_IS_BETTER, METRIC_LABELS, estimate, reported_metrics, select_checkpoints
from tinyhelen.io import InputError, atomic_path
from tinyhelen.results import Result, Schema


class Estimate(Schema):
    """A mean over answers with its bootstrap interval (``lo``, ``hi``; None when not computable)."""

    mean: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None


class CurvePoint(Estimate):
    """One checkpoint of the selection curve: the selection metric's estimate and the unscored share."""

    step: int
    unscored_share: float


class Exp2Recipe(Schema):
    recipe: str
    pretrain: str
    tune: str
    selected_step: int | None
    no_signal: str | None = None  # why no checkpoint was selected (every checkpoint's answers unscored)
    answers: int | None
    tune_steps: int | None
    tune_tokens: int | None
    scores: dict[str, Estimate] = Field(description="Leaner-Eval: the judge backend's metrics and the answer "
                                                    "statistics (judge.ANSWER_STATS) whatever the backend")
    by_bin: dict[str, Estimate] = {}  # similarity bin -> the main metric
    curve: list[CurvePoint] = []  # the checkpoint-selection curve (selection metric)
    heldout: dict[str, Estimate] = Field(default_factory=dict, description="the same figures on held-out prompts "
                                         "of the recipe's tuning data (empty: none answered)")
    heldout_answers: int | None = None


class Exp2Result(Result):
    name: ClassVar[str] = "exp2"
    kind: Literal["exp2"] = "exp2"
    judge_backend: str
    judge_is_llm: bool = Field(description="the scores are LLM judgements (else proxy metrics)")
    main_metric: str
    selection_metric: str | None = None
    higher_is_better: dict[str, bool]
    instruct_source: str
    template: str | None
    questions: int | None  # None: all
    interval_level: float = 0.95
    non_embedding_params: int | None = Field(None, description="the pretrained LLaMA the recipes start from")
    recipes: list[Exp2Recipe]

    def recipe(self, name: str) -> Exp2Recipe | None:
        return next((r for r in self.recipes if r.recipe == name), None)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"judge_backend": self.judge_backend, "judge_is_llm": self.judge_is_llm,
                               "main_metric": self.main_metric, "recipes": {}}
        for r in self.recipes:
            row: dict[str, Any] = {m: e.mean for m, e in r.scores.items()}
            main = r.scores.get(self.main_metric)
            if main is not None:
                row[f"{self.main_metric}_lo"], row[f"{self.main_metric}_hi"] = main.lo, main.hi
            if r.heldout:
                row["heldout"] = {m: e.mean for m, e in r.heldout.items()}
            out["recipes"][r.recipe] = {**row, "selected_step": r.selected_step}
        return out

    @classmethod
    def build(cls, rep: dict[str, Any], *, judge_is_llm: bool, main_metric: str, instruct_source: str,
              template: str | None, questions: int | None, tune_reports: dict[str, dict],
              non_embedding_params: int | None) -> Exp2Result:
        """From ``summarise``'s result (per recipe ``{metric: {mean, ci95, n}}``, by bin, the selection curve)
        and each recipe's tuning figures (``{"steps", "tokens"}``)."""
        est = lambda v: Estimate(mean=v["mean"], lo=v["ci95"][0], hi=v["ci95"][1], n=v["n"])  # noqa: E731
        recipes = []
        for name, v in rep["recipes"].items():
            pre, tune = name.split("-", 1)
            t = tune_reports.get(name, {})
            held = rep.get("heldout", {}).get(name, {})
            recipes.append(Exp2Recipe(
                recipe=name, pretrain=pre, tune=tune, selected_step=v.get("selected_step"),
                no_signal=rep.get("no_signal", {}).get(name), answers=v.get("answers"), tune_steps=t.get("steps"),
                tune_tokens=t.get("tokens"), scores={m: est(v[m]) for m in rep["metrics"] if m in v},
                heldout={m: est(held[m]) for m in rep["metrics"] if m in held}, heldout_answers=held.get("answers"),
                by_bin={b: est(x[main_metric]) for b, x in rep.get("by_bin", {}).get(name, {}).items()},
                curve=[CurvePoint(step=c["step"], unscored_share=c["unscored_share"], **est(c).model_dump())
                       for c in rep.get("checkpoint_curve", {}).get(name, [])]))
        return cls(judge_backend=rep["backend"], judge_is_llm=judge_is_llm, main_metric=main_metric,
                   selection_metric=rep.get("selection_metric"), higher_is_better=rep["higher_is_better"],
                   instruct_source=instruct_source, template=template, questions=questions,
                   non_embedding_params=non_embedding_params, recipes=recipes)


def summarise(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
              selection: dict[str, Any]) -> dict[str, Any]:
    """Per recipe / per bin estimates (bootstrap CIs) of the Leaner-Eval answers and per recipe those of the
    held-out prompts (set ``heldout``, when answered), with the checkpoint selection (``select_checkpoints``) they
    came from; the metrics are the backend's and the answer statistics (``judge.reported_metrics``). Every
    recipe's answers must come from its selected checkpoint; a recipe without a selected step (no signal) has no
    answers."""
    metrics = reported_metrics(backend)
    if selection.get("backend") != backend:
        raise InputError("checkpoint selection", f"judged by backend {selection.get('backend')!r}, the Leaner-Eval "
                                                 f"answers by {backend!r}: rerun judge_inner")
    main = [s for s in scores if s["set"] == "all"]
    out: dict[str, Any] = {"backend": backend, "metrics": list(metrics), "recipes": {}, "by_bin": {}, "heldout": {},
                           "checkpoint_curve": selection["checkpoint_curve"],
                           "selection_metric": selection["selection_metric"],
                           "no_signal": selection.get("no_signal", {}),
                           "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in metrics}}
    bins = sorted({s["bin"] for s in main if s.get("bin")})
    for rec in recipes:
        rows = [s for s in main if s["recipe"] == rec]
        held = [s for s in scores if s["set"] == "heldout" and s["recipe"] == rec]
        chosen = selection["selected"].get(rec)
        steps = sorted({s["step"] for s in rows + held})
        if steps and steps != [chosen]:
            raise InputError(f"Leaner-Eval answers of {rec}", f"come from step(s) {steps}, but step {chosen} was "
                                                              "selected: rerun generate")
        out["recipes"][rec] = {m: estimate([s[m] for s in rows if s.get(m) is not None], n_boot, seed)
                               for m in metrics}
        out["recipes"][rec]["answers"] = len(rows)
        out["recipes"][rec]["selected_step"] = chosen
        out["by_bin"][rec] = {b: {m: estimate([s[m] for s in rows if s.get("bin") == b and s.get(m) is not None],
                                           n_boot, seed) for m in metrics} for b in bins}
        if held:
            out["heldout"][rec] = {m: estimate([s[m] for s in held if s.get(m) is not None], n_boot, seed)
                                   for m in metrics} | {"answers": len(held)}
    return out


# ------------------------------------------------------------------------------------ run files
def read_scores(runs: Path | str, kind: str) -> tuple[list[dict[str, Any]], str]:
    rf = runfiles.read_kind(runs, kind)
    rf.need("backend")
    if rf.meta["backend"] not in BACKENDS:
        raise InputError(rf.path, f"judge backend {rf.meta['backend']!r} is not registered")
    return rf.rows, rf.meta["backend"]


@runfiles.built_from
def from_runs(runs: Path | str, params: Path | str) -> Exp2Result:
    """EXP2's typed result from the run files under ``runs`` and the params in ``params`` (recipes, bootstrap
    resamples and seed, selection rule, instruction source and template, questions answered)."""
    from tinyhelen.config import load_section, load_seed
    from tinyhelen.exp2.config import Exp2Config, InstructConfig
    from tinyhelen.exp2.generate import GenerateConfig
    from tinyhelen.exp2.instruct_data import TEMPLATES

    cfg = load_section("exp2", Exp2Config, params)
    icfg = load_section("instruct", InstructConfig, params)
    questions = load_section("generate", GenerateConfig, params).max_questions
    seed = load_seed(params)
    inner, backend = read_scores(runs, "exp2_inner")
    answers, answered_by = read_scores(runs, "exp2_answers")
    if answered_by != backend:
        raise InputError(runfiles.path(runs, "exp2_answers"), f"judged by {answered_by!r}, the inner comparison by "
                                                              f"{backend!r}: rerun judge_inner and judge")
    selection = select_checkpoints(inner, backend, cfg.recipes, cfg.n_boot, seed, cfg.selection_metric,
                                   cfg.max_unscored_share)
    rep = summarise(answers, backend, cfg.recipes, cfg.n_boot, seed, selection)
    tune = {}
    for r in cfg.recipes:
        rows = runfiles.read_kind(runs, "instruct", recipe=r).rows
        tune[r] = {"steps": rows[-1]["step"], "tokens": rows[-1]["tokens"]} if rows else {}
    llama = runfiles.path(runs, "pretrain", arch="llama", side="leaner")
    size = runfiles.read(llama, "pretrain").meta.get("non_embedding_params") if llama.exists() else None
    b = BACKENDS[backend]
    return Exp2Result.build(rep, judge_is_llm=b.is_llm, main_metric=b.main_metric, instruct_source=icfg.source,
                            template=TEMPLATES[icfg.template], questions=questions, tune_reports=tune,
                            non_embedding_params=size)


# ------------------------------------------------------------------------------------ plots
def curve_rows(e2: Exp2Result) -> list[dict[str, Any]]:
    """DVC plot rows: step x recipe (the selection metric)."""
    steps = sorted({c.step for r in e2.recipes for c in r.curve})
    return [{"step": s, **{r.recipe: next((c.mean for c in r.curve if c.step == s), None) for r in e2.recipes}}
            for s in steps]


def recipe_rows(e2: Exp2Result) -> list[dict[str, Any]]:
    """DVC plot rows: one per (recipe, bin) with the main metric (bin 'all' = every question)."""
    rows = []
    for r in e2.recipes:
        for b, e in (("all", r.scores.get(e2.main_metric)), *r.by_bin.items()):
            if e is not None:
                rows.append({"recipe": r.recipe, "bin": b, "metric": e2.main_metric, "mean": e.mean, "lo": e.lo,
                             "hi": e.hi})
    return rows


def plot_png(e2: Exp2Result, path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = e2.main_metric
    names = [r.recipe for r in e2.recipes]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ests = [r.scores.get(main) or Estimate(mean=None) for r in e2.recipes]
    means = [e.mean or 0 for e in ests]
    err = [[m - (e.lo if e.lo is not None else m) for e, m in zip(ests, means)],
           [(e.hi if e.hi is not None else m) - m for e, m in zip(ests, means)]]
    ax.bar(names, means, yerr=err, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][:len(names)])
    ax.set_title(METRIC_LABELS.get(main, main), fontsize=9)
    ax.set_xlabel("recipe (pretrain-tune)")
    ax = axes[1]
    bins = sorted({b for r in e2.recipes for b in r.by_bin})
    w = 0.8 / max(1, len(names))
    for i, r in enumerate(e2.recipes):
        ax.bar([j + i * w for j in range(len(bins))], [(r.by_bin[b].mean if b in r.by_bin else 0) or 0 for b in bins],
               width=w, label=r.recipe)
    ax.set_xticks([j + w * (len(names) - 1) / 2 for j in range(len(bins))], [f"split-{b}" for b in bins])
    ax.set_title(f"by similarity bin: {main}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    for r in e2.recipes:
        ax.plot([c.step for c in r.curve], [c.mean for c in r.curve], marker="o", label=r.recipe)
    ax.set_title(f"checkpoint selection (inner comparison): {e2.selection_metric}", fontsize=9)
    ax.set_xlabel("instruction-tuning step")
    ax.legend(fontsize=7)
    fig.suptitle("EXP2 - LLM judge" if e2.judge_is_llm else "EXP2 - PROXY METRICS (offline, not LLM-judge scores)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
