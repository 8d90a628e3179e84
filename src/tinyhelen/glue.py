"""(Leaner-)GLUE fine-tuning, GLUE metrics and the aggregation of EXP1.

Protocol (``evaluate_checkpoint``): for each task with a train split, for each learning rate of ``glue.lr``
and each seed of ``glue.seeds``, fine-tune a fresh classification/regression head plus the whole backbone
(from a pretrained checkpoint, or from random initialisation = the "scratch" baseline) for
``glue.epochs`` epochs on (at most ``max_train_examples`` of) the train split, then score the validation
split and the labelled test split. Aggregation: the best learning rate is the one with the highest mean
*validation* score over seeds; the reported test score is the mean (and std) over seeds at that rate.

Scores follow GLUE: CoLA = Matthews correlation; MRPC and QQP = mean of F1 and accuracy; STS-B = mean of
Pearson and Spearman correlation; the other tasks = accuracy. All metrics are fractions (x100 in the
Markdown table). Input layout and padding side per architecture: see ``tinyhelen.models``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from tinyhelen import timing
from tinyhelen.config import Section
from tinyhelen.io import InputError, read_jsonl
from tinyhelen.train.config import ComputeConfig, OptimConfig

log = logging.getLogger(__name__)

ALL_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
REGRESSION = frozenset({"stsb"})
NUM_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": 1, "mnli": 3, "qnli": 2, "rte": 2, "wnli": 2}
# validation / test split names per task (MNLI: the matched sets)
EVAL_SPLITS = {t: ("validation", "test") for t in ALL_TASKS}
EVAL_SPLITS["mnli"] = ("validation_matched", "test_matched")


class GlueConfig(OptimConfig, ComputeConfig):
    """``glue:`` section: fine-tuning protocol of EXP1 (and of the curriculum proxy evaluations)."""

    tasks: list[str] = Field(default_factory=lambda: ["cola", "mrpc", "rte", "stsb", "wnli"],
                             description="tasks to fine-tune; each needs <task>_train.jsonl")
    lr: list[float] = Field(default_factory=lambda: [1e-3], min_length=1, description="learning-rate grid")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    max_seq_len: int = Field(128, ge=8, description="tokens per example incl. special tokens")
    max_train_examples: int | None = Field(512, ge=1, description="per task (seeded subsample); null: all")
    max_eval_examples: int | None = Field(256, ge=1, description="per validation/test split; null: all")
    lr_schedule: Literal["constant", "cosine", "linear"] = "linear"
    warmup_steps: int = Field(2, ge=0, description="steps of linear warm-up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1)

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in ALL_TASKS]
        if bad:
            raise ValueError(f"unknown GLUE tasks {bad}; known: {', '.join(ALL_TASKS)}")
        if len(set(v)) != len(v):
            raise ValueError("tasks listed twice")
        return v


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
    sides: list[str] = Field(default_factory=lambda: ["leaner", "ori"], min_length=1)

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


# ------------------------------------------------------------------------------------------ metrics
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


# ------------------------------------------------------------------------------------------- inputs
def load_split(glue_dir: Path | str, task: str, split: str) -> list[dict[str, Any]]:
    path = Path(glue_dir) / f"{task}_{split}.jsonl"
    if not path.exists():
        raise InputError(path, "file not found (Leaner-GLUE split missing)")
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        if r.get("label") is None or not isinstance(r.get("text_a"), str):
            raise InputError(path, "record without text_a or label", i)
    return rows


def subsample(rows: list[dict[str, Any]], k: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded subsample of ``k`` rows in file order (all rows if ``k`` is None or larger)."""
    if k is None or k >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(rows), size=k, replace=False))
    return [rows[i] for i in keep]


def encode_pair(tok: Any, arch: str, text_a: str, text_b: str | None, max_len: int) -> dict[str, list[int]]:
    """Token ids (+ segment ids) in the input layout of ``arch`` (``ArchSpec.layout``, see
    ``tinyhelen.models``), truncated to ``max_len`` by shortening the longer text first."""
    from tinyhelen.models import get

    layout = get(arch).layout
    a = tok(text_a, add_special_tokens=False)["input_ids"]
    b = tok(text_b, add_special_tokens=False)["input_ids"] if text_b is not None else None
    budget = max_len - layout.n_special(b is not None)
    if b is None:
        a = a[:budget]
    else:
        while len(a) + len(b) > budget:  # longest-first truncation
            if len(a) >= len(b):
                a = a[:-1]
            else:
                b = b[:-1]
    ids, types = layout.build(tok, a, b)
    return {"input_ids": ids, "token_type_ids": types}


def collate(examples: list[dict[str, list[int]]], pad_id: int, side: str, with_types: bool) -> dict[str, torch.Tensor]:
    """Pad to the longest example on ``side`` ("right" or "left")."""
    n = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    types = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        sl = slice(0, k) if side == "right" else slice(n - k, n)
        ids[i, sl] = torch.tensor(e["input_ids"])
        mask[i, sl] = 1
        types[i, sl] = torch.tensor(e["token_type_ids"])
    out = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        out["token_type_ids"] = types
    return out


# ----------------------------------------------------------------------------------------- training
class ExampleBatches:
    """Batch source of one fine-tuning run: ``epochs`` passes over the examples, each in the order of a
    ``randperm`` drawn from ``gen`` (one after the other), cut into batches of ``batch_size``."""

    def __init__(self, x: list[dict], y: list[float], batch_size: int, gen: torch.Generator, *, pad_id: int,
                 side: str, with_types: bool, regression: bool):
        self.x, self.y, self.batch_size, self.gen = x, y, batch_size, gen
        self.pad_id, self.side, self.with_types, self.regression = pad_id, side, with_types, regression
        self.per_epoch = math.ceil(len(x) / batch_size)
        self.orders: list[list[int]] = []

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        while len(self.orders) <= epoch:
            self.orders.append(torch.randperm(len(self.x), generator=self.gen).tolist())
        idx = self.orders[epoch][i * self.batch_size:(i + 1) * self.batch_size]
        batch = collate([self.x[j] for j in idx], self.pad_id, self.side, self.with_types)
        batch["labels"] = torch.tensor([self.y[j] for j in idx], dtype=torch.float if self.regression else torch.long)
        return batch

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def _predict(model, data: list[dict[str, Any]], arch: str, pad_id: int, batch_size: int, regression: bool,
             device: torch.device, bf16: bool) -> list[float]:
    from tinyhelen.models import get
    from tinyhelen.train.compute import autocast

    spec = get(arch)
    model.eval()
    preds: list[float] = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch = collate(data[i:i + batch_size], pad_id, spec.padding_side, spec.token_type_ids)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, bf16):
                logits = model(**batch).logits.float()
            preds.extend(logits.squeeze(-1).tolist() if regression else logits.argmax(-1).tolist())
    model.train()
    return preds


def finetune_task(init: Path | str | None, arch: str, preset: str, tok: Any, task: str,
                  data: dict[str, tuple[list[dict], list[float]]], cfg: GlueConfig, lr: float,
                  seed: int) -> dict[str, Any]:
    """Fine-tune one model on one task with one lr/seed (``tinyhelen.train.loop.train_loop``); return validation
    and test metrics."""
    from tinyhelen import models
    from tinyhelen.train.loop import Cadence, train_loop
    from tinyhelen.train.rng import mix_seed

    spec = models.get(arch)
    regression = task in REGRESSION
    torch.manual_seed(mix_seed("glue-init", task, lr, seed) % (2**31))
    source = init if init is not None else models.build_config(arch, preset, tok)
    model = models.build_classifier(arch, source, NUM_LABELS[task])
    train_x, train_y = data["train"]
    batches = ExampleBatches(train_x, train_y, cfg.batch_size, torch.Generator().manual_seed(
        mix_seed("glue-order", task, lr, seed)), pad_id=tok.pad_token_id, side=spec.padding_side,
        with_types=spec.token_type_ids, regression=regression)
    total = batches.per_epoch * cfg.epochs
    res = train_loop(model, batches, cfg, cfg, lr=lr, steps=total, cadence=Cadence(total, total, total),
                     desc=f"glue {arch} {task}", progress=False)
    out: dict[str, Any] = {"lr": lr, "seed": seed,
                           "train_loss_last": float(np.mean(res.step_losses[-batches.per_epoch:]))}
    device = res.accelerator.device
    for split in ("validation", "test"):
        x, y = data[split]
        preds = _predict(res.model, x, arch, tok.pad_token_id, cfg.batch_size * 2, regression, device,
                         res.final["bf16"])
        out[split] = task_metrics(task, y, preds)
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best lr by mean validation score over seeds; test mean/std over seeds at that lr."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r)
    val_mean = {lr: float(np.mean([r["validation"]["score"] for r in rs])) for lr, rs in by_lr.items()}
    best = max(sorted(val_mean), key=lambda lr: val_mean[lr])  # ties -> smallest lr (sorted, stable max)
    rs = by_lr[best]
    test = np.array([r["test"]["score"] for r in rs])
    metrics = {k: float(np.mean([r["test"][k] for r in rs])) for k in rs[0]["test"]}
    return {"best_lr": best, "val_score": val_mean[best], "test_score": float(test.mean()),
            "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0, "n_seeds": len(rs),
            "test_metrics": metrics, "val_score_by_lr": {str(k): v for k, v in val_mean.items()}}


def evaluate_checkpoint(checkpoint_dir: Path | str | None, arch: str, preset: str,
                        tokenizer_dir: Path | str | None, glue_dir: Path | str, cfg: GlueConfig,
                        seed: int) -> dict[str, Any]:
    """Fine-tune and score one initialisation on every task of ``cfg.tasks``.

    ``checkpoint_dir``: a pretrained LM directory (``.../final``; its tokenizer files are used unless
    ``tokenizer_dir`` is given) or None for the from-scratch baseline (``preset`` shape, ``tokenizer_dir``
    vocabulary). ``seed`` is the base seed: example subsampling depends on it, each fine-tuning run on
    ``(seed, glue.seeds[i])``. Returns ``{"tasks": {task: aggregate + runs}, "mean_test_score": ...}``;
    the wall-clock figures go to ``tinyhelen.timing`` (keyed by the checkpoint)."""
    from tinyhelen.models import PRESETS, get
    from tinyhelen.tokenizer import load as load_tokenizer
    from tinyhelen.train.rng import mix_seed

    get(arch)
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    if checkpoint_dir is None and tokenizer_dir is None:
        raise ValueError("a from-scratch baseline needs tokenizer_dir")
    if checkpoint_dir is not None and not (Path(checkpoint_dir) / "config.json").exists():
        raise InputError(checkpoint_dir, "not a pretrained model directory (config.json missing)")
    tok = load_tokenizer(tokenizer_dir if tokenizer_dir is not None else checkpoint_dir)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    n_seqs = 0
    for task in cfg.tasks:
        splits = {"train": "train", "validation": EVAL_SPLITS[task][0], "test": EVAL_SPLITS[task][1]}
        data = {}
        for name, split in splits.items():
            rows = load_split(glue_dir, task, split)
            k = cfg.max_train_examples if name == "train" else cfg.max_eval_examples
            rows = subsample(rows, k, mix_seed(seed, "glue-subsample", task, name) % (2**32))
            x = [encode_pair(tok, arch, r["text_a"], r.get("text_b"), cfg.max_seq_len) for r in rows]
            y = [float(r["label"]) if task in REGRESSION else int(r["label"]) for r in rows]
            data[name] = (x, y)
        runs = []
        t_task = time.perf_counter()
        for lr in cfg.lr:
            for s in cfg.seeds:
                runs.append(finetune_task(checkpoint_dir, arch, preset, tok, task, data, cfg, lr,
                                          mix_seed(seed, s) % (2**31)))
                runs[-1]["seed"] = s
        n = len(runs) * (cfg.epochs * len(data["train"][0]) + len(data["validation"][0]) + len(data["test"][0]))
        n_seqs += n
        agg = aggregate(runs)
        results[task] = {**agg, "runs": runs, "n_train": len(data["train"][0]),
                         "n_validation": len(data["validation"][0]), "n_test": len(data["test"][0])}
        secs = time.perf_counter() - t_task
        log.info("glue %s %s: test %.3f +- %.3f (best lr %g) in %.1fs (%.0f seqs/s)", arch, task,
                 agg["test_score"], agg["test_std"], agg["best_lr"], secs, n / max(secs, 1e-9))
    secs = time.perf_counter() - t0
    timing.record(**{str(checkpoint_dir or "scratch"): {"seconds": round(secs, 2),
                                                       "sequences_per_s": round(n_seqs / max(secs, 1e-9), 1)}})
    return {"tasks": results, "mean_test_score": float(np.mean([r["test_score"] for r in results.values()]))}


# ------------------------------------------------------------------------------------ EXP1 report
INITS = ("leaner", "ori", "scratch")


def exp1_table(glue_reports: dict[str, dict[str, Any]], pretrain_reports: dict[str, dict[str, Any]],
               archs: list[str], sides: list[str], expected_tokens: int) -> dict[str, Any]:
    """EXP1 table: arch x init (leaner / ori / scratch) x task test score (mean, std over seeds).

    ``glue_reports``: ``reports/glue/<arch>-<init>.json`` by ``<arch>-<init>``; ``pretrain_reports``:
    ``reports/pretrain/<arch>-<side>.json``. Fails (InputError) if a run is missing or if the pretraining
    runs did not all see ``expected_tokens`` tokens (the equal-budget rule)."""
    inits = [*sides, "scratch"]
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
                                   > table[a]["scratch"]["mean"]["test"] for a in archs} if sides else {}
    pre = {n: {k: r.get(k) for k in ("tokens_seen", "train_loss", "val_loss", "non_embedding_params")}
           for n, r in sorted(pretrain_reports.items())}
    return {"tasks": tasks, "inits": inits, "table": table, "claims": claims, "pretrain": pre,
            "tokens_per_run": expected_tokens}


def exp1_markdown(res: dict[str, Any], preset: str) -> str:
    """The EXP1 tables in Markdown (each architecture with its pretraining objective from the registry)."""
    from tinyhelen.models import get

    tasks, inits = res["tasks"], res["inits"]
    lines = [f"# EXP1: pretraining corpus x architecture on Leaner-GLUE (preset `{preset}`)", "",
             f"Every pretraining run saw {res['tokens_per_run']:,} tokens. Test scores x100 (mean +- std "
             "over seeds at the learning rate best on validation). CoLA: MCC; MRPC: mean(F1, acc); "
             "STS-B: mean(Pearson, Spearman); others: accuracy.", "",
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
    lines += ["", "## Pretraining runs", "", "| run | tokens | train loss | val loss | non-embedding params |",
              "|---|---|---|---|---|"]
    for name, r in res["pretrain"].items():
        params = r["non_embedding_params"]
        lines.append(f"| {name} | {r['tokens_seen']:,} | {r['train_loss']} | {r['val_loss']} | "
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
