"""EXP2's report: the per-recipe and per-bin tables of the judged Leaner-Eval answers (``summarise``), the typed
result (``Exp2Result``: per recipe every metric with its interval, the tuning steps and tokens), the Markdown,
the plot rows and the figure."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from tinyhelen.exp2.judge import BACKENDS, HIGHER_IS_BETTER, METRIC_LABELS, estimate, reported_metrics
from tinyhelen.exp2.llm_judge import CRITERIA
from tinyhelen.io import InputError
from tinyhelen.results import Result, Schema


class Estimate(Schema):
    """A mean over answers with its bootstrap interval (``lo``, ``hi``; None when not computable)."""

    mean: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None


class Exp2Recipe(Schema):
    recipe: str
    pretrain: str
    tune: str
    selected_step: int | None
    answers: int | None
    tune_steps: int | None
    tune_tokens: int | None
    scores: dict[str, Estimate] = Field(description="Leaner-Eval: the judge backend's metrics and the answer "
                                                    "statistics (judge.ANSWER_STATS) whatever the backend")
    heldout: dict[str, Estimate] = Field(default_factory=dict, description="the same figures on held-out prompts "
                                         "of the recipe's tuning data (empty: none answered)")
    heldout_answers: int | None = None


class Exp2Result(Result):
    name: ClassVar[str] = "exp2"
    kind: Literal["exp2"] = "exp2"
    judge_backend: str
    judge_is_llm: bool = Field(description="the scores are LLM judgements (else proxy metrics)")
    main_metric: str
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
        """From ``summarise``'s result (per recipe ``{metric: {mean, ci95, n}}``) and the
        instruction-tuning stages' reports ``reports/instruct/<recipe>.json`` (steps, tokens)."""
        recipes = []
        for name, v in rep["recipes"].items():
            pre, tune = name.split("-", 1)
            t = tune_reports.get(name, {})
            held = rep.get("heldout", {}).get(name, {})
            recipes.append(Exp2Recipe(recipe=name, pretrain=pre, tune=tune, selected_step=v.get("selected_step"),
                                      answers=v.get("answers"), tune_steps=t.get("steps"),
                                      tune_tokens=t.get("tokens"), scores=_estimates(v, rep["metrics"]),
                                      heldout=_estimates(held, rep["metrics"]), heldout_answers=held.get("answers")))
        return cls(judge_backend=rep["backend"], judge_is_llm=judge_is_llm, main_metric=main_metric,
                   higher_is_better=rep["higher_is_better"], instruct_source=instruct_source, template=template,
                   questions=questions, non_embedding_params=non_embedding_params, recipes=recipes)


def _estimates(v: dict[str, Any], metrics: Sequence[str]) -> dict[str, Estimate]:
    return {m: Estimate(mean=v[m]["mean"], lo=v[m]["ci95"][0], hi=v[m]["ci95"][1], n=v[m]["n"])
            for m in metrics if m in v}


def summarise(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
           selection: dict[str, Any]) -> dict[str, Any]:
    """Per recipe / per bin tables (bootstrap CIs) of the Leaner-Eval answers and per recipe the held-out
    prompts' (set ``heldout``, when answered), with the checkpoint selection (``select_checkpoints``) they
    came from; the metrics are the backend's and the answer statistics (``judge.reported_metrics``). Every
    recipe's answers must come from its selected checkpoint."""
    metrics = reported_metrics(backend)
    if selection.get("backend") != backend:
        raise InputError("checkpoint selection", f"judged by backend {selection.get('backend')!r}, the Leaner-Eval "
                                                 f"answers by {backend!r}: rerun judge_inner")
    main = [s for s in scores if s["set"] == "all"]
    out: dict[str, Any] = {"backend": backend, "metrics": list(metrics), "recipes": {}, "by_bin": {}, "heldout": {},
                           "checkpoint_curve": selection["checkpoint_curve"],
                           "selection_metric": selection["selection_metric"],
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


def _fmt(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.3g} [{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]"


def markdown(rep: dict[str, Any], provenance: dict[str, Any]) -> str:
    backend = rep["backend"]
    metrics = rep["metrics"]
    lines = ["# EXP2: instruction tuning with four data recipes", ""]
    if not BACKENDS[backend].is_llm:
        lines += ["> **Proxy metrics, not LLM-judge scores.** Judged offline (`judge.backend: proxy`): the "
                  "columns are automatic proxies (see docs/exp2.md), not the study's grammar/coherence/"
                  "specificity scores. Run with `judge.backend=llm` for the LLM-judged table.", ""]
    else:
        lines += [f"Judge: LLM `{provenance.get('judge_model')}` (temperature 0), grammar/coherence/"
                  "specificity 0-5 each, sum 0-15 (mean over the presentation orders).", ""]
    lines += [f"- Instruction data source: `{provenance.get('instruct_source')}`",
              f"- Recipe = `<pretraining corpus>-<instruction-tuning corpus>`; 95% bootstrap intervals "
              f"({provenance.get('n_boot')} resamples of the questions)",
              f"- Questions answered: {provenance.get('questions')}; decoding: {provenance.get('decoding')}", ""]
    lines += ["## Per recipe (Leaner-Eval)", "", "| recipe | " + " | ".join(METRIC_LABELS[m] for m in metrics)
              + " | selected step |", "|---" * (len(metrics) + 2) + "|"]
    for rec, v in rep["recipes"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[m]) for m in metrics) + f" | {v.get('selected_step')} |")
    if rep.get("heldout"):
        lines += ["", "## Per recipe: held-out prompts of its tuning data (not the study's)", "",
                  "The selected checkpoint answers prompts of the validation split of the instruction data it was "
                  "tuned on (never trained on), judged like Leaner-Eval.", "",
                  "| recipe | answers | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
                  "|---" * (len(metrics) + 2) + "|"]
        for rec, v in rep["heldout"].items():
            lines.append(f"| {rec} | {v['answers']} | " + " | ".join(_fmt(v[m]) for m in metrics) + " |")
    main = BACKENDS[backend].main_metric
    lines += ["", f"## Per similarity bin: {METRIC_LABELS[main]}", ""]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    lines += ["| recipe | " + " | ".join(f"split-{b}" for b in bins) + " |", "|---" * (len(bins) + 1) + "|"]
    for rec, v in rep["by_bin"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[b][main]) for b in bins) + " |")
    sel = rep["selection_metric"]
    lines += ["", f"## Checkpoint selection (31 inner-comparison questions): {METRIC_LABELS[sel]}", ""]
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    lines += ["| recipe | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for rec, cs in rep["checkpoint_curve"].items():
        by = {c["step"]: c for c in cs}
        lines.append(f"| {rec} | " + " | ".join(
            (_fmt(by[s]) + (f" ({by[s]['unscored_share']:.0%} unscored)" if by[s].get("unscored_share") else ""))
            if s in by else "" for s in steps) + " |")
    if provenance.get("agreement"):
        ag = provenance["agreement"]
        lines += ["", "## Position bias (same answers, two presentation orders)", "",
                  f"Answers judged in both orders: {ag['answers']}. Position means (sum 0-15): "
                  f"{provenance.get('position_means')}", "",
                  "| criterion | exact agreement | within 1 | mean abs diff | Pearson r |", "|---|---|---|---|---|"]
        for c in (*CRITERIA, "total"):
            a = ag.get(c)
            if a:
                lines.append(f"| {c} | {a['exact']} | {a['within_1']} | {a['mean_abs_diff']} | {a['pearson']} |")
    return "\n".join(lines) + "\n"


def curve_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: step x recipe (selection metric)."""
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    rows = []
    for s in steps:
        row: dict[str, Any] = {"step": s}
        for rec, cs in rep["checkpoint_curve"].items():
            row[rec] = next((c["mean"] for c in cs if c["step"] == s), None)
        rows.append(row)
    return rows


def recipe_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: one per (recipe, bin) with the main metric (bin 'all' = every question)."""
    main = BACKENDS[rep["backend"]].main_metric
    rows = []
    for rec, v in rep["recipes"].items():
        rows.append({"recipe": rec, "bin": "all", "metric": main, "mean": v[main]["mean"],
                     "lo": v[main]["ci95"][0], "hi": v[main]["ci95"][1]})
        for b, bv in rep["by_bin"][rec].items():
            rows.append({"recipe": rec, "bin": b, "metric": main, "mean": bv[main]["mean"],
                         "lo": bv[main]["ci95"][0], "hi": bv[main]["ci95"][1]})
    return rows


def plot_png(rep: dict[str, Any], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    main = BACKENDS[rep["backend"]].main_metric
    recipes = list(rep["recipes"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    means = [rep["recipes"][r][main]["mean"] or 0 for r in recipes]
    err = [[m - (rep["recipes"][r][main]["ci95"][0] or m) for r, m in zip(recipes, means)],
           [(rep["recipes"][r][main]["ci95"][1] or m) - m for r, m in zip(recipes, means)]]
    ax.bar(recipes, means, yerr=err, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][:len(recipes)])
    ax.set_title(METRIC_LABELS[main], fontsize=9)
    ax.set_xlabel("recipe (pretrain-tune)")
    ax = axes[1]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    w = 0.8 / max(1, len(recipes))
    for i, r in enumerate(recipes):
        ax.bar([j + i * w for j in range(len(bins))],
               [rep["by_bin"][r][b][main]["mean"] or 0 for b in bins], width=w, label=r)
    ax.set_xticks([j + w * (len(recipes) - 1) / 2 for j in range(len(bins))], [f"split-{b}" for b in bins])
    ax.set_title(f"by similarity bin: {main}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    sel = rep["selection_metric"]
    for r, cs in rep["checkpoint_curve"].items():
        ax.plot([c["step"] for c in cs], [c["mean"] for c in cs], marker="o", label=r)
    ax.set_title(f"checkpoint selection (inner comparison): {sel}", fontsize=9)
    ax.set_xlabel("instruction-tuning step")
    ax.legend(fontsize=7)
    if not BACKENDS[rep["backend"]].is_llm:
        fig.suptitle("EXP2 - PROXY METRICS (offline, not LLM-judge scores)", fontsize=10)
    else:
        fig.suptitle("EXP2 - LLM judge", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
