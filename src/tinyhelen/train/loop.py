"""The one training loop of pretraining, GLUE fine-tuning, instruction tuning and the curriculum proxy.

``train_loop(model, source, cfg, evaluate=..., callbacks=[...])`` runs ``cfg.steps`` optimizer steps. ``cfg``
(``LoopConfig``) says what the run is: optimiser and compute sections, peak learning rate, steps, when to
log / evaluate / checkpoint (``Cadence``), where its checkpoints go and under which run key. What differs
between the runs goes through three named extension points:

- a **batch source** (``BatchSource``): the global batch of step ``s`` has ``size(s)`` rows; ``batch(s, shard)``
  builds this process's rows of it (``Shard``: rows ``rank, rank + world, ...``, on its device) as model
  keyword arguments incl. ``labels``; ``tokens(batch)`` counts the tokens of those rows as seen; ``state()``
  is saved in checkpoints;
- an **evaluation function** ``evaluate(model, ctx) -> loss`` (called in eval mode without gradients, on the
  model without its DDP wrapper; ``ctx.mine(i)`` deals its batches among the processes, which reduce the result);
- **callbacks** (``Callback``): ``on_start`` before the first step, ``on_evaluation`` after each evaluation
  (the curriculum grows its pool there, instruction tuning saves a model), ``on_row`` for every history row
  (the DVCLive log ``TrainLog`` is a callback), ``on_end``; each with a ``state()`` saved in checkpoints.

A source whose batch depends on the step only (``prefetch = True``: pretraining's ``BlockSource``) has its next
batch prepared in a background thread (on this process's device) while the current step runs; the time the
loop waits for a batch is returned as ``timing["input_wait_s"]``.

Every step: set the learning rate (``tinyhelen.train.optim.lr_at``), take this process's rows of the global
batch (data order and token count do not depend on the number of processes) and split them into
``grad_accum`` micro-batches (sizes differing by at most one), forward/backward (bf16 autocast on a bf16 GPU
through ``accelerate``), clip the gradient norm, step AdamW. Each micro-batch's loss is weighted by its share
of the global batch's rows, so the gradient and the step's loss are the row-weighted mean over the whole batch
for any number of processes (the mean of the micro-batch means when they are equal). A process left without
rows (a last batch smaller than the processes) runs one row with weight 0, so that every process takes part in
the gradient all-reduce. Losses and token counts stay on the device and are summed over the processes when a
history row is written (no host synchronisation per step); a non-finite loss raises there, naming the steps.

A history row is written every ``log_every`` steps, at every evaluation (``eval_every``, the last step, and
step 0 with ``eval_at_start``) and at the last step: ``step, tokens, train_loss`` (mean over the steps since
the previous row), ``val_loss``, ``lr`` and what the callbacks add. Checkpoints (``tinyhelen.train.checkpoint``)
every ``checkpoint_every`` steps and when the run stops resume exactly: a resumed run gives the same weights and
rows as an uninterrupted one (bitwise on CPU with the same number of processes; with another number of
processes the same data order and optimizer state, up to floating-point rounding and dropout's random masks).
Only the main process writes (checkpoints; each process adds its random state). Wall-clock figures (tokens/s,
MFU) are returned separately (``LoopResult.timing``).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tinyhelen.train import checkpoint, dist
from tinyhelen.train.batches import Batch, BatchSource, Prefetch, Shard, split_rows
from tinyhelen.train.compute import accelerator, peak_tflops, to_device
from tinyhelen.train.config import ComputeConfig, OptimConfig
from tinyhelen.train.optim import build_optimizer, lr_at

log = logging.getLogger(__name__)

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
    ``loss_dtype``: dtype a row's mean train loss is rounded through; ``prefetch``:
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

    def mine(self, i: int) -> bool:
        """Whether this process evaluates batch ``i`` (batches are dealt round-robin; reduce the result)."""
        return i % self.world == self.rank


@dataclass
class LoopResult:
    model: torch.nn.Module
    history: list[dict[str, Any]]
    final: dict[str, Any]  # deterministic figures of the run
    timing: dict[str, Any]  # wall-clock figures: seconds, tokens_per_s, mfu, per-row throughput
    step_losses: list[float] = field(default_factory=list)  # loss of every step run in this call (global)
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
        self.shard = Shard(self.rank, self.world, self.acc.device)
        self.peak = peak_tflops(self.acc.device, cfg.peak_tflops)
        self.end = cfg.steps if cfg.stop_after is None else min(cfg.steps, self.start + cfg.stop_after)
        # on the device until a row is written: this process's share of the loss since the last row, of each
        # step; its tokens since the last row (a number: the sources count them on the host)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        self.losses: list[torch.Tensor] = []
        self.row_steps: list[int] = []
        self.tokens_pending = 0
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

    def part(self, step: int) -> tuple[Shard, bool]:
        """The shard this process builds at ``step`` and whether it is a stand-in: a process without rows of
        its own (a global batch smaller than the processes) takes row 0, with weight 0."""
        n = self.source.size(step)
        if self.shard.count(n):
            return self.shard, False
        return Shard(0, max(n, 1), self.acc.device), True

    def run_eval(self) -> float | None:
        if self.evaluate is None:
            return None
        self.plain.eval()
        with torch.no_grad():  # without DDP: an evaluation is no training step (no buffer broadcast)
            loss = self.evaluate(self.plain, self.ctx)
        self.plain.train()
        return loss

    def add_row(self, row: dict[str, Any], val: float | None, evaluated: bool) -> None:
        if evaluated:
            row["val_loss"] = round(val, 5) if val is not None else None
            for cb in self._callbacks():
                cb.on_evaluation(row["step"], val, row, self.plain)
        self.history.append(row)
        for cb in self._callbacks():
            cb.on_row(row)

    def sync(self, done: int) -> float:
        """Sum this process's loss and tokens since the last row over the processes (one host sync): add the
        tokens to those seen; the loss sum since the last row, which must be finite."""
        vec = torch.stack([self.loss_sum, torch.tensor(float(self.tokens_pending), dtype=torch.float64,
                                                       device=self.acc.device)])
        loss_sum, tokens = dist.all_sum(vec).tolist()
        self.tokens_seen += int(tokens)
        self.tokens_pending = 0
        if not math.isfinite(loss_sum):
            first = self.row_steps[0] if self.row_steps else done
            raise FloatingPointError(f"{self.cfg.desc}: non-finite loss in steps {first}-{done}; lower the "
                                     "learning rate")
        return loss_sum

    def save(self, step: int) -> None:
        acc, cfg = self.acc, self.cfg
        self.sync(step)  # the tokens seen, and no checkpoint of a diverged run
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
            checkpoint.prune(Path(cfg.ckpt_dir), cfg.cadence.keep_checkpoints, cfg.run_key)

    def step(self, batch: Batch, stand_in: bool, n: int) -> torch.Tensor:
        """One optimizer step on this process's rows ``batch`` of a global batch of ``n`` rows; returns this
        process's share of the step's loss (on the device: summed over the processes it is the step's loss)."""
        acc, cfg = self.acc, self.cfg
        rows = 0 if stand_in else next(iter(batch.values())).shape[0]
        sizes = split_rows(rows, cfg.grad_accum)
        step_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
        begin = 0
        for j, size in enumerate(sizes):
            part = slice(begin, begin + size) if size else slice(0, 1)  # no rows: a stand-in with weight 0
            mb = to_device({k: v[part] for k, v in batch.items()}, acc.device)
            sync = j == len(sizes) - 1
            with acc.no_sync(self.model) if not sync and self.world > 1 else nullcontext():
                loss = self.model(**mb).loss
                # weight rows/n of the global batch; DDP averages over the processes, hence x world
                acc.backward(loss / (n / (self.world * size)) if size else loss * 0.0)
            if size:
                step_loss += loss.detach().double() / (n / size)
            begin += size
        acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return step_loss

    def log_row(self, done: int, lr_now: float, evaluated: bool, window: _Window, bar: Any) -> None:
        """The history row after step ``done``: mean train loss over the processes and the steps since the
        last row, the evaluation if due, throughput (wall clock, kept apart)."""
        cfg = self.cfg
        tokens_before = self.tokens_seen
        loss_sum = self.sync(done)
        mean = float(torch.tensor(loss_sum / len(self.row_steps), dtype=cfg.loss_dtype))
        self.loss_sum.zero_()
        self.row_steps = []
        window.tokens += self.tokens_seen - tokens_before
        tps = window.take()  # all processes: the token count is global
        fpt = cfg.flops_per_token
        mfu = fpt * tps / (self.world * self.peak * 1e12) if (self.peak and fpt) else None
        self.throughput.append({"step": done, "tokens_per_s": round(tps, 1),
                                "mfu": round(mfu, 4) if mfu is not None else None})
        row = {"step": done, "tokens": self.tokens_seen, "train_loss": round(mean, 5), "val_loss": None,
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
        batches = Prefetch(self.source, self.end, self.part, self.acc.device, cfg.prefetch)
        window, input_wait = _Window(), 0.0
        t_start, tokens_start = time.perf_counter(), self.tokens_seen
        for step in range(self.start, self.end):
            lr_now = self.lr_of(step)
            for group in self.opt.param_groups:
                group["lr"] = lr_now
            t_wait = time.perf_counter()
            batch, stand_in = batches.get(step)
            input_wait += time.perf_counter() - t_wait
            step_loss = self.step(batch, stand_in, self.source.size(step))
            self.tokens_pending += 0 if stand_in else self.source.tokens(batch)
            self.losses.append(step_loss)
            self.loss_sum += step_loss
            self.row_steps.append(step + 1)
            done = step + 1
            bar.update(1)
            evaluated = done % cad.eval_every == 0 or done == cfg.steps
            if done % cad.log_every == 0 or evaluated:
                self.log_row(done, lr_now, evaluated, window, bar)
            if cfg.ckpt_dir is not None and (done % cad.checkpoint_every == 0 or done == self.end):
                self.save(done)
        bar.close()
        batches.close()
        self.sync(self.end)  # tokens of steps after the last row
        secs = time.perf_counter() - t_start
        tps = (self.tokens_seen - tokens_start) / max(secs, 1e-9)
        timing = {"seconds": round(secs, 2), "tokens_per_s": round(tps, 1), "throughput": self.throughput,
                  "input_wait_s": round(input_wait, 3), "prefetch": batches.enabled}
        if self.peak and cfg.flops_per_token:
            timing["mfu"] = round(cfg.flops_per_token * tps / (self.world * self.peak * 1e12), 4)
        return timing

    def step_losses(self) -> list[float]:
        """The loss of every step of this call (summed over the processes)."""
        if not self.losses:
            return []
        return dist.all_sum(torch.stack(self.losses)).tolist()

    def final(self) -> dict[str, Any]:
        trained = [r for r in self.history if r["train_loss"] is not None]
        vals = [r for r in self.history if r["val_loss"] is not None]
        return {"steps": self.end, "steps_planned": self.cfg.steps, "tokens_seen": self.tokens_seen,
                "processes": self.world, "bf16": self.bf16, "device": self.acc.device.type,
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
                      step_losses=run.step_losses(), accelerator=run.acc)
