"""The one training loop of pretraining, GLUE fine-tuning, instruction tuning and the curriculum proxy.

``train_loop(model, source, optim, compute, ...)`` runs ``steps`` optimizer steps. What differs between
the runs goes through four named extension points:

- a **batch source** (``BatchSource``): the global batch of step ``s`` as model keyword arguments incl.
  ``labels`` (``batch(s)``), the tokens it counts as seen, and a ``state()`` saved in checkpoints;
- an **evaluation function** ``evaluate(model, ctx) -> loss`` (called in eval mode without gradients);
- **callbacks** (``Callback``): ``on_start`` before the first step and ``on_evaluation`` after each
  evaluation (the curriculum grows its pool there, instruction tuning saves a model), with a ``state()``;
- a **log** (``TrainLog``, DVCLive) that receives every history row.

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
from tinyhelen.train.live import TrainLog
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
    """Hooks of the loop; subclass and override what you need."""

    def on_start(self, model: torch.nn.Module, resumed: bool) -> None:
        """Before the first step of this call (``resumed``: state restored from a checkpoint)."""

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model: torch.nn.Module) -> None:
        """After the evaluation at ``step`` (unrounded loss); may add figures to ``row``."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class Cadence:
    """When the loop logs, evaluates and checkpoints (checkpoints need ``ckpt_dir``)."""

    log_every: int
    eval_every: int
    checkpoint_every: int
    eval_at_start: bool = True
    keep_checkpoints: int = 1


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


def train_loop(model: torch.nn.Module, source: BatchSource, optim: OptimConfig, compute: ComputeConfig, *,
               lr: float, steps: int, cadence: Cadence,
               evaluate: Callable[[torch.nn.Module, LoopContext], float | None] | None = None,
               callbacks: Sequence[Callback] = (), ckpt_dir: Path | str | None = None, fingerprint: str = "",
               resume: bool = True, stop_after: int | None = None, train_log: TrainLog | None = None,
               grad_accum: int = 1, flops_per_token: float | None = None, peak: float | None = None,
               loss_dtype: torch.dtype = torch.float64, desc: str = "train", progress: bool = True) -> LoopResult:
    """Train ``model`` for ``steps`` optimizer steps of ``source``'s batches (see the module docstring).

    ``stop_after``: end this call after that many steps (a checkpoint is written; tests, time limits).
    ``loss_dtype``: dtype of the all-reduce of a row's mean train loss over the processes.
    ``flops_per_token`` / ``peak`` (TFLOP/s, default: looked up from the GPU name): MFU in ``timing``."""
    from tqdm.auto import tqdm

    acc, bf16 = accelerator(compute)
    world, rank = acc.num_processes, acc.process_index
    opt = build_optimizer(model, optim, lr)
    start, history, tokens_seen = 0, [], 0
    ckpt = checkpoint.latest_checkpoint(ckpt_dir, fingerprint) if ckpt_dir is not None and resume else None
    if ckpt is not None:
        state, loop_state = checkpoint.load(ckpt, model=model, optimizer=opt, rank=rank)
        start, history, tokens_seen = state["step"], state["history"], state["tokens_seen"]
        source.load_state(loop_state["source"])
        for cb, st in zip(callbacks, loop_state["callbacks"]):
            cb.load_state(st)
        log.info("%s: resumed from %s (step %d/%d)", desc, ckpt, start, steps)
    if compute.compile:
        model = torch.compile(model)
    model, opt = acc.prepare(model, opt)
    plain = getattr(acc.unwrap_model(model), "_orig_mod", acc.unwrap_model(model))  # without DDP / compile
    ctx = LoopContext(acc, acc.device, world, rank)
    peak = peak_tflops(acc.device, peak)
    end = steps if stop_after is None else min(steps, start + stop_after)

    def lr_of(step: int) -> float:
        return lr_at(step, lr, steps, optim)

    def run_eval() -> float | None:
        if evaluate is None:
            return None
        model.eval()
        with torch.no_grad():
            loss = evaluate(model, ctx)
        model.train()
        return loss

    def add_row(row: dict[str, Any], val: float | None, evaluated: bool) -> None:
        if evaluated:
            row["val_loss"] = round(val, 5) if val is not None else None
            for cb in callbacks:
                cb.on_evaluation(row["step"], val, row, plain)
        history.append(row)
        if train_log is not None and acc.is_main_process:
            train_log.row(row)

    def save(step: int) -> None:
        acc.wait_for_everyone()
        target = checkpoint.step_dir(Path(ckpt_dir), step)
        if acc.is_main_process:
            checkpoint.save(target, model=plain, optimizer=opt,
                            state={"step": step, "tokens_seen": tokens_seen, "fingerprint": fingerprint,
                                   "history": history},
                            loop_state={"source": source.state(), "callbacks": [cb.state() for cb in callbacks]})
        acc.wait_for_everyone()
        if not acc.is_main_process:  # other ranks add their RNG state to the finished checkpoint
            checkpoint.save_rng(target, rank)
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.prune(Path(ckpt_dir), cadence.keep_checkpoints)

    if train_log is not None and acc.is_main_process:
        train_log.replay(history)
    for cb in callbacks:
        cb.on_start(plain, ckpt is not None)
    model.train()
    if start == 0 and not history and evaluate is not None and cadence.eval_at_start:
        add_row({"step": 0, "tokens": 0, "train_loss": None, "val_loss": None, "lr": lr_of(0)}, run_eval(), True)
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not (acc.is_main_process and progress), unit="step",
               dynamic_ncols=True, mininterval=2.0)
    window, losses, pending, throughput = _Window(), [], [], []
    batches, input_wait = _Prefetch(source, end), 0.0
    t_start, tokens_start = time.perf_counter(), tokens_seen
    for step in range(start, end):
        lr_now = lr_of(step)
        for group in opt.param_groups:
            group["lr"] = lr_now
        t_wait = time.perf_counter()
        batch = batches.get(step)
        input_wait += time.perf_counter() - t_wait
        n_rows = next(iter(batch.values())).shape[0]
        if n_rows % (world * grad_accum):
            raise ValueError(f"{desc}: a batch of {n_rows} rows does not split into {world} processes x "
                             f"{grad_accum} micro-batches")
        mine = {k: v[rank::world] for k, v in batch.items()}  # this process's slice of the global batch
        rows = next(iter(mine.values())).shape[0]
        size = math.ceil(rows / grad_accum)
        micro = [{k: v[i:i + size] for k, v in mine.items()} for i in range(0, rows, size)]
        step_loss = 0.0
        for j, mb in enumerate(micro):
            mb = {k: v.to(acc.device, non_blocking=True) for k, v in mb.items()}
            sync = j == len(micro) - 1
            with acc.no_sync(model) if not sync and world > 1 else nullcontext():
                loss = model(**mb).loss
                acc.backward(loss / len(micro))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{desc}: non-finite loss at step {step + 1}; lower the learning rate")
            step_loss += value / len(micro)
        acc.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n_tokens = source.tokens(batch)
        tokens_seen += n_tokens
        window.tokens += n_tokens
        losses.append(step_loss)
        pending.append(step_loss)
        done = step + 1
        bar.update(1)
        evaluated = done % cadence.eval_every == 0 or done == steps
        if done % cadence.log_every == 0 or evaluated:
            mean = acc.reduce(torch.tensor(sum(pending) / len(pending), dtype=loss_dtype, device=acc.device),
                              "mean")
            pending = []
            tps = window.take()  # all processes: the batch is global
            mfu = flops_per_token * tps / (world * peak * 1e12) if (peak and flops_per_token) else None
            throughput.append({"step": done, "tokens_per_s": round(tps, 1),
                               "mfu": round(mfu, 4) if mfu is not None else None})
            row = {"step": done, "tokens": tokens_seen, "train_loss": round(float(mean), 5), "val_loss": None,
                   "lr": lr_now}
            add_row(row, run_eval() if evaluated else None, evaluated)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{tps:,.0f}",
                            **({"mfu": f"{mfu:.1%}"} if mfu is not None else {}))
            if evaluated:
                log.info("%s step %d/%d: train loss %s, val loss %s, %.0f tokens/s", desc, done, steps,
                         row["train_loss"], row["val_loss"], tps)
        if ckpt_dir is not None and (done % cadence.checkpoint_every == 0 or done == end):
            save(done)
    bar.close()
    batches.close()
    secs = time.perf_counter() - t_start
    tps = (tokens_seen - tokens_start) / max(secs, 1e-9)
    timing = {"seconds": round(secs, 2), "tokens_per_s": round(tps, 1), "throughput": throughput,
              "input_wait_s": round(input_wait, 3), "prefetch": batches.enabled}
    if peak and flops_per_token:
        timing["mfu"] = round(flops_per_token * tps / (world * peak * 1e12), 4)
    trained = [r for r in history if r["train_loss"] is not None]
    vals = [r for r in history if r["val_loss"] is not None]
    final = {"steps": end, "steps_planned": steps, "tokens_seen": tokens_seen, "processes": world,
             "bf16": bf16, "device": str(acc.device),
             "train_loss": trained[-1]["train_loss"] if trained else None,
             "val_loss": vals[-1]["val_loss"] if vals else None}
    if train_log is not None and acc.is_main_process:
        train_log.close()
    return LoopResult(model=plain, history=history, final=final, timing=timing, step_losses=losses,
                      accelerator=acc)
