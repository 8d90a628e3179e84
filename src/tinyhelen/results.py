"""Typed results of the experiments: the declared schema each report step writes and the report card reads.

Each experiment's report stage (``entropy``, ``exp1_report``, ``exp2_report``, ``exp3_report``) builds one
result model below, which validates it, and ``write`` puts it in two files:

* ``reports/results/<name>.json`` (a plain DVC output): the typed result, with the per-seed, per-task and
  per-run detail the report card's intervals need;
* ``reports/<name>.json`` (DVC metrics): ``result.metrics()``, the few figures a reviewer compares across
  experiments. No wall-clock figure is in either (those go to ``tinyhelen.timing.record``).

The report card reads only these results (``read``) plus two kinds of upstream inputs, validated here too:
the data summary ``reports/prepare.json`` (``PrepareSummary``) and the LLM stages' metrics
(``LLMStageMetrics`` with their ``provenance``). A result that is absent or does not validate is reported
by ``read`` as a problem string, never raised: the report still renders.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tinyhelen.io import InputError, write_json
from tinyhelen.study import STUDY_GLUE_TASKS

RESULTS_DIR = "reports/results"
ENTROPY_KEY = re.compile(r"^(word|bpe)_[Hh]\d+(_mm)?$")


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(Schema):
    """Base of the typed experiment results: ``name`` fixes both file paths."""

    name: ClassVar[str]

    @classmethod
    def path(cls) -> str:
        return f"{RESULTS_DIR}/{cls.name}.json"

    @classmethod
    def metrics_path(cls) -> str:
        return f"reports/{cls.name}.json"

    def metrics(self) -> dict[str, Any]:  # pragma: no cover - every result defines it
        raise NotImplementedError


R = TypeVar("R", bound=BaseModel)


def _r(x: float | None, nd: int = 5) -> float | None:
    return None if x is None else round(float(x), nd)


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


# ------------------------------------------------------------------------------------ entropy
class EntropySide(Schema):
    """Pooled figures of one corpus side in one setting. ``entropy`` holds ``word_H<n>``, ``bpe_H<n>``
    (plug-in entropy of n-grams, bits), ``word_h<n>``/``bpe_h<n>`` (conditional, bits per token) and the
    bias-corrected ``..._mm`` variants when the entropy stage computes them."""

    tokens: int
    vocab: int
    ttr: float
    top_k_coverage: float
    mean_sentence_len: float
    bpe_tokens: int | None = None
    entropy: dict[str, float]

    @field_validator("entropy")
    @classmethod
    def _keys(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if not ENTROPY_KEY.match(k)]
        if bad:
            raise ValueError(f"unknown entropy figures {bad}; expected (word|bpe)_(H|h)<n>[_mm]")
        return v

    def H(self, unit: str, n: int, corrected: bool = False, conditional: bool = False) -> float | None:
        return self.entropy.get(f"{unit}_{'h' if conditional else 'H'}{n}{'_mm' if corrected else ''}")


class EntropySetting(Schema):
    leaner: EntropySide
    ori: EntropySide


class EntropyResult(Result):
    name: ClassVar[str] = "entropy"
    kind: Literal["entropy"] = "entropy"
    max_n: int
    top_k: int
    pooled_genres: list[str]
    dropped_genres: dict[str, str] = {}  # genre -> why it is not in the pooled figures
    settings: dict[Literal["paired", "equal_budget"], EntropySetting]

    def orders(self) -> list[int]:
        return list(range(1, self.max_n + 1))

    def corrected(self, setting: str) -> bool:
        """True when the bias-corrected entropies are present for both sides of ``setting``."""
        s = self.settings[setting]
        return all(side.H("word", 1, corrected=True) is not None for side in (s.leaner, s.ori))

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for setting, sides in self.settings.items():
            out[setting] = {}
            for side in ("leaner", "ori"):
                st: EntropySide = getattr(sides, side)
                out[setting][side] = {"tokens": st.tokens, "vocab": st.vocab, "ttr": st.ttr,
                                      f"top{self.top_k}_coverage": st.top_k_coverage,
                                      "mean_sentence_len": st.mean_sentence_len, "bpe_tokens": st.bpe_tokens,
                                      **{k: v for k, v in st.entropy.items() if "_H" in k}}
        return out

    @classmethod
    def from_stage(cls, res: dict[str, Any], max_n: int, top_k: int, pooled_genres: list[str],
                   dropped_genres: dict[str, str] | None = None) -> EntropyResult:
        """From ``tinyhelen.entropy.run``'s result: ``{setting: {"pooled": {side: figures}}}``."""
        settings = {}
        for setting, scopes in res.items():
            pooled = scopes.get("pooled")
            if pooled is None:
                continue
            settings[setting] = {side: {
                "tokens": st["tokens"], "vocab": st["vocab"], "ttr": st["ttr"],
                "top_k_coverage": st[f"top{top_k}_coverage"], "mean_sentence_len": st["mean_sentence_len"],
                "bpe_tokens": st.get("bpe_tokens"),
                "entropy": {k: v for k, v in st.items() if ENTROPY_KEY.match(k)}} for side, st in pooled.items()}
        return cls(max_n=max_n, top_k=top_k, pooled_genres=list(pooled_genres),
                   dropped_genres=dict(dropped_genres or {}), settings=settings)


# ------------------------------------------------------------------------------------ EXP1
class GlueCell(Schema):
    """One (architecture, initialisation, task): the test score at the best learning rate."""

    arch: str
    init: str  # a pretraining corpus side, or "scratch"
    task: str
    test: float  # mean over seeds
    std: float
    best_lr: float
    seeds: dict[int, float]  # fine-tuning seed -> test score at best_lr


class PretrainRun(Schema):
    arch: str
    side: str
    preset: str
    tokens_seen: int
    steps: int
    non_embedding_params: int
    train_loss: float | None
    val_loss: float | None
    lr: float | None = None  # the learning rate selected by validation loss
    lr_sweep: dict[str, float | None] | None = None  # learning rate -> its run's lowest validation loss
    best_step: int | None = None  # the step whose weights fine-tuning starts from (lowest validation loss)


class Exp1Result(Result):
    name: ClassVar[str] = "exp1"
    kind: Literal["exp1"] = "exp1"
    preset: str
    archs: list[str]
    inits: list[str]
    tasks: list[str]
    tokens_per_run: int
    cells: list[GlueCell]
    pretrain: list[PretrainRun]

    def study_tasks(self) -> list[str]:
        """The tasks the study ran (WNLI is shown but not in the means or the claims)."""
        return [t for t in self.tasks if t in STUDY_GLUE_TASKS]

    def mean_score(self, arch: str, init: str) -> float | None:
        tasks = self.study_tasks()
        return _mean([c.test for c in self.cells if c.arch == arch and c.init == init and c.task in tasks])

    def metrics(self) -> dict[str, Any]:
        return {"glue_mean": {f"{a}-{i}": _r(self.mean_score(a, i)) for a in self.archs for i in self.inits},
                "glue_tasks": len(self.study_tasks()),
                "pretrain_val_loss": {f"{r.arch}-{r.side}": _r(r.val_loss) for r in self.pretrain},
                "tokens_per_run": self.tokens_per_run}

    @classmethod
    def build(cls, glue_reports: dict[str, dict], glue_runs: dict[str, dict], pretrain_reports: dict[str, dict],
              archs: list[str], sides: list[str], tokens_per_run: int, preset: str,
              inits: list[str] | None = None) -> Exp1Result:
        """From ``reports/glue/<arch>-<init>.json`` (best lr, mean/std per task), ``reports/glue_runs/``
        (every lr x seed run) and ``reports/pretrain/<arch>-<side>.json``, all keyed by ``<arch>-<init>``."""
        inits = inits if inits is not None else [*sides, "scratch"]
        cells, tasks = [], []
        for arch in archs:
            for init in inits:
                name = f"{arch}-{init}"
                rep, runs = glue_reports.get(name), glue_runs.get(name)
                if rep is None or runs is None:
                    raise InputError(f"reports/glue/{name}.json", "GLUE report missing (run the glue stages)")
                for task, r in rep["tasks"].items():
                    tasks += [task] if task not in tasks else []
                    seeds = {int(x["seed"]): float(x["test"]["score"]) for x in runs.get(task, [])
                             if x["lr"] == r["best_lr"]}
                    cells.append(GlueCell(arch=arch, init=init, task=task, test=r["test_score"], std=r["test_std"],
                                          best_lr=r["best_lr"], seeds=dict(sorted(seeds.items()))))
        pre = []
        for arch in archs:
            for side in sides:
                p = pretrain_reports.get(f"{arch}-{side}")
                if p is None:
                    raise InputError(f"reports/pretrain/{arch}-{side}.json", "pretraining report missing")
                pre.append(PretrainRun(arch=arch, side=side, preset=p["preset"], tokens_seen=p["tokens_seen"],
                                       steps=p["steps"], non_embedding_params=p["non_embedding_params"],
                                       train_loss=p.get("train_loss"), val_loss=p.get("val_loss"), lr=p.get("lr"),
                                       lr_sweep={k: v["best_val_loss"] for k, v in p["lr_sweep"].items()}
                                       if "lr_sweep" in p else None, best_step=p.get("best_step")))
        return cls(preset=preset, archs=archs, inits=inits, tasks=tasks, tokens_per_run=tokens_per_run,
                   cells=cells, pretrain=pre)


# ------------------------------------------------------------------------------------ EXP2
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
    scores: dict[str, Estimate]


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
            out["recipes"][r.recipe] = {**row, "selected_step": r.selected_step}
        return out

    @classmethod
    def build(cls, rep: dict[str, Any], *, judge_is_llm: bool, main_metric: str, instruct_source: str,
              template: str | None, questions: int | None, tune_reports: dict[str, dict],
              non_embedding_params: int | None) -> Exp2Result:
        """From ``tinyhelen.judge.report``'s result (per recipe ``{metric: {mean, ci95, n}}``) and the
        instruction-tuning stages' reports ``reports/instruct/<recipe>.json`` (steps, tokens)."""
        recipes = []
        for name, v in rep["recipes"].items():
            pre, tune = name.split("-", 1)
            t = tune_reports.get(name, {})
            scores = {m: Estimate(mean=v[m]["mean"], lo=v[m]["ci95"][0], hi=v[m]["ci95"][1], n=v[m]["n"])
                      for m in rep["metrics"] if m in v}
            recipes.append(Exp2Recipe(recipe=name, pretrain=pre, tune=tune, selected_step=v.get("selected_step"),
                                      answers=v.get("answers"), tune_steps=t.get("steps"),
                                      tune_tokens=t.get("tokens"), scores=scores))
        return cls(judge_backend=rep["backend"], judge_is_llm=judge_is_llm, main_metric=main_metric,
                   higher_is_better=rep["higher_is_better"], instruct_source=instruct_source, template=template,
                   questions=questions, non_embedding_params=non_embedding_params, recipes=recipes)


# ------------------------------------------------------------------------------------ EXP3
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
        if not va or not vb or None in va or None in vb or not _mean(vb):
            return None
        return round(1 - _mean(va) / _mean(vb), 4)

    def summary_row(self, strategy: str) -> dict[str, Any]:
        runs = list(self.runs_of(strategy).values())
        reached = [r for r in runs if r.steps_to_target is not None]
        return {"final_val_loss": _r(_mean([r.final_val_loss for r in runs])),
                "steps_to_target": _r(_mean([r.steps_to_target for r in reached])),
                "reached": len(reached), "runs": len(runs),
                "step_reduction": self.reduction(strategy, "steps_to_target"),
                "data_reduction": self.reduction(strategy, "data_to_target"),
                "pool_fraction": _r(_mean([r.pool_fraction for r in runs]))}

    def metrics(self) -> dict[str, Any]:
        return {"selected": {"strategy": self.selected, **self.summary_row(self.selected)},
                "target_loss": self.target_loss,
                "strategies": {s: {k: v for k, v in self.summary_row(s).items() if k not in ("runs",)}
                               for s in self.strategies}}


# ------------------------------------------------------------------------------------ upstream inputs
class PrepareSummary(BaseModel):
    """``reports/prepare.json`` (the ``prepare`` stage's metrics): the fields the report card reads."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: str
    checksums_verified: int
    paired: int | None = None

    @property
    def verified(self) -> bool:
        return self.checksums_verified > 0


class LLMProvenance(BaseModel):
    """Which LLM produced a stage's outputs. ``pipeline_check``: the model is below the size at which its
    outputs count as results (a small local model run to check the pipeline)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str | None = None
    model: str | None = None
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    templates: Any = None
    decoding: Any = None
    pipeline_check: bool = False


class LLMStageMetrics(BaseModel):
    """The metrics of an LLM stage (simplify, leaner_glue, leaner_eval, judge): backend and provenance."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str | None = None
    provenance: LLMProvenance | None = None

    @property
    def pipeline_check(self) -> bool:
        return bool(self.provenance and self.provenance.pipeline_check)


# ------------------------------------------------------------------------------------ files
def write(result: Result, root: Path | str = ".") -> None:
    """Write the typed result and its metrics (both atomically)."""
    root = Path(root)
    write_json(root / result.path(), result.model_dump(mode="json"))
    write_json(root / result.metrics_path(), result.metrics())


def read(model: type[R], path: Path | str, name: str | None = None) -> tuple[R | None, str | None]:
    """``(result, None)``, or ``(None, problem)`` when the file is absent, malformed or off-schema; the
    problem names the file (as ``name``, default the path) and, for JSON errors, the line."""
    path = Path(path)
    name = name or str(path)
    if not path.exists():
        return None, f"{name} absent"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return None, f"{name}:{exc.lineno}: malformed JSON ({exc.msg})"
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return None, f"{name}: not a valid {model.__name__}: {where}: {first['msg']}{more}"
