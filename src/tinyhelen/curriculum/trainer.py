"""The curriculum trainer: a causal-LM proxy trained on a growing pool of units, easiest first.

One run = one strategy x one seed with the same token budget (``max_steps * batch_size * seq_len``):

* curriculum strategies (``random``, ``sentlen``, ``unigram``, ``lmloss``, ``selfloss``): the pool starts
  with the easiest ``start_fraction`` of units and grows by ``pacing`` (``tinyhelen.curriculum.pacing``)
  at evaluation points. Static scorers fix the order up front; ``selfloss`` scores a random sample of
  ``selfloss_candidates`` units outside the pool with the current model at each expansion and adds the
  lowest-loss ones (scoring every remaining unit at every expansion would cost more than training here).
* ``full-random``: every unit from the start, reshuffled each pass.
* ``full-repeated``: every unit, packed once in a fixed (seeded) order; the same blocks in the same
  order every epoch.

Sampling inside the pool is uniform without replacement: a shuffled pass over the pool, restarted when
the pool grows. Sampled units are packed into ``seq_len`` blocks with ``<|endoftext|>`` separators (a unit
may continue into the next block). The validation loss is the mean token loss on fixed packed blocks.

Resume: with ``state_path`` the whole run state (model, optimizer, step, pool, sampler, plateau counter,
NumPy and torch RNG states, curve so far) is saved atomically after every evaluation; a run started with
the same inputs resumes from it and yields exactly the result of an uninterrupted run (a state whose
fingerprint does not match the inputs is ignored and replaced).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyhelen.curriculum.config import BASELINES, TrainConfig
from tinyhelen.curriculum.pacing import PlateauTracker, n_units, target_size
from tinyhelen.curriculum.scorers import unit_losses
from tinyhelen.curriculum.units import Units
from tinyhelen.io import atomic_path

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["step", "tokens", "val_loss", "best_val_loss", "train_loss", "pool_units", "pool_fraction",
                 "pool_tokens", "lr", "seconds"]


@dataclass
class Sampler:
    """Uniform sampling without replacement inside the pool, packed into fixed-length blocks."""

    perm: list[int] = field(default_factory=list)
    pos: int = 0
    buffer: list[int] = field(default_factory=list)
    fixed_blocks: np.ndarray | None = None  # full-repeated: the fixed packing
    block_pos: int = 0

    def restart(self) -> None:
        """The pool changed: the next unit comes from a fresh shuffled pass over the new pool."""
        self.perm, self.pos = [], 0

    def batch(self, rng: np.random.Generator, pool: list[int], units: Units, n: int, length: int,
              eos: int) -> np.ndarray:
        if self.fixed_blocks is not None:
            idx = (self.block_pos + np.arange(n)) % len(self.fixed_blocks)
            self.block_pos = int((self.block_pos + n) % len(self.fixed_blocks))
            return self.fixed_blocks[idx]
        need = n * length
        while len(self.buffer) < need:
            if self.pos >= len(self.perm):
                self.perm = [pool[i] for i in rng.permutation(len(pool))]
                self.pos = 0
            self.buffer.extend(units.ids(self.perm[self.pos]).tolist())
            self.buffer.append(eos)
            self.pos += 1
        out = np.asarray(self.buffer[:need], dtype=np.int64).reshape(n, length)
        del self.buffer[:need]
        return out

    def state(self) -> dict[str, Any]:
        return {"perm": list(self.perm), "pos": self.pos, "buffer": list(self.buffer), "block_pos": self.block_pos}

    def load(self, st: dict[str, Any]) -> None:
        self.perm, self.pos, self.buffer, self.block_pos = st["perm"], st["pos"], st["buffer"], st["block_pos"]


def fixed_packing(units: Units, order: np.ndarray, length: int, eos: int) -> tuple[np.ndarray, int]:
    """Blocks of ``length`` tokens from the units in ``order`` (EOS-separated); returns (blocks, tokens cut)."""
    stream = np.concatenate([np.append(units.ids(i).astype(np.int64), eos) for i in order])
    n = len(stream) // length
    if n == 0:
        raise ValueError(f"pool of {len(stream)} tokens is shorter than one block of {length}")
    return stream[:n * length].reshape(n, length), int(len(stream) - n * length)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
    return cfg.lr


def val_blocks(val: np.ndarray, length: int) -> np.ndarray:
    n = len(val) // length
    if n == 0:
        raise ValueError(f"{len(val)} validation tokens < seq_len {length}")
    return val[:n * length].astype(np.int64).reshape(n, length)


def evaluate(model, blocks: np.ndarray, batch_size: int) -> float:
    """Mean token cross-entropy (nats) over the fixed validation blocks."""
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for b in range(0, len(blocks), batch_size):
            x = torch.as_tensor(blocks[b:b + batch_size])
            total += float(model(input_ids=x, labels=x).loss) * len(x)
    model.train()
    return total / len(blocks)


def fingerprint(cfg: TrainConfig, strategy: str, seed: int, units: Units, val: np.ndarray,
                scores: np.ndarray | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"cfg": cfg.model_dump(), "strategy": strategy, "seed": seed}, sort_keys=True).encode())
    h.update(units.offsets.tobytes())
    h.update(units.tokens.tobytes())
    h.update(val.tobytes())
    if scores is not None:
        h.update(np.asarray(scores, dtype=np.float64).tobytes())
    return h.hexdigest()


def build_model(cfg_model, tokenizer, seed: int):
    """A randomly initialised causal LM from a ``tinyhelen.models`` preset (seeded)."""
    import torch

    from tinyhelen.models import build_config, build_lm

    torch.manual_seed(seed)
    return build_lm(cfg_model.arch, build_config(cfg_model.arch, cfg_model.preset, tokenizer))


def train_run(units: Units, val: np.ndarray, strategy: str, cfg: TrainConfig, seed: int, tokenizer,
              scores: np.ndarray | None = None, *, state_path: Path | str | None = None,
              checkpoint_dir: Path | str | None = None, stop_at_step: int | None = None,
              label: str | None = None) -> dict[str, Any] | None:
    """Train one run; returns ``{"curve", "summary", "expansions", "model", "pool"}`` (pool: unit indices).

    ``units``: the pool units. ``scores``: static difficulty (low = easy), required for static scorers.
    ``stop_at_step``: stop after the evaluation at that step (simulated interruption; returns None).
    """
    import torch

    label = label or f"{strategy}-s{seed}"
    total = len(units)
    if total == 0:
        raise ValueError("no pool units")
    curriculum = strategy not in BASELINES
    if curriculum and strategy != "selfloss" and scores is None:
        raise ValueError(f"strategy {strategy!r} needs difficulty scores")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lengths = units.lengths()
    vblocks = val_blocks(val, cfg.seq_len)
    fp = fingerprint(cfg, strategy, seed, units, val, scores)

    model = build_model(cfg.model, tokenizer, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    tracker = PlateauTracker(cfg.patience, cfg.min_delta)
    sampler = Sampler()
    order = np.argsort(scores, kind="stable") if scores is not None else None
    extra: dict[str, Any] = {}
    if strategy == "full-repeated":
        sampler.fixed_blocks, extra["tokens_cut_by_packing"] = fixed_packing(
            units, rng.permutation(total), cfg.seq_len, eos)

    def expand_to(pool: list[int], size: int) -> list[int]:
        if size <= len(pool):
            return pool
        if order is not None:
            return [int(i) for i in order[:size]]
        # selfloss: score a random sample of the remaining units with the current model
        in_pool = set(pool)
        remaining = np.array([i for i in range(total) if i not in in_pool], dtype=np.int64)
        n_add = size - len(pool)
        n_cand = min(len(remaining), max(cfg.selfloss_candidates, n_add))
        cand = np.sort(rng.choice(remaining, size=n_cand, replace=False))
        losses = unit_losses(model, [units.ids(int(i)) for i in cand], eos_id=eos, pad_id=pad,
                             batch_size=cfg.batch_size)
        chosen = cand[np.argsort(losses, kind="stable")[:n_add]]
        return pool + [int(i) for i in chosen]

    state: dict[str, Any] | None = None
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, weights_only=False)
        if state.get("fingerprint") != fp:
            log.warning("%s: %s was written for other inputs; starting afresh", label, state_path)
            state = None

    t_start, cpu_start = time.time(), time.process_time()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, pool = state["step"], state["pool"]
        tracker = PlateauTracker(**state["tracker"])
        sampler.load(state["sampler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        curve, expansions = state["curve"], state["expansions"]
        train_sum, train_n, seconds0 = state["train_sum"], state["train_n"], state["seconds"]
        log.info("%s: resumed at step %d with %d/%d units in the pool", label, step, len(pool), total)
    else:
        step, train_sum, train_n, seconds0 = 0, 0.0, 0, 0.0
        pool = list(range(total)) if not curriculum else expand_to([], n_units(cfg.start_fraction, total))
        curve, expansions = [], []

    def pool_tokens() -> int:
        return int(lengths[pool].sum())

    def on_eval() -> None:
        nonlocal pool, train_sum, train_n
        loss = evaluate(model, vblocks, cfg.batch_size)
        plateau = tracker.update(loss)
        secs = seconds0 + time.time() - t_start
        curve.append({"step": step, "tokens": step * cfg.batch_size * cfg.seq_len, "val_loss": round(loss, 5),
                      "best_val_loss": round(tracker.best, 5),
                      "train_loss": round(train_sum / train_n, 5) if train_n else None,
                      "pool_units": len(pool), "pool_fraction": round(len(pool) / total, 5),
                      "pool_tokens": pool_tokens(), "lr": lr_at(max(0, step - 1), cfg), "seconds": round(secs, 2)})
        train_sum, train_n = 0.0, 0
        if curriculum and len(pool) < total and step < cfg.max_steps:  # no expansion after the last step
            size = target_size(cfg.pacing, len(pool), total, step=step, max_steps=cfg.max_steps,
                               start=cfg.start_fraction, increment=cfg.increment, full_at=cfg.full_at,
                               plateau=plateau)
            if size > len(pool):
                pool = expand_to(pool, size)
                sampler.restart()
                expansions.append({"step": step, "pool_units": len(pool), "val_loss": round(loss, 5)})
        if checkpoint_dir is not None and step in cfg.checkpoint_steps:
            model.save_pretrained(str(Path(checkpoint_dir) / f"checkpoint-{step}"))
        if state_path is not None:
            save_state()
        tps = step * cfg.batch_size * cfg.seq_len / max(secs, 1e-9)
        log.info("%s step %d/%d val_loss %.4f pool %d/%d units (%.0f tokens/s)", label, step, cfg.max_steps,
                 loss, len(pool), total, tps)

    def save_state() -> None:
        st = {"fingerprint": fp, "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
              "pool": list(pool), "tracker": tracker.state(), "sampler": sampler.state(),
              "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "curve": curve,
              "expansions": expansions, "train_sum": train_sum, "train_n": train_n,
              "seconds": seconds0 + time.time() - t_start}
        with atomic_path(state_path) as tmp:
            torch.save(st, tmp)

    if state is None:
        on_eval()
        if stop_at_step is not None and step >= stop_at_step:
            return None
    while step < cfg.max_steps:
        x = torch.as_tensor(sampler.batch(rng, pool, units, cfg.batch_size, cfg.seq_len, eos))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_sum += loss.item()
        train_n += 1
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            on_eval()
            if stop_at_step is not None and step >= stop_at_step and step < cfg.max_steps:
                return None
    secs = seconds0 + time.time() - t_start
    final = curve[-1]
    summary = {"strategy": strategy, "seed": seed, "steps": step, "tokens": step * cfg.batch_size * cfg.seq_len,
               "final_val_loss": final["val_loss"], "best_val_loss": min(r["val_loss"] for r in curve),
               "pool_fraction": final["pool_fraction"], "pool_tokens": final["pool_tokens"],
               "total_units": total, "total_tokens": int(lengths.sum()), "expansions": len(expansions),
               "seconds": round(secs, 2), "cpu_seconds_this_process": round(time.process_time() - cpu_start, 2),
               "tokens_per_s": round(final["tokens"] / max(secs, 1e-9)), **extra}
    return {"curve": curve, "summary": summary, "expansions": expansions, "model": model, "pool": list(pool)}
