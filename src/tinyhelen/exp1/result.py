"""EXP1's typed result (``Exp1Result``), built from its run files alone (``from_runs``):

* ``runs/pretrain/<arch>-<side>.tsv`` (written by ``pretrain_<side>@<arch>``): the curve of every learning rate
  of the sweep (column ``peak_lr``), per evaluation: step, tokens, unique tokens, learning rate, train and
  validation loss; the header has the model's preset and non-embedding parameters;
* ``runs/glue/<arch>-<init>.tsv`` (written by ``glue@<arch>-<init>``): a row per task x lr x seed x epoch with the
  train loss, validation score and test score of that epoch (the test split is scored after every epoch for the
  record; the reported score is the selected epoch's).

The selection rules are EXP1's own (``tinyhelen.exp1.glue_metrics``: best epoch, best learning rate, the tasks
a mean covers; ``tinyhelen.exp1.pretrain.select_lr``), so the result recomputed from the files is the one the
stages reported. The tables and the figure are rendered from the typed result (``tinyhelen.report.tables``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from tinyhelen import runfiles
from tinyhelen.exp1.glue_metrics import aggregate, mean_score, mean_tasks, select_epoch
from tinyhelen.io import InputError, atomic_path
from tinyhelen.results import Result, Schema, rounded


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
    best_val_loss: float | None = None


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
        """The tasks the means and claims cover (``glue_metrics.mean_tasks``: WNLI is shown, never averaged)."""
        return mean_tasks(self.tasks)

    def mean_score(self, arch: str, init: str) -> float | None:
        return mean_score({c.task: c.test for c in self.cells if c.arch == arch and c.init == init})[0]

    def metrics(self) -> dict[str, Any]:
        return {"glue_mean": {f"{a}-{i}": rounded(self.mean_score(a, i)) for a in self.archs for i in self.inits},
                "glue_tasks": len(self.study_tasks()),
                "pretrain_val_loss": {f"{r.arch}-{r.side}": rounded(r.val_loss) for r in self.pretrain},
                "tokens_per_run": self.tokens_per_run}


# ------------------------------------------------------------------------------------ reading the run files
def task_results(rows: Sequence[dict[str, Any]], where: Path | str) -> dict[str, dict[str, Any]]:
    """Per task (in order of appearance): ``aggregate`` of its lr x seed runs, each run scored on test at the
    epoch ``select_epoch`` picks, plus ``seeds`` (seed -> test score at the best lr)."""
    runs: dict[str, dict[tuple[float, int], list[dict[str, Any]]]] = {}
    for r in rows:
        runs.setdefault(r["task"], {}).setdefault((r["lr"], r["seed"]), []).append(r)
    out = {}
    for task, by_run in runs.items():
        picked = []
        for (lr, seed), epochs in by_run.items():
            epochs = sorted(epochs, key=lambda r: r["epoch"])
            if [r["epoch"] for r in epochs] != list(range(1, len(epochs) + 1)):
                raise InputError(where, f"{task} lr {lr:g} seed {seed}: epochs {[r['epoch'] for r in epochs]}, "
                                        "expected 1..n")
            e = select_epoch([r["val_score"] for r in epochs])
            picked.append({"lr": lr, "seed": seed, "validation": {"score": epochs[e]["val_score"]},
                           "test": {"score": epochs[e]["test_score"]}})
        agg = aggregate(picked)
        agg["seeds"] = dict(sorted((r["seed"], r["test"]["score"]) for r in picked if r["lr"] == agg["best_lr"]))
        out[task] = agg
    return out


def _lowest(vals: list[float | None]) -> int | None:
    """Index of the lowest validation loss, ties the earlier (``pretrain.KeepBest``'s rule)."""
    idx = [i for i, v in enumerate(vals) if v is not None]
    return min(idx, key=lambda i: (vals[i], i)) if idx else None


def pretrain_run(rf: runfiles.RunFile, arch: str, side: str) -> PretrainRun:
    """The selected run of a pretraining run file: the rate whose lowest validation loss is lowest
    (``pretrain.select_lr``), its last row (tokens, steps, losses) and the step of its lowest loss."""
    from tinyhelen.exp1.pretrain import select_lr

    rf.need("preset", "non_embedding_params")
    curves: dict[float, list[dict[str, Any]]] = {}
    for r in rf.rows:
        curves.setdefault(r["peak_lr"], []).append(r)
    if not curves:
        raise InputError(rf.path, "no rows")
    best = {}
    for lr, rows in curves.items():
        i = _lowest([r["val_loss"] for r in rows])
        best[lr] = (None, None) if i is None else (rows[i]["val_loss"], rows[i]["step"])
    lr = select_lr({k: v[0] for k, v in best.items()})
    rows = curves[lr]
    vals = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    return PretrainRun(arch=arch, side=side, preset=rf.meta["preset"], tokens_seen=rows[-1]["tokens"],
                       steps=rows[-1]["step"], non_embedding_params=rf.meta["non_embedding_params"],
                       train_loss=rows[-1]["train_loss"], val_loss=vals[-1] if vals else None, lr=lr,
                       lr_sweep={f"{k:g}": v[0] for k, v in best.items()}, best_step=best[lr][1],
                       best_val_loss=best[lr][0])


# ------------------------------------------------------------------------------------ the typed result
@runfiles.built_from
def from_runs(runs: Path | str, params: Path | str) -> Exp1Result:
    """EXP1's typed result from the run files under ``runs`` and the params in ``params`` (which archs, sides
    and initialisations; the preset; the token budget every pretraining run must have seen)."""
    from tinyhelen.config import load_section
    from tinyhelen.exp1.config import Exp1Config, ModelsConfig
    from tinyhelen.exp1.pretrain import PretrainConfig

    exp1 = load_section("exp1", Exp1Config, params)
    preset = load_section("models", ModelsConfig, params).preset
    tokens = load_section("pretrain", PretrainConfig, params).tokens_per_run
    pre = []
    for arch in exp1.archs:
        for side in exp1.sides:
            rf = runfiles.read_kind(runs, "pretrain", arch=arch, side=side)
            run = pretrain_run(rf, arch, side)
            if run.tokens_seen != tokens:
                raise InputError(rf.path, f"saw {run.tokens_seen} tokens, expected {tokens} (every run must have "
                                          "the same token budget)")
            pre.append(run)
    cells, tasks = [], []
    for arch in exp1.archs:
        for init in exp1.inits:
            rf = runfiles.read_kind(runs, "glue", arch=arch, init=init)
            for task, r in task_results(rf.rows, rf.path).items():
                tasks += [task] if task not in tasks else []
                cells.append(GlueCell(arch=arch, init=init, task=task, test=r["test_score"], std=r["test_std"],
                                      best_lr=r["best_lr"], seeds=r["seeds"]))
    return Exp1Result(preset=preset, archs=exp1.archs, inits=exp1.inits, tasks=tasks, tokens_per_run=tokens,
                      cells=cells, pretrain=pre)


# ------------------------------------------------------------------------------------ plots
def plot_rows(e1: Exp1Result) -> list[dict[str, Any]]:
    """One row per arch x init: the mean test score over the study's tasks (DVC bar plot data)."""
    return [{"model": f"{a}-{i}", "arch": a, "init": i,
             "test_score": None if (m := e1.mean_score(a, i)) is None else round(100 * m, 3)}
            for a in e1.archs for i in e1.inits]


def plot_png(e1: Exp1Result, path: Path | str) -> None:
    """Grouped bar chart: mean Leaner-GLUE test score per arch, one bar per initialisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(e1.inits)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(e1.archs), 3.6))
    for i, init in enumerate(e1.inits):
        vals = [100 * (e1.mean_score(a, init) or 0.0) for a in e1.archs]
        ax.bar([x + (i - (len(e1.inits) - 1) / 2) * width for x in range(len(e1.archs))], vals, width, label=init)
    ax.set_xticks(range(len(e1.archs)), e1.archs)
    ax.set_ylabel(f"mean test score (x100, {len(e1.study_tasks())} tasks)")
    ax.set_title("EXP1: Leaner-GLUE after pretraining on leaner / ori / nothing")
    ax.legend(title="pretrained on", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def curve_rows(e1: Exp1Result, runs: Path | str) -> list[dict[str, Any]]:
    """The validation-loss curve of every pretraining run at its selected learning rate, from the run files
    (``runs/pretrain/<arch>-<side>.tsv``): one row per (run, evaluation) with tokens seen and the loss (DVC
    linear plot data; the typed result keeps only the curve's summary)."""
    out = []
    for r in e1.pretrain:
        rf = runfiles.read_kind(runs, "pretrain", arch=r.arch, side=r.side)
        out += [{"run": f"{r.arch}-{r.side}", "arch": r.arch, "side": r.side, "tokens": row["tokens"],
                 "step": row["step"], "val_loss": row["val_loss"]}
                for row in rf.rows if row["peak_lr"] == r.lr and row["val_loss"] is not None]
    return out


def curves_png(e1: Exp1Result, rows: list[dict[str, Any]], path: Path | str) -> None:
    """Validation loss against tokens seen, one line per pretraining run (colour: architecture; line:
    corpus side): did each model learn more than token frequencies, and is it still falling at the end?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    styles = ["-", "--", ":", "-."]
    sides = list(dict.fromkeys(r.side for r in e1.pretrain))
    for i, arch in enumerate(e1.archs):
        for j, side in enumerate(sides):
            pts = [(x["tokens"], x["val_loss"]) for x in rows if x["arch"] == arch and x["side"] == side]
            if pts:
                ax.plot(*zip(*pts), styles[j % len(styles)], color=f"C{i}", label=f"{arch}-{side}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"EXP1 pretraining curves ({e1.tokens_per_run:,} tokens per run, selected lr)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_curves(e1: Exp1Result, runs: Path | str, tsv: Path | str, png: Path | str) -> None:
    """The pretraining curves as DVC plot data and a figure."""
    from tinyhelen.io import write_tsv

    rows = curve_rows(e1, runs)
    write_tsv(tsv, rows, ["run", "arch", "side", "tokens", "step", "val_loss"])
    curves_png(e1, rows, png)


def write_plots(e1: Exp1Result, tsv: Path | str, png: Path | str) -> None:
    """The DVC plot data (``plot_rows``) and the figure."""
    from tinyhelen.io import write_tsv

    rows = plot_rows(e1)
    write_tsv(tsv, rows, list(rows[0]))
    plot_png(e1, png)
