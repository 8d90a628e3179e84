"""The one training loop of pretraining, GLUE fine-tuning, instruction tuning and the curriculum proxy.

``train_loop(model, source, cfg, evaluate=..., callbacks=[...])`` runs ``cfg.steps`` optimizer steps. ``cfg``
(``LoopConfig``) says what the run is: optimiser and compute sections, peak learning rate, steps, when to
log / evaluate / checkpoint (``Cadence``), where its checkpoints go and under which run key. What differs
between the runs goes through three named extension points:

- a **batch source** (``BatchSource``): the global batch of step ``s`` as model keyword arguments incl.
  ``labels`` (``batch(s)``), the tokens it counts as seen, and a ``state()`` saved in checkpoints;
- an **evaluation function** ``evaluate(model, ctx) -> loss`` (called in eval mode without gradients);
- **callbacks** (``Callback``): ``on_start`` before the first step, ``on_evaluation`` after each evaluation
  (the curriculum grows its pool there, instruction tuning saves a model), ``on_row`` for every history row
  (the DVCLive log ``TrainLog`` is a callback), ``on_end``; each with a ``state()`` saved in checkpoints.

A source whose batch depends on the step only (``prefetch = True``: pretraining's ``BlockSource``) has its next
batch prepared in a background thread while the current step runs; the time the loop waits for a batch is
returned as ``timing["input_wait_s"]``.

Every step: set the learning rate (``tinyhelen.train.optim.lr_at``), take the batch, split it over the
processes (rank ``r`` takes rows ``r::world``, so data order and token count do not depend on the number of
processes) and into ``grad_accum`` micro-batches, forward/backward (bf16 autocast on a bf16 GPU through
``accelerate``), clip the gradient norm, step AdamW. A history row is written every ``log_every`` steps,
at every evaluation (``eval_every``, the last step, and step 0 with ``eval_at_start``) and at the last
step: ``step, tokens, train_loss`` (mean over the steps since the previous row), ``val_loss``, ``lr`` and
what the callbacks add. Checkpoints (``tinyhelen.train.checkpoint``) every ``checkpoint_every`` steps and
when the run stops resume exactly: a resumed run gives the same weights and rows as an uninterrupted one
(bitwise on CPU). Wall-clock figures (tokens/s, MFU) are returned separately (``LoopResult.timing``).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tinyhelen.train import checkpoint
from tinyhelen.train.compute import accelerator, peak_tflops
from tinyhelen.train.config import ComputeConfig, OptimConfig
from tinyhelen.train.optim import build_optimizer, lr_at

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    def batch(self, step: int) -> Batch:
        """The global batch of optimizer step ``step`` (model kwargs incl. ``labels``)."""

    def tokens(self, batch: Batch) -> int:
        """Tokens of ``batch`` counted as seen."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a checkpoint (``{}`` if ``batch`` depends on the step only)."""

    def load_state(self, state: dict[str, Any]) -> None: ...


class Callback:
    """Hooks of the loop; subclass and override what you need. ``main_process_only``: called on the main
    process only (a log that writes files)."""

    main_process_only = False

    def on_start(self, model: torch.nn.Module, resumed: bool, history: list[dict[str, Any]]) -> None:
        """Before the first step of this call (``resumed``: state restored from a checkpoint whose rows so
        far are ``history``)."""

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model: torch.nn.Module) -> None:
        """After the evaluation at ``step`` (unrounded loss); may add figures to ``row``."""

    def on_row(self, row: dict[str, Any]) -> None:
        """A history row, complete (after every callback's ``on_evaluation``)."""

    def on_end(self) -> None:
        """After the last step of this call."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class Cadence:
    """When the loop logs, evaluates and checkpoints (checkpoints need ``LoopConfig.ckpt_dir``)."""

    log_every: int
    eval_every: int
    checkpoint_every: int
    eval_at_start: bool = True
    keep_checkpoints: int = 1


@dataclass(frozen=True)
class LoopConfig:
    """One training run: its optimiser and compute sections, peak ``lr``, ``steps`` and ``cadence``; where it
    checkpoints (``ckpt_dir``, resuming from the newest checkpoint with the same ``run_key`` when ``resume``);
    ``stop_after``: end this call after that many steps (a checkpoint is written; tests, time limits);
    ``flops_per_token`` / ``peak_tflops`` (default: looked up from the GPU name): MFU in ``timing``;
    ``loss_dtype``: dtype of the all-reduce of a row's mean train loss over the processes; ``prefetch``:
    prepare the next batch in a thread (None: when the source allows it)."""

    optim: OptimConfig
    compute: ComputeConfig
    lr: float
    steps: int
    cadence: Cadence
    grad_accum: int = 1
    ckpt_dir: Path | str | None = None
    run_key: str = ""
    resume: bool = True
    stop_after: int | None = None
    flops_per_token: float | None = None
    peak_tflops: float | None = None
    loss_dtype: torch.dtype = torch.float64
    prefetch: bool | None = None
    desc: str = "train"
    progress: bool = True

    @classmethod
    def of(cls, section: Any, **kw: Any) -> LoopConfig:
        """A run of a params section that holds both the optimiser and the compute keys (``pretrain``,
        ``glue``, ``instruct.tune``, ...)."""
        return cls(optim=section, compute=section, **kw)


@dataclass
class LoopContext:
    """What an evaluation function may need: the accelerator (device, processes, autocast)."""

    accelerator: Any
    device: torch.device
    world: int
    rank: int


@dataclass
class LoopResult:
    model: torch.nn.Module
    history: list[dict[str, Any]]
    final: dict[str, Any]  # deterministic figures of the run
    timing: dict[str, Any]  # wall-clock figures: seconds, tokens_per_s, mfu, per-row throughput
    step_losses: list[float] = field(default_factory=list)  # raw loss of every step run in this call
    accelerator: Any = None

    @property
    def finished(self) -> bool:
        return self.final["steps"] == self.final["steps_planned"]


class _Window:
    """Throughput between two history rows."""

    def __init__(self) -> None:
        self.t, self.tokens = time.perf_counter(), 0

    def take(self) -> float:
        tps = self.tokens / max(time.perf_counter() - self.t, 1e-9)
        self.t, self.tokens = time.perf_counter(), 0
        return tps


class _Prefetch:
    """Batches of a source, the next one prepared in a background thread while the current step runs, when
    the source allows it (``source.prefetch``: its batch depends on the step only, not on what the callbacks
    do between steps). Otherwise (or with ``enabled`` false) batches are made on demand."""

    def __init__(self, source: BatchSource, end: int, enabled: bool | None = None):
        self.source, self.end = source, end
        self.enabled = bool(getattr(source, "prefetch", False)) if enabled is None else enabled
        self.pool = None
        self.pending: dict[int, Any] = {}
        if self.enabled:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    def get(self, step: int) -> Batch:
        fut = self.pending.pop(step, None)
        batch = fut.result() if fut is not None else self.source.batch(step)
        if self.pool is not None and step + 1 < self.end:
            self.pending[step + 1] = self.pool.submit(self.source.batch, step + 1)
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _Run:
    """The state of one ``train_loop`` call; its methods are the phases of the loop."""

    def __init__(self, model: torch.nn.Module, source: BatchSource, cfg: LoopConfig,
                 evaluate: Callable[[torch.nn.Module, LoopContext], float | None] | None,
                 callbacks: Sequence[Callback]):
        self.source, self.cfg, self.evaluate, self.callbacks = source, cfg, evaluate, list(callbacks)
        self.acc, self.bf16 = accelerator(cfg.compute)
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.opt = build_optimizer(model, cfg.optim, cfg.lr)
        self.start, self.history, self.tokens_seen = 0, [], 0
        self.resumed = self._resume(model)
        if cfg.compute.compile:
            model = torch.compile(model)
        self.model, self.opt = self.acc.prepare(model, self.opt)
        unwrapped = self.acc.unwrap_model(self.model)
        self.plain = getattr(unwrapped, "_orig_mod", unwrapped)  # without DDP / compile
        self.ctx = LoopContext(self.acc, self.acc.device, self.world, self.rank)
        self.peak = peak_tflops(self.acc.device, cfg.peak_tflops)
        self.end = cfg.steps if cfg.stop_after is None else min(cfg.steps, self.start + cfg.stop_after)
        self.losses: list[float] = []
        self.pending: list[float] = []
        self.throughput: list[dict[str, Any]] = []

    # -- callbacks of this process
    def _callbacks(self) -> list[Callback]:
        main = self.acc.is_main_process
        return [cb for cb in self.callbacks if main or not cb.main_process_only]

    def _resume(self, model: torch.nn.Module) -> bool:
        cfg = self.cfg
        ckpt = checkpoint.latest_checkpoint(cfg.ckpt_dir, cfg.run_key) \
            if cfg.ckpt_dir is not None and cfg.resume else None
        if ckpt is None:
            return False
        state, loop_state = checkpoint.load(ckpt, model=model, optimizer=self.opt, rank=self.rank)
        self.start, self.history, self.tokens_seen = state["step"], state["history"], state["tokens_seen"]
        self.source.load_state(loop_state["source"])
        for cb, st in zip(self.callbacks, loop_state["callbacks"]):
            cb.load_state(st)
        log.info("%s: resumed from %s (step %d/%d)", cfg.desc, ckpt, self.start, cfg.steps)
        return True

    def lr_of(self, step: int) -> float:
        return lr_at(step, self.cfg.lr, self.cfg.steps, self.cfg.optim)

    def run_eval(self) -> float | None:
        if self.evaluate is None:
            return None
        self.model.eval()
        with torch.no_grad():
            loss = self.evaluate(self.model, self.ctx)
        self.model.train()
        return loss

    def add_row(self, row: dict[str, Any], val: float | None, evaluated: bool) -> None:
        if evaluated:
            row["val_loss"] = round(val, 5) if val is not None else None
            for cb in self._callbacks():
                cb.on_evaluation(row["step"], val, row, self.plain)
        self.history.append(row)
        for cb in self._callbacks():
            cb.on_row(row)

    def save(self, step: int) -> None:
        acc, cfg = self.acc, self.cfg
        acc.wait_for_everyone()
        target = checkpoint.step_dir(Path(cfg.ckpt_dir), step)
        if acc.is_main_process:
            checkpoint.save(target, model=self.plain, optimizer=self.opt,
                            state={"step": step, "tokens_seen": self.tokens_seen, "run_key": cfg.run_key,
                                   "history": self.history},
                            loop_state={"source": self.source.state(),
                                        "callbacks": [cb.state() for cb in self.callbacks]})
        acc.wait_for_everyone()
        if not acc.is_main_process:  # other ranks add their RNG state to the finished checkpoint
            checkpoint.save_rng(target, self.rank)
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.prune(Path(cfg.ckpt_dir), cfg.cadence.keep_checkpoints)

    def step(self, step: int, batch: Batch) -> float:
        """One optimizer step on this process's share of ``batch``; the step's mean loss."""
        acc, cfg = self.acc, self.cfg
        n_rows = next(iter(batch.values())).shape[0]
        if n_rows % (self.world * cfg.grad_accum):
            raise ValueError(f"{cfg.desc}: a batch of {n_rows} rows does not split into {self.world} processes x "
                             f"{cfg.grad_accum} micro-batches")
        mine = {k: v[self.rank::self.world] for k, v in batch.items()}  # this process's slice of the global batch
        rows = next(iter(mine.values())).shape[0]
        size = math.ceil(rows / cfg.grad_accum)
        micro = [{k: v[i:i + size] for k, v in mine.items()} for i in range(0, rows, size)]
        step_loss = 0.0
        for j, mb in enumerate(micro):
            mb = {k: v.to(acc.device, non_blocking=True) for k, v in mb.items()}
            sync = j == len(micro) - 1
            with acc.no_sync(self.model) if not sync and self.world > 1 else nullcontext():
                loss = self.model(**mb).loss
                acc.backward(loss / len(micro))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{cfg.desc}: non-finite loss at step {step + 1}; lower the learning rate")
            step_loss += value / len(micro)
        acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return step_loss

    def log_row(self, done: int, lr_now: float, evaluated: bool, window: _Window, bar: Any) -> None:
        """The history row after step ``done``: mean train loss over the processes and the steps since the
        last row, the evaluation if due, throughput (wall clock, kept apart)."""
        cfg = self.cfg
        mean = self.acc.reduce(torch.tensor(sum(self.pending) / len(self.pending), dtype=cfg.loss_dtype,
                                            device=self.acc.device), "mean")
        self.pending = []
        tps = window.take()  # all processes: the batch is global
        fpt = cfg.flops_per_token
        mfu = fpt * tps / (self.world * self.peak * 1e12) if (self.peak and fpt) else None
        self.throughput.append({"step": done, "tokens_per_s": round(tps, 1),
                                "mfu": round(mfu, 4) if mfu is not None else None})
        row = {"step": done, "tokens": self.tokens_seen, "train_loss": round(float(mean), 5), "val_loss": None,
               "lr": lr_now}
        self.add_row(row, self.run_eval() if evaluated else None, evaluated)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{tps:,.0f}",
                        **({"mfu": f"{mfu:.1%}"} if mfu is not None else {}))
        if evaluated:
            log.info("%s step %d/%d: train loss %s, val loss %s, %.0f tokens/s", cfg.desc, done, cfg.steps,
                     row["train_loss"], row["val_loss"], tps)

    def train(self) -> dict[str, Any]:
        """The steps of this call; returns the wall-clock figures."""
        from tqdm.auto import tqdm

        cfg, cad = self.cfg, self.cfg.cadence
        bar = tqdm(total=cfg.steps, initial=self.start, desc=cfg.desc, unit="step", dynamic_ncols=True,
                   mininterval=2.0, disable=not (self.acc.is_main_process and cfg.progress))
        window, batches, input_wait = _Window(), _Prefetch(self.source, self.end, cfg.prefetch), 0.0
        t_start, tokens_start = time.perf_counter(), self.tokens_seen
        for step in range(self.start, self.end):
            lr_now = self.lr_of(step)
            for group in self.opt.param_groups:
                group["lr"] = lr_now
            t_wait = time.perf_counter()
            batch = batches.get(step)
            input_wait += time.perf_counter() - t_wait
            step_loss = self.step(step, batch)
            n_tokens = self.source.tokens(batch)
            self.tokens_seen += n_tokens
            window.tokens += n_tokens
            self.losses.append(step_loss)
            self.pending.append(step_loss)
            done = step + 1
            bar.update(1)
            evaluated = done % cad.eval_every == 0 or done == cfg.steps
            if done % cad.log_every == 0 or evaluated:
                self.log_row(done, lr_now, evaluated, window, bar)
            if cfg.ckpt_dir is not None and (done % cad.checkpoint_every == 0 or done == self.end):
                self.save(done)
        bar.close()
        batches.close()
        secs = time.perf_counter() - t_start
        tps = (self.tokens_seen - tokens_start) / max(secs, 1e-9)
        timing = {"seconds": round(secs, 2), "tokens_per_s": round(tps, 1), "throughput": self.throughput,
                  "input_wait_s": round(input_wait, 3), "prefetch": batches.enabled}
        if self.peak and cfg.flops_per_token:
            timing["mfu"] = round(cfg.flops_per_token * tps / (self.world * self.peak * 1e12), 4)
        return timing

    def final(self) -> dict[str, Any]:
        trained = [r for r in self.history if r["train_loss"] is not None]
        vals = [r for r in self.history if r["val_loss"] is not None]
        return {"steps": self.end, "steps_planned": self.cfg.steps, "tokens_seen": self.tokens_seen,
                "processes": self.world, "bf16": self.bf16, "device": str(self.acc.device),
                "train_loss": trained[-1]["train_loss"] if trained else None,
                "val_loss": vals[-1]["val_loss"] if vals else None}


def train_loop(model: torch.nn.Module, source: BatchSource, cfg: LoopConfig, *,
               evaluate: Callable[[torch.nn.Module, LoopContext], float | None] | None = None,
               callbacks: Sequence[Callback] = ()) -> LoopResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps of ``source``'s batches (see the module docstring)."""
    run = _Run(model, source, cfg, evaluate, callbacks)
    for cb in run._callbacks():
        cb.on_start(run.plain, run.resumed, run.history)
    run.model.train()
    if run.start == 0 and not run.history and evaluate is not None and cfg.cadence.eval_at_start:
        run.add_row({"step": 0, "tokens": 0, "train_loss": None, "val_loss": None, "lr": run.lr_of(0)},
                    run.run_eval(), True)
    timing = run.train()
    for cb in run._callbacks():
        cb.on_end()
    return LoopResult(model=run.plain, history=run.history, final=run.final(), timing=timing,
                      step_losses=run.losses, accelerator=run.acc)
