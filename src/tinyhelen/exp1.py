"""EXP1's configuration and report: which architectures and initialisations the matrix stages cover
(``Exp1Config``, the ``exp1:`` section) and the table arch x initialisation x task from the GLUE stage reports
(``exp1_table``, its Markdown, plot rows and figure)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from tinyhelen.config import Section
from tinyhelen.io import InputError


def _registered_archs() -> list[str]:
    from tinyhelen.models import arch_names

    return arch_names()


def _default_archs() -> list[str]:
    from tinyhelen.models import default_arch_names

    return default_arch_names()


class Exp1Config(Section):
    """``exp1:`` section: which architectures the EXP1 matrix stages and the report cover."""

    archs: list[str] = Field(default_factory=_default_archs, min_length=1,
                             description="registered architectures (tinyhelen.models); default: the study's four "
                                         "(an option such as mamba1 by name)")
    sides: list[str] = Field(default_factory=lambda: ["leaner", "ori"], min_length=1,
                             description="pretraining corpus sides")
    inits: list[str] = Field(default_factory=lambda: ["leaner", "ori", "scratch"], min_length=1,
                             description="initialisations fine-tuned on Leaner-GLUE (the `glue` matrix): pretrained "
                                         "sides and `scratch`, the saved random initialisation")

    @field_validator("archs")
    @classmethod
    def _archs(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in _registered_archs()]
        if bad:
            raise ValueError(f"unknown archs {bad}; known: {', '.join(_registered_archs())}")
        return v

    @field_validator("sides")
    @classmethod
    def _sides(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ("leaner", "ori")]
        if bad:
            raise ValueError(f"unknown corpus sides {bad}; known: leaner, ori")
        return v

    @model_validator(mode="after")
    def _inits(self):
        bad = [i for i in self.inits if i not in (*self.sides, "scratch")]
        if bad:
            raise ValueError(f"inits {bad} are neither a pretrained side ({', '.join(self.sides)}) nor scratch")
        return self


INITS = ("leaner", "ori", "scratch")


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
    from tinyhelen.models import get

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
