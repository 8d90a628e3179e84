"""EXP3's typed result rebuilt from its run files alone (``from_runs``): the report stage and ``python -m
tinyhelen.report verify`` call it. It turns the run files (``tinyhelen.exp3.run_files``) back into what
``tinyhelen.exp3.result.build`` takes (the curve under EXP3's own column names, the summary figures from the curve)
and scores each proxy checkpoint's GLUE runs with EXP1's selection rules."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyhelen import runfiles
from tinyhelen.exp1.glue_metrics import mean_score
from tinyhelen.exp1.result import task_results
from tinyhelen.exp3 import run_files
from tinyhelen.exp3.result import Exp3Glue, Exp3Result, build
from tinyhelen.io import InputError


def read_run_file(rf: runfiles.RunFile) -> dict[str, Any]:
    """``{"summary", "curve"}`` as ``result.build`` takes them, from one proxy run file."""
    rf.need("expansions")
    curve = [{run_files.BACK.get(k, k): v for k, v in r.items()} for r in rf.rows]
    vals = [r["val_loss"] for r in curve if r.get("val_loss") is not None]
    if not vals:
        raise InputError(rf.path, "no validation loss in the curve")
    last = curve[-1]
    return {"curve": curve, "summary": {"final_val_loss": last["val_loss"], "best_val_loss": min(vals),
                                        "pool_fraction": last["pool_fraction"], "expansions": rf.meta["expansions"]}}


def read_glue(runs: Path | str, names: list[str], seeds: list[int]) -> tuple[list[Exp3Glue], list[str]]:
    """``Exp3Glue`` rows of ``names`` (strategies and ``untrained``) x ``seeds`` and the tasks they cover; a
    skipped job contributes nothing. Each checkpoint's scores follow EXP1's selection rules."""
    rows, tasks = [], []
    for name in names:
        for seed in seeds:
            rf = runfiles.read_kind(runs, "exp3_glue", name=name, seed=seed)
            if not rf.meta.get("enabled", True):
                continue
            tasks = tasks or list(rf.meta.get("tasks") or [])
            for step in sorted({r["checkpoint"] for r in rf.rows}):
                res = task_results([r for r in rf.rows if r["checkpoint"] == step], rf.path)
                scores = {t: r["test_score"] for t, r in res.items()}
                rows.append(Exp3Glue(strategy=name, seed=seed, step=step,
                                     mean_test_score=round(mean_score(scores)[0], 5),
                                     tasks={t: round(v, 5) for t, v in scores.items()}))
    return rows, tasks


def read_runs(runs: Path | str, strategies: list[str], seeds: list[int]
              ) -> tuple[dict[tuple[str, int], dict[str, Any]], tuple[int, int, int | None, dict[str, int]]]:
    """Every (strategy, seed) run as ``{"summary", "curve"}``, and the pool's units, tokens, the proxy's
    non-embedding parameters and the pool's tokens per genre (``{}`` where the run files do not say; the same for
    every run, or the runs came from different inputs)."""
    data, sizes = {}, set()
    for s in strategies:
        for seed in seeds:
            rf = runfiles.read_kind(runs, "exp3", strategy=s, seed=seed)
            rf.need("pool_units_total", "pool_tokens_total", "non_embedding_params")
            data[(s, seed)] = read_run_file(rf)
            sizes.add((rf.meta["pool_units_total"], rf.meta["pool_tokens_total"], rf.meta["non_embedding_params"],
                       tuple(sorted((rf.meta.get("pool_genres") or {}).items()))))
    if len(sizes) != 1:
        raise InputError(runfiles.path(runs, "exp3", strategy="*", seed="*"),
                         f"the runs disagree on the pool or the proxy's size: {sorted(sizes, key=str)}")
    units, tokens, size, genres = sizes.pop()
    return data, (units, tokens, size, dict(genres))


@runfiles.built_from
def from_runs(runs: Path | str, params: Path | str) -> Exp3Result:
    """EXP3's typed result from the run files under ``runs`` and the params in ``params`` (strategies, seeds,
    the selected strategy, the baselines, the training budget)."""
    from tinyhelen.config import load_section
    from tinyhelen.exp3.config import CurriculumParam, Exp3Config
    from tinyhelen.exp3.runs import UNTRAINED

    cfg = load_section("exp3", Exp3Config, params)
    selected = load_section("curriculum", CurriculumParam, params).value
    data, (units, tokens, size, genres) = read_runs(runs, cfg.strategies, cfg.seeds)
    return build(data, cfg.strategies, cfg.seeds, selected, cfg.report.baselines, cfg.train, pool_units=units,
                 pool_tokens=tokens, non_embedding_params=size,
                 glue=read_glue(runs, [*cfg.strategies, UNTRAINED], cfg.seeds), pool_genres=genres)
