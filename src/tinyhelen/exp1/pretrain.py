"""EXP1 pretraining: one architecture on one corpus side, every run with the same token budget.

Documents are tokenised into one stream (``<eos>`` after every document) and cut into ``seq_len`` blocks
("packed sequences"). Data order: the blocks of epoch ``e`` are visited in the order
``randperm(N, seed=(seed, e))``; global step ``s`` takes stream positions ``[s*B, (s+1)*B)``
(``stream_indices``); the architecture's objective (``ArchSpec.objective``) turns them into inputs with a
generator seeded from ``(seed, step)``. Nothing else decides what a step sees, so a resumed run continues
exactly. The validation loss is the mean loss over evenly spread validation blocks (``eval_tokens``)
with fixed masks. Training runs through ``tinyhelen.train.loop.train_loop``; several processes (``torchrun``,
docs/scaling.md) each build their rows of a step's batch and their share of the validation batches.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from tinyhelen import timing
from tinyhelen.config import check_rates
from tinyhelen.io import atomic_path, write_json
from tinyhelen.study import STUDY_GENRES
from tinyhelen.train.checkpoint import run_key
from tinyhelen.train.config import ComputeConfig, OptimConfig
from tinyhelen.train.live import TrainLog
from tinyhelen.train.loop import Batch, Callback, Cadence, LoopConfig, LoopContext, Shard, train_loop
from tinyhelen.train.objectives import Objective, make_objective
from tinyhelen.train.rng import mix_seed

if TYPE_CHECKING:
    from tinyhelen.exp1.models import ArchSpec

log = logging.getLogger(__name__)



class PretrainConfig(OptimConfig, ComputeConfig):
    """``pretrain:`` section: one pretraining run per arch x corpus side, all with the same token budget."""

    token_budget: int = Field(262_144, ge=1, description="training tokens seen by every run (equal for all)")
    seq_len: int = Field(128, ge=8, description="packed block length (even, XLNet's perm mask needs it)")
    batch_size: int = Field(16, ge=1, description="sequences per optimizer step (global, all processes)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step and process")
    lr: list[float] = Field(default_factory=lambda: [1e-3], min_length=1,
                            description="peak learning rates swept per arch x corpus (a number: one run); the run "
                                        "with the lowest validation loss is selected. The study swept six "
                                        "(tinyhelen.study.STUDY_PRETRAIN_LRS); the CPU default runs one")
    lr_schedule: Literal["constant", "cosine", "linear"] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr / peak lr (linear decay to 0: the study's)")
    genres: list[str] | None = Field(default_factory=lambda: list(STUDY_GENRES),
                                     description="genres of the corpus pretrained on (train and validation); "
                                                 "null: all")
    adam_beta2: float = Field(0.98, ge=0, lt=1)
    warmup_steps: int = Field(6, ge=0, description="steps of linear warm-up")
    max_train_docs: int | None = Field(None, ge=1, description="null: all training documents")
    eval_tokens: int = Field(8_192, ge=0, description="validation tokens scored at each evaluation")
    eval_every: int = Field(32, ge=1, description="steps between validation-loss evaluations")
    log_every: int = Field(4, ge=1, description="steps between train-loss log rows")
    checkpoint_every: int = Field(64, ge=1, description="steps between resumable checkpoints")
    keep_checkpoints: int = Field(1, ge=1)
    peak_tflops: float | None = Field(
        None, gt=0, description="accelerator peak TFLOP/s for MFU; null: looked up from the GPU name")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    plm_probability: float = Field(1 / 6, gt=0, lt=1)
    plm_max_span: int = Field(5, ge=1)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, v: list[float]) -> list[float]:
        return check_rates(v)

    @model_validator(mode="after")
    def _even(self):
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even (got {self.seq_len})")
        if self.token_budget < self.batch_size * self.seq_len:
            raise ValueError(f"token_budget {self.token_budget} is smaller than one batch "
                             f"(batch_size*seq_len = {self.batch_size * self.seq_len})")
        return self

    @property
    def steps(self) -> int:
        return self.token_budget // (self.batch_size * self.seq_len)

    @property
    def tokens_per_run(self) -> int:
        """Tokens actually seen: whole steps of ``batch_size * seq_len`` (identical for every run)."""
        return self.steps * self.batch_size * self.seq_len


# keys that do not change what a run computes (a checkpoint written with other values is resumed)
_NOT_IDENTITY = {"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "peak_tflops", "compile",
                 "device", "threads"}


# ----------------------------------------------------------------------------------------------- data
def tokenize_docs(texts: Iterable[str], tokenizer: Any, batch: int = 256) -> np.ndarray:
    """Token ids of all texts as one stream, ``<eos>`` after every document (int32)."""
    eos = tokenizer.eos_token_id
    out: list[np.ndarray] = []
    buf: list[str] = []

    def flush() -> None:
        for ids in tokenizer(buf, add_special_tokens=False)["input_ids"]:
            out.append(np.asarray([*ids, eos], dtype=np.int32))
        buf.clear()

    for text in texts:
        buf.append(text)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)


def pack(stream: np.ndarray, seq_len: int) -> torch.Tensor:
    """Cut a token stream into ``(n_blocks, seq_len)`` blocks; the incomplete tail is dropped (logged)."""
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"only {len(stream)} tokens; need at least one block of {seq_len}")
    if len(stream) % seq_len:
        log.debug("pack: dropping the last %d tokens (partial block)", len(stream) % seq_len)
    return torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)


def even_blocks(blocks: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """An evenly spread subset of blocks with at most ``max_tokens`` tokens (whole set if it fits)."""
    want = max(1, max_tokens // blocks.shape[1])
    if want >= len(blocks):
        return blocks
    idx = torch.linspace(0, len(blocks) - 1, want).round().long().unique()
    return blocks[idx]


def stream_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Block indices of global step ``step``: positions ``[step*B, (step+1)*B)`` of the epoch-shuffled stream."""
    out = []
    pos, end = step * batch_size, (step + 1) * batch_size
    cache: dict[int, torch.Tensor] = {}
    while pos < end:
        epoch, off = divmod(pos, n)
        if epoch not in cache:
            g = torch.Generator().manual_seed(mix_seed(seed, "epoch", epoch))
            cache[epoch] = torch.randperm(n, generator=g)
        take = min(end - pos, n - off)
        out.append(cache[epoch][off:off + take])
        pos += take
    return torch.cat(out)


def unique_tokens(step: int, batch_size: int, n_blocks: int, seq_len: int) -> int:
    """Distinct training tokens seen after ``step`` steps: every epoch is a permutation of the ``n_blocks``
    blocks (``stream_indices``), so the first ``min(step * batch_size, n_blocks)`` positions are distinct blocks."""
    return min(step * batch_size, n_blocks) * seq_len


def select_lr(best_val: dict[float, float | None]) -> float:
    """The learning rate of a sweep whose run reached the lowest validation loss (ties: the smaller rate); none
    evaluated: the last rate swept. ``best_val``: rate -> its run's lowest validation loss, in sweep order."""
    scored = [lr for lr, v in best_val.items() if v is not None]
    return min(scored, key=lambda lr: (best_val[lr], lr)) if scored else list(best_val)[-1]


class BlockSource:
    """Batch source of packed blocks: step ``s`` takes ``stream_indices(s)`` through the objective, with a
    generator seeded from ``(seed, s)``; a process builds its rows of that batch on its device (the masks
    are drawn for the whole batch, so they do not depend on the number of processes). Stateless: a step's
    batch depends on the step only, so the loop may prepare the next batch while the current step runs
    (``prefetch``)."""

    prefetch = True

    def __init__(self, blocks: Batch, batch_size: int, seed: int, objective: Objective):
        self.blocks, self.batch_size, self.seed, self.objective = blocks, batch_size, seed, objective
        self.n = int(blocks["input_ids"].shape[0])

    def size(self, step: int) -> int:
        return self.batch_size

    def batch(self, step: int, shard: Shard = Shard()) -> Batch:
        idx = stream_indices(step, self.batch_size, self.n, self.seed)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, "step", step))
        return self.objective({k: v[idx] for k, v in self.blocks.items()}, gen, rows=shard.rows(len(idx)),
                              device=shard.device)

    def tokens(self, batch: Batch) -> int:
        return int(batch["input_ids"].numel())

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def block_loss(val: Batch, objective: Objective, seed: int, per_batch: int):
    """Evaluation function: mean loss over ``val`` blocks in batches of ``per_batch`` (the mean of the
    batches' losses) with fixed masks (generator seeded from ``(seed, "eval")``). The batches are dealt among
    the processes; every process draws every batch's masks (cheap, on the host) and builds its own batches on
    its device, so the masks and the figure do not depend on the number of processes."""

    def evaluate(model: torch.nn.Module, ctx: LoopContext) -> float | None:
        acc = ctx.accelerator
        n_val = int(val["input_ids"].shape[0])
        tot, cnt = torch.zeros((), device=ctx.device), torch.zeros((), device=ctx.device)
        gen = torch.Generator().manual_seed(mix_seed(seed, "eval"))  # same masks at every evaluation
        for j, i in enumerate(range(0, n_val, per_batch)):
            mine = ctx.mine(j)
            inputs = objective({k: v[i:i + per_batch] for k, v in val.items()}, gen,
                               rows=None if mine else slice(0, 0), device=ctx.device)
            if not mine:
                continue
            with acc.autocast():
                loss = model(**inputs).loss
            tot += loss.float()
            cnt += 1
        tot, cnt = acc.reduce(tot, "sum"), acc.reduce(cnt, "sum")
        return float(tot / cnt) if float(cnt) else None

    return evaluate


class KeepBest(Callback):
    """Keeps a CPU copy of the weights at the evaluation with the lowest validation loss (the checkpoint
    fine-tuning starts from); saved in the loop's checkpoints, so a resumed run keeps it."""

    def __init__(self) -> None:
        self.val: float | None = None
        self.step: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model: torch.nn.Module) -> None:
        if val_loss is not None and (self.val is None or val_loss < self.val):
            self.val, self.step = val_loss, step
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def state(self) -> dict[str, Any]:
        return {"val": self.val, "step": self.step, "weights": self.weights}

    def load_state(self, state: dict[str, Any]) -> None:
        self.val, self.step, self.weights = state["val"], state["step"], state["weights"]


# ----------------------------------------------------------------------------------------------- a run
def objective_for(arch: str | ArchSpec, tok: Any, cfg: PretrainConfig) -> Objective:
    """The pretraining objective of an architecture (its ``ArchSpec.objective``) with the knobs of ``cfg``."""
    from tinyhelen.exp1 import models

    return make_objective(models.get(arch).objective, tok, cfg)


def init_model(arch: str | ArchSpec, preset: str, tok: Any, seed: int) -> torch.nn.Module:
    """The random initialisation every pretraining run of an architecture starts from (seeded by ``seed`` and
    the architecture's name)."""
    from tinyhelen.exp1 import models

    spec = models.get(arch)
    torch.manual_seed(mix_seed(seed, "init", spec.name) % (2**31))
    return models.build_lm(spec, models.build_config(spec, preset, tok))


def save_init(arch: str | ArchSpec, preset: str, tokenizer_dir: Path | str, out_dir: Path | str, seed: int
              ) -> dict[str, Any]:
    """Write the untrained ``init_model`` as ``out_dir/final`` (model + tokenizer files + ``train_info.json``):
    the from-scratch baseline GLUE fine-tunes, in the same layout as a pretrained run."""
    from tinyhelen.exp1 import models
    from tinyhelen.tokenizer import load as load_tokenizer

    from tinyhelen.train import dist

    spec = models.get(arch)
    tok = load_tokenizer(tokenizer_dir)
    model = init_model(spec, preset, tok, seed)
    info = {"arch": spec.name, "preset": preset, "tokens_seen": 0, "steps": 0,
            "non_embedding_params": models.non_embedding_params(model), "params": models.total_params(model)}
    if not dist.is_main():  # one process writes
        return info
    with atomic_path(Path(out_dir) / "final") as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        write_json(tmp / "train_info.json", info)
    return info


def lr_tag(lr: float) -> str:
    """Directory name of one learning rate's run (``lr-0.005``)."""
    return f"lr-{lr:g}"


def read_corpus(corpus_dir: Path, split: str, cfg: PretrainConfig, limit: int | None = None):
    """Texts of ``split`` of the genres in ``cfg.genres`` (all if null), at most ``limit`` documents."""
    from tinyhelen.data import read_docs

    n = 0
    for r in read_docs(corpus_dir / f"{split}.jsonl"):
        if cfg.genres is not None and r.get("genre") not in cfg.genres:
            continue
        if limit is not None and n >= limit:
            return
        n += 1
        yield r["text"]


def pretrain(arch: str | ArchSpec, preset: str, corpus_dir: Path | str, tokenizer_dir: Path | str,
             out_dir: Path | str, cfg: PretrainConfig, seed: int, *, resume: bool = True,
             stop_after: int | None = None, name: str | None = None,
             live_dir: Path | str | None = None) -> dict[str, Any]:
    """One EXP1 pretraining run per learning rate of ``cfg.lr``: ``corpus_dir/{train,validation}.jsonl``
    (genres ``cfg.genres``) tokenised with ``tokenizer_dir``, packed into ``cfg.seq_len`` blocks, each run
    trained for exactly ``cfg.tokens_per_run`` tokens on ``cfg.device``.

    Each run keeps its weights at its lowest validation loss (``KeepBest``); the run whose lowest validation
    loss is lowest is selected, and its best weights are written to ``out_dir/final/`` (``save_pretrained``
    model + tokenizer files + ``train_info.json``), the checkpoint GLUE fine-tunes. Per-rate checkpoints and
    DVCLive logs: ``out_dir/lr-<lr>/``; the selected rate's log is copied to ``live_dir``. Returns ``{"final":
    metrics of the selected run incl. the sweep, "history": its rows, "runs": every rate's rows}``
    (deterministic); wall-clock figures go to ``tinyhelen.timing``."""
    import shutil

    from tinyhelen.exp1 import models
    from tinyhelen.tokenizer import load as load_tokenizer

    spec = models.get(arch)  # looked up once, passed on
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    name = name or out_dir.name
    tok = load_tokenizer(tokenizer_dir)
    t0 = time.perf_counter()
    train_blocks = pack(tokenize_docs(read_corpus(corpus_dir, "train", cfg, cfg.max_train_docs), tok), cfg.seq_len)
    val_stream = tokenize_docs(read_corpus(corpus_dir, "validation", cfg), tok)
    val_blocks = even_blocks(pack(val_stream, cfg.seq_len), cfg.eval_tokens) if cfg.eval_tokens else None
    log.info("%s: %d train blocks (%d tokens), %d val blocks, tokenised in %.1fs", name, len(train_blocks),
             train_blocks.numel(), 0 if val_blocks is None else len(val_blocks), time.perf_counter() - t0)
    runs = {lr: run_one(spec, preset, tok, train_blocks, val_blocks, out_dir / lr_tag(lr), cfg, lr, seed,
                        resume=resume, stop_after=stop_after, name=f"{name} lr {lr:g}") for lr in cfg.lr}
    sweep = {f"{lr:g}": {"best_val_loss": r["final"]["best_val_loss"], "best_step": r["final"]["best_step"],
                         "val_loss": r["final"]["val_loss"], "train_loss": r["final"]["train_loss"]}
             for lr, r in runs.items()}
    finished = all(r["finished"] for r in runs.values())
    if not finished:
        return {"final": {"finished": False, "lr_sweep": sweep}, "history": [], "runs": {}}
    best_lr = select_lr({lr: r["final"]["best_val_loss"] for lr, r in runs.items()})
    best = runs[best_lr]
    final = {**best["final"], "lr": best_lr, "lr_sweep": sweep, "genres": cfg.genres}
    acc = best["accelerator"]
    if acc.is_main_process:
        with atomic_path(out_dir / "final") as tmp:
            best["model"].save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            write_json(tmp / "train_info.json", final)
        if live_dir is not None:  # replaced as a whole: a killed run leaves the previous log
            with atomic_path(live_dir) as tmp:
                shutil.copytree(out_dir / lr_tag(best_lr) / "live", tmp)
    acc.wait_for_everyone()
    log.info("pretrain %s: selected lr %g (best validation loss %s at step %s)", name, best_lr,
             final["best_val_loss"], final["best_step"])
    return {"final": final, "history": best["history"], "runs": {lr: r["history"] for lr, r in runs.items()}}


def run_one(spec: ArchSpec, preset: str, tok: Any, train_blocks: torch.Tensor, val_blocks: torch.Tensor | None,
            run_dir: Path, cfg: PretrainConfig, lr: float, seed: int, *, resume: bool, stop_after: int | None,
            name: str) -> dict[str, Any]:
    """One pretraining run at peak learning rate ``lr``; the model it returns carries the weights of its
    lowest validation loss (the last weights when nothing was evaluated)."""
    from tinyhelen.exp1 import models

    model = init_model(spec, preset, tok, seed)
    fpt = models.flops_per_token(model, cfg.seq_len, spec)
    objective = objective_for(spec, tok, cfg)
    identity = {"cfg": cfg.model_dump(exclude=_NOT_IDENTITY), "lr": lr, "steps": cfg.steps, "seed": seed,
                "rows": int(train_blocks.shape[0]), "arch": spec.name, "preset": preset,
                "train_tokens": int(train_blocks.numel())}
    keep = KeepBest()
    loop = LoopConfig.of(cfg, lr=lr, steps=cfg.steps, grad_accum=cfg.grad_accum,
                         cadence=Cadence(cfg.log_every, cfg.eval_every, cfg.checkpoint_every,
                                         keep_checkpoints=cfg.keep_checkpoints),
                         ckpt_dir=run_dir / "checkpoints", run_key=run_key(identity), resume=resume,
                         stop_after=stop_after, flops_per_token=fpt, peak_tflops=cfg.peak_tflops,
                         loss_dtype=torch.float32, desc=f"pretrain {name}")
    source = BlockSource({"input_ids": train_blocks}, cfg.batch_size, seed, objective)
    evaluate = None if val_blocks is None else block_loss({"input_ids": val_blocks}, objective, seed,
                                                          cfg.batch_size // cfg.grad_accum)
    res = train_loop(model, source, loop, evaluate=evaluate, callbacks=[keep, TrainLog(run_dir / "live")])
    final = res.final
    if res.finished:
        # the equal-budget guarantee of EXP1: every run sees exactly tokens_per_run tokens
        assert final["tokens_seen"] == cfg.tokens_per_run, (final["tokens_seen"], cfg.tokens_per_run)
        if keep.weights is not None:
            res.model.load_state_dict(keep.weights)
    final.update({"arch": spec.name, "preset": preset, "non_embedding_params": models.non_embedding_params(model),
                  "params": models.total_params(model), "train_blocks": int(len(train_blocks)),
                  "train_epochs": round(cfg.tokens_per_run / train_blocks.numel(), 3),
                  "flops_per_token": fpt, "best_val_loss": None if keep.val is None else round(keep.val, 5),
                  "best_step": keep.step})
    log.info("pretrain %s: %s (%s)", name, final, {k: v for k, v in res.timing.items() if k != "throughput"})
    timing.record(**{f"lr {lr:g}": res.timing})
    return {"final": final, "history": res.history, "model": res.model, "accelerator": res.accelerator,
            "finished": res.finished}
