"""EXP1's report: the table arch x initialisation x task from the GLUE stage reports (``exp1_table``), its
Markdown, plot rows and figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from tinyhelen.io import InputError
from tinyhelen.results import Result, Schema, mean_or_none, rounded
from tinyhelen.study import STUDY_GLUE_TASKS



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
        return mean_or_none([c.test for c in self.cells if c.arch == arch and c.init == init and c.task in tasks])

    def metrics(self) -> dict[str, Any]:
        return {"glue_mean": {f"{a}-{i}": rounded(self.mean_score(a, i)) for a in self.archs for i in self.inits},
                "glue_tasks": len(self.study_tasks()),
                "pretrain_val_loss": {f"{r.arch}-{r.side}": rounded(r.val_loss) for r in self.pretrain},
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




def exp1_table(glue_reports: dict[str, dict[str, Any]], pretrain_reports: dict[str, dict[str, Any]],
               archs: list[str], sides: list[str], expected_tokens: int,
               inits: list[str] | None = None) -> dict[str, Any]:
    """EXP1 table: arch x init (leaner / ori / scratch) x task test score (mean, std over seeds).

    ``glue_reports``: ``reports/glue/<arch>-<init>.json`` by ``<arch>-<init>`` (``inits``: default the
    sides and scratch); ``pretrain_reports``:
    ``reports/pretrain/<arch>-<side>.json``. Fails (InputError) if a run is missing or if the pretraining
    runs did not all see ``expected_tokens`` tokens (the equal-budget rule)."""
    inits = inits if inits is not None else [*sides, "scratch"]
    for arch in archs:
        for side in sides:
            name = f"{arch}-{side}"
            rep = pretrain_reports.get(name)
            if rep is None:
                raise InputError(f"reports/pretrain/{name}.json", "pretraining report missing")
            if rep.get("tokens_seen") != expected_tokens:
                raise InputError(f"reports/pretrain/{name}.json",
                                 f"saw {rep.get('tokens_seen')} tokens, expected {expected_tokens} "
                                 "(every run must have the same token budget)")
    table: dict[str, Any] = {}
    tasks: list[str] = []
    for arch in archs:
        table[arch] = {}
        for init in inits:
            name = f"{arch}-{init}"
            rep = glue_reports.get(name)
            if rep is None:
                raise InputError(f"reports/glue/{name}.json", "GLUE report missing")
            row = {t: {"test": r["test_score"], "std": r["test_std"], "best_lr": r["best_lr"]}
                   for t, r in rep["tasks"].items()}
            tasks = tasks or list(row)
            row["mean"] = {"test": rep["mean_test_score"]}
            table[arch][init] = row
    # study claims, checked on this table
    claims: dict[str, Any] = {}
    if "leaner" in sides and "ori" in sides:
        wins = {a: table[a]["leaner"]["mean"]["test"] > table[a]["ori"]["mean"]["test"] for a in archs}
        claims["leaner_beats_ori"] = wins
        claims["leaner_beats_ori_count"] = sum(wins.values())
    best_init = sides[0] if sides else "scratch"
    ranking = sorted(archs, key=lambda a: -table[a][best_init]["mean"]["test"])
    claims[f"best_arch_{best_init}"] = ranking[0]
    claims["pretraining_helps"] = {a: max(table[a][s]["mean"]["test"] for s in sides)
                                   > table[a]["scratch"]["mean"]["test"] for a in archs} if sides and "scratch" in inits else {}
    runs = {f"{a}-{s}" for a in archs for s in sides}  # the directory may hold runs of other archs
    pre = {n: {k: r.get(k) for k in ("tokens_seen", "train_loss", "val_loss", "non_embedding_params", "lr",
                                     "best_step", "best_val_loss", "lr_sweep")}
           for n, r in sorted(pretrain_reports.items()) if n in runs}
    return {"tasks": tasks, "inits": inits, "table": table, "claims": claims, "pretrain": pre,
            "tokens_per_run": expected_tokens}


def exp1_markdown(res: dict[str, Any], preset: str) -> str:
    """The EXP1 tables in Markdown (each architecture with its pretraining objective from the registry)."""
    from tinyhelen.exp1.models import get

    tasks, inits = res["tasks"], res["inits"]
    lines = [f"# EXP1: pretraining corpus x architecture on Leaner-GLUE (preset `{preset}`)", "",
             f"Every pretraining run saw {res['tokens_per_run']:,} tokens. Test scores x100 (mean +- std "
             "over seeds at the learning rate best on validation; each fine-tuning run is scored on test with the "
             "weights of its best validation epoch). CoLA: MCC; MRPC: mean(F1, acc); STS-B: mean(Pearson, "
             "Spearman); others: accuracy. The mean covers the tasks the study ran (WNLI is shown, not averaged).",
             "",
             "| arch | objective | pretrained on | " + " | ".join(tasks) + " | mean |",
             "|---|---|---|" + "---|" * (len(tasks) + 1)]
    for arch, by_init in res["table"].items():
        for init in inits:
            row = by_init[init]
            cells = [f"{100 * row[t]['test']:.1f} +- {100 * row[t]['std']:.1f}" for t in tasks]
            lines.append(f"| {arch} | {get(arch).objective} | {init} | " + " | ".join(cells)
                         + f" | **{100 * row['mean']['test']:.1f}** |")
    lines += ["", "## Study claims on this table", ""]
    for k, v in res["claims"].items():
        lines.append(f"- `{k}`: {v}")
    lines += ["", "## Pretraining runs", "",
              "Each run swept the learning rates of `pretrain.lr` and kept the one with the lowest validation loss; "
              "fine-tuning starts from that run's weights at its lowest validation loss (step shown).", "",
              "| run | tokens | selected lr | best val loss (step) | last train loss | lowest val loss per lr "
              "| non-embedding params |", "|---|---|---|---|---|---|---|"]
    for name, r in res["pretrain"].items():
        params = r["non_embedding_params"]
        sweep = ", ".join(f"{lr}: {v['best_val_loss']}" for lr, v in (r.get("lr_sweep") or {}).items())
        lines.append(f"| {name} | {r['tokens_seen']:,} | {r.get('lr')} | {r.get('best_val_loss')} "
                     f"({r.get('best_step')}) | {r['train_loss']} | {sweep or 'n/a'} | "
                     f"{'n/a' if params is None else f'{params:,}'} |")
    lines.append("")
    return "\n".join(lines)


def exp1_plot_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arch x init: the mean test score (DVC bar plot data)."""
    return [{"model": f"{arch}-{init}", "arch": arch, "init": init,
             "test_score": round(100 * row["mean"]["test"], 3)}
            for arch, by_init in res["table"].items() for init, row in by_init.items()]


def exp1_png(res: dict[str, Any], path: Path | str) -> None:
    """Grouped bar chart: mean Leaner-GLUE test score per arch, one bar per pretraining corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    archs, inits = list(res["table"]), res["inits"]
    width = 0.8 / len(inits)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(archs), 3.6))
    for i, init in enumerate(inits):
        vals = [100 * res["table"][a][init]["mean"]["test"] for a in archs]
        ax.bar([x + (i - (len(inits) - 1) / 2) * width for x in range(len(archs))], vals, width, label=init)
    ax.set_xticks(range(len(archs)), archs)
    ax.set_ylabel("mean test score (x100)")
    ax.set_title("EXP1: Leaner-GLUE after pretraining on leaner / ori / nothing")
    ax.legend(title="pretrained on", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
