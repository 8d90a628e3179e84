"""GLUE's task metrics (fractions): CoLA = Matthews correlation; MRPC and QQP = mean of F1 and accuracy;
STS-B = mean of Pearson and Spearman correlation; the other tasks = accuracy (``task_metrics``: the metrics of
a task plus ``score``, the single number GLUE reports for it)."""
from __future__ import annotations

import math

import numpy as np

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
