"""(Leaner-)GLUE fine-tuning, GLUE metrics and the aggregation of EXP1.

Protocol (``evaluate_checkpoint``): for each task with a train split, for each learning rate of ``glue.lr``
and each seed of ``glue.seeds``, fine-tune a fresh classification/regression head plus the whole backbone
(from a pretrained checkpoint, or from random initialisation = the "scratch" baseline) for
``glue.epochs`` epochs on (at most ``max_train_examples`` of) the train split, then score the validation
split and the labelled test split. Aggregation: the best learning rate is the one with the highest mean
*validation* score over seeds; the reported test score is the mean (and std) over seeds at that rate.

Scores follow GLUE: CoLA = Matthews correlation; MRPC and QQP = mean of F1 and accuracy; STS-B = mean of
Pearson and Spearman correlation; the other tasks = accuracy. All metrics are fractions (x100 in the
Markdown table). Input layout and padding side per architecture: see ``tinyhelen.exp1.models``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from tinyhelen import timing
from tinyhelen.config import check_rates
from tinyhelen.exp1.glue_metrics import aggregate, mean_score, select_epoch, task_metrics  # noqa: F401
from tinyhelen.io import InputError, read_jsonl
from tinyhelen.study import STUDY_GLUE_EPOCHS, STUDY_GLUE_LRS
from tinyhelen.train.config import ComputeConfig, OptimConfig
from tinyhelen.train.loop import Callback, Shard

if TYPE_CHECKING:
    from tinyhelen.exp1.models import ArchSpec

log = logging.getLogger(__name__)

ALL_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
REGRESSION = frozenset({"stsb"})
NUM_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": 1, "mnli": 3, "qnli": 2, "rte": 2, "wnli": 2}
# validation / test split names per task (MNLI: the matched sets select; the mismatched ones are scored too)
EVAL_SPLITS = {t: ("validation", "test") for t in ALL_TASKS}
EVAL_SPLITS["mnli"] = ("validation_matched", "test_matched")
STUDY = "study"  # the value of glue.epochs / glue.lr that selects the study's
CPU_EPOCHS = {"cola": 4, "stsb": 4}  # the CPU default's epochs where sentences are short (the others: 1)
EXTRA_SPLITS = {"mnli": {"validation_mismatched": "validation_mismatched", "test_mismatched": "test_mismatched"}}


class GlueConfig(OptimConfig, ComputeConfig):
    """``glue:`` section: fine-tuning protocol of EXP1 (and of the curriculum proxy evaluations).

    ``epochs``: one count for every task, a mapping task -> count covering every task of ``tasks``, or
    ``study`` (the study's per-task counts, ``tinyhelen.study.STUDY_GLUE_EPOCHS``: only for the tasks it ran).
    ``lr``: a list of rates (a single number is a list of one), or ``study`` (the study's seven,
    ``tinyhelen.study.STUDY_GLUE_LRS``). Both ``study`` forms are expanded when the section is validated."""

    tasks: list[str] = Field(default_factory=lambda: ["cola", "mrpc", "rte", "stsb"],
                             description="tasks to fine-tune; each needs <task>_train.jsonl (the release has "
                                         "cola, mrpc, rte, stsb and wnli; the study never ran wnli)")
    lr: list[float] = Field(default_factory=lambda: [1e-3], min_length=1,
                            description="learning-rate grid; study = the study's seven rates")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                             description="fine-tuning seeds (the study: 5; the CPU default: 1, the study profiles 3)")
    epochs: int | dict[str, int] = Field(
        default_factory=lambda: {t: CPU_EPOCHS.get(t, 1) for t in ALL_TASKS},
        description="passes over the training examples per task: a number, a mapping task -> number, or "
                    "study (cola 30, mrpc 30, rte 50, stsb 30, sst2/qqp/mnli/qnli 3). The validation split is "
                    "scored after every epoch; the test split with the weights of the best epoch. CPU default: "
                    "4 for the short-sentence tasks (cola, stsb), 1 for the others")
    batch_size: int = Field(8, ge=1)
    max_seq_len: int = Field(256, ge=8, description="tokens per example incl. special tokens")
    max_train_examples: int | None = Field(128, ge=1, description="per task (seeded subsample); null: all")
    max_eval_examples: int | None = Field(256, ge=1, description="per validation/test split (seeded subsample); "
                                                                "null: all (Leaner-GLUE's hold 130-550 examples)")
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

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_study(cls, v: Any) -> Any:
        if v == STUDY:
            return list(STUDY_GLUE_LRS)
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, v: list[float]) -> list[float]:
        return check_rates(v)

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs_study(cls, v: Any) -> Any:
        return dict(STUDY_GLUE_EPOCHS) if v == STUDY else v

    @field_validator("epochs")
    @classmethod
    def _epochs_cover_tasks(cls, v: int | dict[str, int], info: ValidationInfo) -> int | dict[str, int]:
        counts = v.values() if isinstance(v, dict) else [v]
        if any(e < 1 for e in counts):
            raise ValueError(f"epochs must be >= 1 (got {v})")
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(ALL_TASKS))
            missing = [t for t in info.data.get("tasks", []) if t not in v]
            if unknown:
                raise ValueError(f"unknown tasks {unknown}; known: {', '.join(ALL_TASKS)}")
            if missing:
                raise ValueError(f"no count for tasks {missing} (the study's counts cover "
                                 f"{', '.join(STUDY_GLUE_EPOCHS)} only); give a number or a mapping naming them")
        return v

    def epochs_for(self, task: str) -> int:
        """Epochs of ``task``."""
        return self.epochs[task] if isinstance(self.epochs, dict) else self.epochs


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


def encode_pair(tok: Any, spec: ArchSpec, text_a: str, text_b: str | None, max_len: int) -> dict[str, list[int]]:
    """Token ids (+ segment ids) in the input layout of an architecture (``spec.layout``, see
    ``tinyhelen.exp1.models``), truncated to ``max_len`` by shortening the longer text first."""
    layout = spec.layout
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


def collate(examples: list[dict[str, list[int]]], pad_id: int, side: str, with_types: bool,
            length: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to ``length`` (default: the longest example) on ``side`` ("right" or "left")."""
    n = length or max(len(e["input_ids"]) for e in examples)
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
    ``randperm`` drawn from ``gen`` (one after the other), cut into batches of ``batch_size`` (an epoch's last
    batch may be smaller). A process collates its rows of a batch, padded to the batch's longest example (the
    rows it would have in one process)."""

    def __init__(self, x: list[dict], y: list[float], batch_size: int, gen: torch.Generator, *, pad_id: int,
                 side: str, with_types: bool, regression: bool):
        self.x, self.y, self.batch_size, self.gen = x, y, batch_size, gen
        self.pad_id, self.side, self.with_types, self.regression = pad_id, side, with_types, regression
        self.per_epoch = math.ceil(len(x) / batch_size)
        self.orders: list[list[int]] = []

    def _indices(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        while len(self.orders) <= epoch:
            self.orders.append(torch.randperm(len(self.x), generator=self.gen).tolist())
        return self.orders[epoch][i * self.batch_size:(i + 1) * self.batch_size]

    def size(self, step: int) -> int:
        return len(self._indices(step))

    def batch(self, step: int, shard: Shard = Shard()) -> dict[str, torch.Tensor]:
        idx = self._indices(step)
        longest = max(len(self.x[j]["input_ids"]) for j in idx)
        idx = idx[shard.rows(len(idx))]
        batch = collate([self.x[j] for j in idx], self.pad_id, self.side, self.with_types, longest)
        batch["labels"] = torch.tensor([self.y[j] for j in idx], dtype=torch.float if self.regression else torch.long)
        return batch

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def _predict(model, data: list[dict[str, Any]], spec: ArchSpec, pad_id: int, batch_size: int, regression: bool,
             device: torch.device, bf16: bool) -> list[float]:
    """Predictions for ``data``, in its order, computed in batches of ``batch_size`` examples of similar length;
    the batches are dealt among the processes and the predictions gathered, so every process returns all of them
    (the same batches as in one process)."""
    from tinyhelen.train import dist
    from tinyhelen.train.compute import autocast

    world, rank = dist.world(), dist.rank()
    model.eval()
    order = sorted(range(len(data)), key=lambda j: len(data[j]["input_ids"]))  # batches of similar length
    mine: dict[int, list[float]] = {}
    with torch.no_grad():
        for j, i in enumerate(range(0, len(data), batch_size)):
            if j % world != rank:
                continue
            batch = collate([data[k] for k in order[i:i + batch_size]], pad_id, spec.padding_side,
                            spec.token_type_ids)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, bf16):
                logits = model(**batch).logits.float()
            mine[j] = logits.squeeze(-1).tolist() if regression else logits.argmax(-1).tolist()
    model.train()
    parts = {j: p for got in dist.all_gather(mine) for j, p in got.items()}
    sorted_preds = [v for j in sorted(parts) for v in parts[j]]
    preds: list[float] = [0.0] * len(data)
    for k, p in zip(order, sorted_preds):  # back into the order of ``data``
        preds[k] = p
    return preds


class BestEpoch(Callback):
    """Scores the validation split after every epoch and keeps a CPU copy of the weights of the epoch
    ``select_epoch`` picks (the best validation score, ties the earlier), the weights the test split is scored
    with. With ``test`` data it also scores the test split after every epoch, for the record only (the run
    files keep both curves, so the selection can be recomputed; the reported test score is the selected
    epoch's)."""

    def __init__(self, task: str, data: tuple[list[dict], list[float]], spec: ArchSpec, pad_id: int, batch_size: int,
                 compute: ComputeConfig, test: tuple[list[dict], list[float]] | None = None):
        self.task, self.data, self.spec, self.pad_id = task, data, spec, pad_id
        self.batch_size, self.compute, self.test = batch_size, compute, test
        self.best: dict[str, Any] | None = None
        self.step: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.scores: list[float] = []
        self.test_scores: list[float] = []

    def _score(self, model: torch.nn.Module, data: tuple[list[dict], list[float]]) -> dict[str, float]:
        from tinyhelen.train.compute import uses_bf16

        device = next(model.parameters()).device
        x, y = data
        preds = _predict(model, x, self.spec, self.pad_id, self.batch_size, self.task in REGRESSION, device,
                         uses_bf16(self.compute, device))
        return task_metrics(self.task, y, preds)

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model: torch.nn.Module) -> None:
        metrics = self._score(model, self.data)
        self.scores.append(metrics["score"])
        if self.test is not None:
            self.test_scores.append(self._score(model, self.test)["score"])
        if select_epoch(self.scores) == len(self.scores) - 1:
            self.best, self.step = metrics, step
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def finetune_task(init: Path | str | None, spec: ArchSpec, preset: str, tok: Any, task: str,
                  data: dict[str, tuple[list[dict], list[float]]], cfg: GlueConfig, lr: float,
                  seed: int) -> dict[str, Any]:
    """Fine-tune one model on one task with one lr/seed (``tinyhelen.train.loop.train_loop``), scoring the
    validation split after every epoch; score the test split (and MNLI's mismatched sets) with the weights of
    the best epoch. Returns the validation metrics of that epoch and the test metrics."""
    from tinyhelen.exp1 import models
    from tinyhelen.train.compute import uses_bf16
    from tinyhelen.train.loop import Cadence, LoopConfig, train_loop
    from tinyhelen.train.rng import mix_seed

    regression = task in REGRESSION
    torch.manual_seed(mix_seed("glue-init", task, lr, seed) % (2**31))
    source = init if init is not None else models.build_config(spec, preset, tok)
    model = models.build_classifier(spec, source, NUM_LABELS[task])
    train_x, train_y = data["train"]
    batches = ExampleBatches(train_x, train_y, cfg.batch_size, torch.Generator().manual_seed(
        mix_seed("glue-order", task, lr, seed)), pad_id=tok.pad_token_id, side=spec.padding_side,
        with_types=spec.token_type_ids, regression=regression)
    total = batches.per_epoch * cfg.epochs_for(task)
    best = BestEpoch(task, data["validation"], spec, tok.pad_token_id, cfg.batch_size * 2, cfg, data.get("test"))
    loop = LoopConfig.of(cfg, lr=lr, steps=total, desc=f"glue {spec.name} {task}", progress=False,
                         cadence=Cadence(batches.per_epoch, batches.per_epoch, total, eval_at_start=False))
    res = train_loop(model, batches, loop, callbacks=[best])
    res.model.load_state_dict(best.weights)
    out: dict[str, Any] = {"lr": lr, "seed": seed, "best_epoch": best.step // batches.per_epoch,
                           "validation_by_epoch": list(best.scores),
                           "test_by_epoch": list(best.test_scores),
                           "train_loss_by_epoch": [r["train_loss"] for r in res.history],
                           "train_loss_last": float(np.mean(res.step_losses[-batches.per_epoch:])),
                           "validation": best.best}
    device = res.accelerator.device
    for split in ("test", *EXTRA_SPLITS.get(task, {})):
        if split not in data:
            continue
        x, y = data[split]
        preds = _predict(res.model, x, spec, tok.pad_token_id, cfg.batch_size * 2, regression, device,
                         uses_bf16(cfg, device))
        out[split] = task_metrics(task, y, preds)
    return out


def evaluate_checkpoint(checkpoint_dir: Path | str | None, arch: str | ArchSpec, preset: str,
                        tokenizer_dir: Path | str | None, glue_dir: Path | str, cfg: GlueConfig,
                        seed: int, work_dir: Path | str | None = None) -> dict[str, Any]:
    """Fine-tune and score one initialisation on every task of ``cfg.tasks``.

    ``checkpoint_dir``: a pretrained LM directory (``.../final``; its tokenizer files are used unless
    ``tokenizer_dir`` is given) or None for the from-scratch baseline (``preset`` shape, ``tokenizer_dir``
    vocabulary). ``seed`` is the base seed: example subsampling depends on it, each fine-tuning run on
    ``(seed, glue.seeds[i])``. Returns ``{"tasks": {task: aggregate + runs}, "mean_test_score": ...}``;
    the wall-clock figures go to ``tinyhelen.timing`` (keyed by the checkpoint). ``work_dir``: each finished
    fine-tuning run is kept there (``tinyhelen.train.finished``, keyed by the initial weights, the task's data,
    the config, lr and seed), and a rerun after a kill fine-tunes only the runs that did not finish."""
    from tinyhelen.exp1.models import PRESETS, get
    from tinyhelen.tokenizer import load as load_tokenizer
    from tinyhelen.train.checkpoint import run_key
    from tinyhelen.train.finished import Finished, digest_dir
    from tinyhelen.train.rng import mix_seed

    spec = get(arch)
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    if checkpoint_dir is None and tokenizer_dir is None:
        raise ValueError("a from-scratch baseline needs tokenizer_dir")
    if checkpoint_dir is not None and not (Path(checkpoint_dir) / "config.json").exists():
        raise InputError(checkpoint_dir, "not a pretrained model directory (config.json missing)")
    tok = load_tokenizer(tokenizer_dir if tokenizer_dir is not None else checkpoint_dir)
    done = Finished(work_dir)
    keyed = work_dir is not None  # the identity of a run (hashes of its inputs) is needed to store it only
    init = {"init": digest_dir(checkpoint_dir) if keyed and checkpoint_dir is not None else None,
            "arch": spec.name, "preset": preset, "vocab": len(tok), "pad": tok.pad_token_id,
            "cfg": cfg.model_dump(exclude={"tasks", "lr", "seeds", "device", "threads", "compile"})}
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    n_seqs = 0
    for task in cfg.tasks:
        splits = {"train": "train", "validation": EVAL_SPLITS[task][0], "test": EVAL_SPLITS[task][1]}
        splits.update({k: v for k, v in EXTRA_SPLITS.get(task, {}).items()
                       if (Path(glue_dir) / f"{task}_{v}.jsonl").exists()})
        data = {}
        for name, split in splits.items():
            rows = load_split(glue_dir, task, split)
            k = cfg.max_train_examples if name == "train" else cfg.max_eval_examples
            rows = subsample(rows, k, mix_seed(seed, "glue-subsample", task, name) % (2**32))
            x = [encode_pair(tok, spec, r["text_a"], r.get("text_b"), cfg.max_seq_len) for r in rows]
            y = [float(r["label"]) if task in REGRESSION else int(r["label"]) for r in rows]
            data[name] = (x, y)
        runs = []
        t_task = time.perf_counter()
        task_key = {**init, "task": task, "data": run_key(data) if keyed else None}
        for lr in cfg.lr:
            for s in cfg.seeds:
                key = {**task_key, "lr": lr, "seed": mix_seed(seed, s) % (2**31)}
                run = done.get(f"{task}-lr{lr:g}-seed{s}", key)
                if run is None:
                    run = finetune_task(checkpoint_dir, spec, preset, tok, task, data, cfg, lr, key["seed"])
                    done.put(f"{task}-lr{lr:g}-seed{s}", key, run)
                runs.append({**run, "seed": s})
        n = len(runs) * (cfg.epochs_for(task) * len(data["train"][0]) + len(data["validation"][0])
                         + len(data["test"][0]))
        n_seqs += n
        agg = aggregate(runs)
        results[task] = {**agg, "runs": runs, "n_train": len(data["train"][0]),
                         "n_validation": len(data["validation"][0]), "n_test": len(data["test"][0])}
        secs = time.perf_counter() - t_task
        log.info("glue %s %s: test %.3f +- %.3f (best lr %g) in %.1fs (%.0f seqs/s)", spec.name, task,
                 agg["test_score"], agg["test_std"], agg["best_lr"], secs, n / max(secs, 1e-9))
    secs = time.perf_counter() - t0
    timing.record(**{str(checkpoint_dir or "scratch"): {"seconds": round(secs, 2),
                                                       "sequences_per_s": round(n_seqs / max(secs, 1e-9), 1)}})
    mean, scored = mean_score({t: r["test_score"] for t, r in results.items()})
    return {"tasks": results, "mean_test_score": mean, "mean_tasks": scored}
