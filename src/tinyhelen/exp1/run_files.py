"""EXP1's run files, as the training stages write them (the typed result reads them: ``tinyhelen.exp1.result``).
Imports nothing but the run-file format, so that editing the report never reruns a training stage.

* ``runs/pretrain/<arch>-<side>.tsv``: every learning rate of the sweep (``peak_lr``) per evaluation: step,
  tokens, unique tokens, learning rate, train and validation loss;
* ``runs/glue/<arch>-<init>.tsv``: a row per task x lr x seed x epoch with the train loss, the validation score
  and the test score of that epoch (``checkpoint`` first for a model scored at several checkpoints: EXP3's proxy).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyhelen import runfiles

# ------------------------------------------------------------------------------------ GLUE run files
GLUE_COLUMNS = ["task", "lr", "seed", "epoch", "train_loss", "val_score", "test_score"]


def glue_rows(tasks: dict[str, dict[str, Any]], **constant: Any) -> list[dict[str, Any]]:
    """Run-file rows of ``evaluate_checkpoint``'s tasks (every lr x seed run with its per-epoch figures)."""
    rows = []
    for task, res in tasks.items():
        for r in res["runs"]:
            losses = r.get("train_loss_by_epoch") or [None] * len(r["validation_by_epoch"])
            for e, (val, test, loss) in enumerate(zip(r["validation_by_epoch"], r["test_by_epoch"], losses), 1):
                rows.append({**constant, "task": task, "lr": r["lr"], "seed": r["seed"], "epoch": e,
                             "train_loss": loss, "val_score": val, "test_score": test})
    return rows


def write_glue(target: Path | str, checkpoints: dict[int | None, dict[str, dict[str, Any]]], kind: str = "glue",
               **meta: Any) -> Path:
    """The run file of ``evaluate_checkpoint``'s tasks per checkpoint: ``{None: tasks}`` for EXP1's one model
    (kind ``glue``), ``{step: tasks}`` for EXP3's proxy checkpoints (kind ``exp3_glue``: a ``checkpoint``
    column; no checkpoint at all for a skipped job)."""
    rows = [r for step, tasks in checkpoints.items()
            for r in glue_rows(tasks, **({} if step is None else {"checkpoint": step}))]
    first = next(iter(checkpoints.values()), {})
    examples = {t: {k: r[f"n_{k}"] for k in ("train", "validation", "test")} for t, r in first.items()}
    columns = GLUE_COLUMNS if kind == "glue" else ["checkpoint", *GLUE_COLUMNS]
    return runfiles.write(target, kind, {**meta, "examples": examples}, rows, columns)


# ------------------------------------------------------------------------------------ pretraining run files
def write_pretrain(target: Path | str, runs: dict[float, list[dict[str, Any]]], unique: Callable[[int], int],
                   **meta: Any) -> Path:
    """The run file of one pretraining stage: every swept rate's curve (``peak_lr``), with the unique training
    tokens seen by each step (``unique``, from ``tinyhelen.exp1.pretrain.unique_tokens``)."""
    rows = [{**r, "unique_tokens": unique(r["step"])} for lr, history in runs.items()
            for r in runfiles.curve_rows(history, peak_lr=lr)]
    return runfiles.write(target, "pretrain", meta, rows, runfiles.curve_columns(rows, ["peak_lr"]))
