"""GLUE's task metrics (fractions): CoLA = Matthews correlation; MRPC and QQP = mean of F1 and accuracy;
STS-B = mean of Pearson and Spearman correlation; the other tasks = accuracy (``task_metrics``: the metrics of
a task plus ``score``, the single number GLUE reports for it).

And EXP1's selection rules, written once: the fine-tuning (``tinyhelen.exp1.glue``), the typed result built from
the run files (``tinyhelen.exp1.result``) and the report card's protocol table all call them:
``select_epoch`` (the epoch whose weights are scored on test: the best validation score, ties the earlier),
``aggregate`` (the learning rate with the best mean validation score over seeds; the test mean and spread over
seeds at that rate) and ``mean_tasks`` / ``mean_score`` (the mean covers the study's tasks: WNLI is shown, never
averaged)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tinyhelen.study import STUDY_GLUE_TASKS


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def f1_binary(y_true, y_pred, positive: int = 1) -> float:
    """F1 of the positive class; 0.0 when there are no true or predicted positives."""
    y_true, y_pred = np.asarray(y_true) == positive, np.asarray(y_pred) == positive
    tp = float((y_true & y_pred).sum())
    fp, fn = float((~y_true & y_pred).sum()), float((y_true & ~y_pred).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(y_true, y_pred) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin 2004); 0.0 if undefined."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    idx = {v: i for i, v in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred):
        cm[idx[t], idx[p]] += 1
    t_sum, p_sum = cm.sum(1), cm.sum(0)
    n, correct = cm.sum(), np.trace(cm)
    cov_tp = correct * n - float(t_sum @ p_sum)
    cov_pp = n * n - float(p_sum @ p_sum)
    cov_tt = n * n - float(t_sum @ t_sum)
    denom = math.sqrt(cov_pp * cov_tt)
    return 0.0 if denom == 0 else cov_tp / denom


def pearson(x, y) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xs, ys = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xs @ xs) * float(ys @ ys))
    return 0.0 if denom == 0 else float(xs @ ys) / denom


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    from scipy.stats import rankdata

    return rankdata(a)


def spearman(x, y) -> float:
    return pearson(_rank(np.asarray(x, dtype=float)), _rank(np.asarray(y, dtype=float)))


def task_metrics(task: str, y_true, y_pred) -> dict[str, float]:
    """GLUE metrics of one task plus ``score`` (the single number GLUE reports for it)."""
    if task == "stsb":
        m = {"pearson": pearson(y_pred, y_true), "spearman": spearman(y_pred, y_true)}
        m["score"] = (m["pearson"] + m["spearman"]) / 2
    elif task == "cola":
        m = {"mcc": matthews_corrcoef(y_true, y_pred)}
        m["score"] = m["mcc"]
    elif task in ("mrpc", "qqp"):
        m = {"f1": f1_binary(y_true, y_pred), "accuracy": accuracy(y_true, y_pred)}
        m["score"] = (m["f1"] + m["accuracy"]) / 2
    else:
        m = {"accuracy": accuracy(y_true, y_pred)}
        m["score"] = m["accuracy"]
    return m


# ------------------------------------------------------------------------------------ selection rules
def select_epoch(val_scores: Sequence[float]) -> int:
    """Index of the epoch whose weights are scored on test: the highest validation score, ties the earlier."""
    if not val_scores:
        raise ValueError("no validation score: nothing to select")
    best = 0
    for i, v in enumerate(val_scores):
        if v > val_scores[best]:
            best = i
    return best


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best lr by mean validation score over seeds (ties: the smallest lr); test mean/std over seeds at that lr.
    ``runs``: ``{"lr", "validation": {"score", ...}, "test": {"score", ...}}`` per lr x seed."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r)
    val_mean = {lr: float(np.mean([r["validation"]["score"] for r in rs])) for lr, rs in by_lr.items()}
    best = max(sorted(val_mean), key=lambda lr: val_mean[lr])  # ties -> smallest lr (sorted, stable max)
    rs = by_lr[best]
    test = np.array([r["test"]["score"] for r in rs])
    metrics = {k: float(np.mean([r["test"][k] for r in rs])) for k in rs[0]["test"]}
    out = {"best_lr": best, "val_score": val_mean[best], "test_score": float(test.mean()),
           "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0, "n_seeds": len(rs),
           "test_metrics": metrics, "val_score_by_lr": {str(k): v for k, v in val_mean.items()}}
    if "test_mismatched" in rs[0]:
        out["test_mismatched_score"] = float(np.mean([r["test_mismatched"]["score"] for r in rs]))
    return out


def mean_tasks(tasks: Sequence[str]) -> list[str]:
    """The tasks a mean score covers: those the study ran (WNLI is shown but never averaged); when only
    tasks outside the study's were run, those."""
    return [t for t in tasks if t in STUDY_GLUE_TASKS] or list(tasks)


def mean_score(scores: Mapping[str, float]) -> tuple[float | None, list[str]]:
    """Mean of the per-task scores over ``mean_tasks`` (None when there is none) and the tasks averaged."""
    scored = mean_tasks(list(scores))
    return (float(np.mean([scores[t] for t in scored])) if scored else None), scored
