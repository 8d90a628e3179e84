"""The curriculum trainer: a causal-LM proxy trained on a growing pool of units, easiest first.

One run = one strategy x one seed with the same token budget (``max_steps * batch_size * seq_len``):

* curriculum strategies (every registered scorer of ``tinyhelen.exp3.scorers``): the pool starts
  with the easiest ``start_fraction`` of units and grows by ``pacing`` (``tinyhelen.exp3.pacing``)
  at evaluation points. Static scorers fix the order up front; an online scorer (``selfloss``) scores the
  units outside the pool (all of them, the study's, or a random sample of ``selfloss_candidates``) with the
  current model at each expansion and adds the lowest-scoring ones.
* ``full-random``: every unit from the start, reshuffled each pass.
* ``full-repeated``: every unit, packed once in a fixed (seeded) order; the same blocks in the same
  order every epoch.

Sampling inside the pool is uniform without replacement: a shuffled pass over the pool, restarted when
the pool grows. Sampled units are packed into ``seq_len`` blocks with ``<|endoftext|>`` separators (a unit
may continue into the next block). The validation loss (``ValidationLoss``) is the token-weighted mean loss
over the fixed validation set, stratified by genre, with each genre's loss logged beside it.

Training runs through ``tinyhelen.train.loop.train_loop``: ``Curriculum`` is its batch source and its callback
(pool updates at each evaluation). Resume: with ``resume_dir`` a checkpoint of the whole run (model,
optimizer, step, pool, sampler, plateau counter, random states, curve so far) is written atomically after
every evaluation; a run started with the same inputs resumes from it and yields exactly the result of an
uninterrupted run (a checkpoint whose run key does not match the inputs is ignored).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyhelen.exp3.config import TrainConfig
from tinyhelen.exp3.pacing import PlateauTracker, n_units, target_size
from tinyhelen.exp3.scorers import BASELINES, Scorer, get, inputs_for
from tinyhelen.exp3.units import Units, Validation
from tinyhelen.train import dist
from tinyhelen.train.compute import uses_bf16
from tinyhelen.train.config import ComputeConfig
from tinyhelen.train.live import TrainLog
from tinyhelen.train.loop import Callback, Cadence, LoopConfig, LoopContext, Shard, train_loop

log = logging.getLogger(__name__)

# pool_tokens: tokens of the units in the pool; seen_tokens: unique pool tokens that entered a batch so far
CURVE_COLUMNS = ["step", "tokens", "val_loss", "best_val_loss", "train_loss", "pool_units", "pool_fraction",
                 "pool_tokens", "seen_tokens", "lr"]


@dataclass
class Sampler:
    """Uniform sampling without replacement inside the pool, packed into fixed-length blocks.

    It also counts the **unique pool tokens seen**: the tokens of distinct units that have entered a
    training batch (a unit read twice counts once; ``<|endoftext|>`` separators are not data). This is the
    run's data-to-target figure, measured, not ``steps x batch``."""

    perm: list[int] = field(default_factory=list)
    pos: int = 0
    buffer: list[int] = field(default_factory=list)
    # buffered units in order: [unit index (-1: separator), tokens of it in the buffer, tokens already read]
    segments: list[list[int]] = field(default_factory=list)
    covered: dict[int, int] = field(default_factory=dict)  # unit index -> longest prefix of it ever read
    seen_tokens: int = 0
    fixed_blocks: np.ndarray | None = None  # full-repeated: the fixed packing
    fixed_data: np.ndarray | None = None  # full-repeated: data tokens in blocks 0..k (cumulative)
    block_pos: int = 0
    blocks_read: int = 0

    def restart(self) -> None:
        """The pool changed: the next unit comes from a fresh shuffled pass over the new pool."""
        self.perm, self.pos = [], 0

    def _read(self, need: int) -> None:
        """Account for the first ``need`` buffered tokens entering a batch."""
        while need:
            seg = self.segments[0]
            take = min(need, seg[1] - seg[2])
            seg[2] += take
            need -= take
            if seg[0] >= 0 and seg[2] > self.covered.get(seg[0], 0):
                self.seen_tokens += seg[2] - self.covered.get(seg[0], 0)
                self.covered[seg[0]] = seg[2]
            if seg[2] == seg[1]:
                self.segments.pop(0)

    def batch(self, rng: np.random.Generator, pool: list[int], units: Units, n: int, length: int,
              eos: int) -> np.ndarray:
        if self.fixed_blocks is not None:
            idx = (self.block_pos + np.arange(n)) % len(self.fixed_blocks)
            self.block_pos = int((self.block_pos + n) % len(self.fixed_blocks))
            self.blocks_read = min(len(self.fixed_blocks), self.blocks_read + n)
            self.seen_tokens = int(self.fixed_data[self.blocks_read - 1])
            return self.fixed_blocks[idx]
        need = n * length
        while len(self.buffer) < need:
            if self.pos >= len(self.perm):
                self.perm = [pool[i] for i in rng.permutation(len(pool))]
                self.pos = 0
            unit = self.perm[self.pos]
            ids = units.ids(unit).tolist()
            self.buffer.extend(ids)
            self.buffer.append(eos)
            self.segments += [[unit, len(ids), 0], [-1, 1, 0]]
            self.pos += 1
        out = np.asarray(self.buffer[:need], dtype=np.int64).reshape(n, length)
        del self.buffer[:need]
        self._read(need)
        return out

    def state(self) -> dict[str, Any]:
        return {"perm": list(self.perm), "pos": self.pos, "buffer": list(self.buffer),
                "segments": [list(x) for x in self.segments], "covered": dict(self.covered),
                "seen_tokens": self.seen_tokens, "block_pos": self.block_pos, "blocks_read": self.blocks_read}

    def load(self, st: dict[str, Any]) -> None:
        self.perm, self.pos, self.buffer, self.block_pos = st["perm"], st["pos"], st["buffer"], st["block_pos"]
        self.segments, self.covered = [list(x) for x in st["segments"]], dict(st["covered"])
        self.seen_tokens, self.blocks_read = st["seen_tokens"], st["blocks_read"]


def fixed_packing(units: Units, order: np.ndarray, length: int, eos: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Blocks of ``length`` tokens from the units in ``order`` (EOS-separated); returns (blocks, data tokens
    in blocks 0..k cumulatively (separators excluded), tokens cut)."""
    parts = [np.append(units.ids(i).astype(np.int64), eos) for i in order]
    stream = np.concatenate(parts)
    is_data = np.concatenate([np.append(np.ones(len(p) - 1, dtype=np.int64), 0) for p in parts])
    n = len(stream) // length
    if n == 0:
        raise ValueError(f"pool of {len(stream)} tokens is shorter than one block of {length}")
    data = np.cumsum(is_data[:n * length].reshape(n, length).sum(1))
    return stream[:n * length].reshape(n, length), data, int(len(stream) - n * length)


class ValidationLoss(Callback):
    """The evaluation function of the loop and a callback: the validation loss of the fixed validation set.

    Each genre's stream is cut into ``seq_len`` blocks (the last one shorter; a block of n tokens predicts
    n - 1). The genre's loss is the mean token cross-entropy (nats) over its predicted tokens; the overall
    loss (``val_loss``, what the pacing and the targets read) is the token-weighted mean over all of them,
    i.e. ``sum_g w_g L_g / sum_g w_g`` with ``w_g`` = the genre's predicted tokens (``weights``), as the
    study's Trainer averages its packed validation blocks. ``on_evaluation`` adds ``val_loss_<genre>``. Under
    several processes the batches are dealt among them and the sums added up."""

    def __init__(self, val: Validation, seq_len: int, batch_size: int):
        self.batch_size = batch_size
        self.blocks = {g: [x for x in (s[:len(s) - len(s) % seq_len].astype(np.int64).reshape(-1, seq_len),
                                       s[len(s) - len(s) % seq_len:].astype(np.int64)[None])
                           if x.shape[0] and x.shape[1] > 1]
                       for g, s in val.strata().items()}
        self.weights = {g: int(sum(x.shape[0] * (x.shape[1] - 1) for x in parts)) for g, parts in self.blocks.items()}
        if not all(self.weights.values()):
            raise ValueError(f"validation genres without a token to predict: {self.weights}")
        self.last: dict[str, float] = {}

    def __call__(self, model, ctx: LoopContext) -> float:
        genres = list(self.blocks)
        totals = torch.zeros(len(genres), dtype=torch.float64, device=ctx.device)
        j = 0  # the batches are dealt among the processes (``ctx.mine``), their sums added up
        for k, g in enumerate(genres):
            for x in self.blocks[g]:
                for b in range(0, len(x), self.batch_size):
                    if ctx.mine(j):
                        xb = torch.as_tensor(x[b:b + self.batch_size]).to(ctx.device)
                        totals[k] += model(input_ids=xb, labels=xb).loss.double() * xb.shape[0] * (xb.shape[1] - 1)
                    j += 1
        sums = dict(zip(genres, dist.all_sum(totals).tolist()))
        self.last = {f"val_loss_{g}": round(sums[g] / self.weights[g], 5) for g in sums if g is not None}
        return sum(sums.values()) / sum(self.weights.values())

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model) -> None:
        row.update(self.last)


def curve_columns(val: Validation) -> list[str]:
    """The columns of ``curve.tsv``: ``CURVE_COLUMNS`` and ``val_loss_<genre>`` per validation genre."""
    return CURVE_COLUMNS + [f"val_loss_{g}" for g in val.genres]


def run_key(cfg: TrainConfig, strategy: str, seed: int, units: Units, val: Validation,
            scores: np.ndarray | None) -> str:
    """The identity of a run (config, strategy, seed and the data it sees): its checkpoints resume only a run
    with the same key."""
    h = hashlib.sha256()
    h.update(json.dumps({"cfg": cfg.model_dump(), "strategy": strategy, "seed": seed, "val": val.spans},
                        sort_keys=True).encode())
    h.update(units.offsets.tobytes())
    h.update(units.tokens.tobytes())
    h.update(val.tokens.tobytes())
    if scores is not None:
        h.update(np.asarray(scores, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def proxy_config(cfg_model, tokenizer):
    """The ``transformers`` config of the proxy / reference LM: the ``tinyhelen.exp1.models`` preset of
    ``cfg_model.arch`` with ``cfg_model.shape`` set on top (the study's proxy shape by default)."""
    from tinyhelen.exp1.models import build_config

    config = build_config(cfg_model.arch, cfg_model.preset, tokenizer)
    values = config.to_dict()
    unknown = sorted(set(cfg_model.shape) - set(values))
    if unknown:
        raise ValueError(f"model.shape: {unknown} are not config values of {cfg_model.arch!r} "
                         f"({type(config).__name__})")
    if cfg_model.shape and "head_dim" in values and "head_dim" not in cfg_model.shape:
        values.pop("head_dim")  # derived from hidden_size / heads: recomputed for the new shape
    return type(config)(**{**values, **cfg_model.shape})


def build_model(cfg_model, tokenizer, seed: int):
    """A randomly initialised causal LM of ``proxy_config`` (seeded)."""
    from tinyhelen.exp1.models import build_lm

    torch.manual_seed(seed)
    return build_lm(cfg_model.arch, proxy_config(cfg_model, tokenizer))


class Curriculum(Callback):
    """The pool of one run: batch source of the training loop (uniform sampling inside the pool) and its
    callback (plateau tracking and pool growth at every evaluation, model checkpoints for GLUE)."""

    def __init__(self, units: Units, strategy: str, cfg: TrainConfig, seed: int, tokenizer,
                 scores: np.ndarray | None, checkpoint_dir: Path | str | None, compute: ComputeConfig | None = None):
        self.units, self.strategy, self.cfg, self.tokenizer = units, strategy, cfg, tokenizer
        self.total, self.lengths = len(units), units.lengths()
        self.scorer: Scorer | None = None if strategy in BASELINES else get(strategy)
        if self.scorer is not None and not self.scorer.online and scores is None:
            raise ValueError(f"strategy {strategy!r} needs difficulty scores")
        self.order = np.argsort(scores, kind="stable") if scores is not None else None
        self.checkpoint_dir = checkpoint_dir
        self.compute = compute or ComputeConfig()
        self.rng = np.random.default_rng(seed)
        self.tracker = PlateauTracker(cfg.patience, cfg.min_delta)
        self.sampler = Sampler()
        self.extra: dict[str, Any] = {}
        if strategy == "full-repeated":
            blocks, data, self.extra["tokens_cut_by_packing"] = fixed_packing(
                units, self.rng.permutation(self.total), cfg.seq_len, tokenizer.eos_token_id)
            self.sampler.fixed_blocks, self.sampler.fixed_data = blocks, data
        self.pool: list[int] = []
        self.expansions: list[dict[str, Any]] = []
        self.seen_at: dict[int, int] = {}  # step -> unique pool tokens seen once that step's batch was drawn

    # -- the pool
    def expand_to(self, size: int, model) -> None:
        if size <= len(self.pool):
            return
        if self.order is not None:
            self.pool = [int(i) for i in self.order[:size]]
            return
        # online scorer: the first pool is a shuffled prefix (an untrained model ranks nothing); then the
        # units outside the pool (all of them, or a random sample) are scored by the current model
        in_pool = set(self.pool)
        remaining = np.array([i for i in range(self.total) if i not in in_pool], dtype=np.int64)
        n_add = size - len(self.pool)
        if not self.pool:
            self.pool = [int(i) for i in self.rng.permutation(remaining)[:n_add]]
            return
        cand = remaining
        if self.cfg.selfloss_candidates is not None and len(remaining) > max(self.cfg.selfloss_candidates, n_add):
            cand = np.sort(self.rng.choice(remaining, size=max(self.cfg.selfloss_candidates, n_add), replace=False))
        chosen = None
        if dist.is_main():  # one process scores, every process gets the same pool
            device = next(model.parameters()).device
            inp = inputs_for(self.scorer, [self.units.meta[int(i)]["unit_id"] for i in cand],
                             [self.units.ids(int(i)) for i in cand], self.tokenizer, model=model,
                             batch_size=self.cfg.batch_size, bf16=uses_bf16(self.compute, device))
            chosen = [int(i) for i in cand[np.argsort(self.scorer.fn(inp), kind="stable")[:n_add]]]
        self.pool = self.pool + dist.broadcast(chosen)

    def pool_tokens(self) -> int:
        return int(self.lengths[self.pool].sum())

    # -- batch source (every process samples the global batch: the same pool state; it keeps its rows)
    def size(self, step: int) -> int:
        return self.cfg.batch_size

    def batch(self, step: int, shard: Shard = Shard()) -> dict[str, torch.Tensor]:
        blocks = self.sampler.batch(self.rng, self.pool, self.units, self.cfg.batch_size, self.cfg.seq_len,
                                    self.tokenizer.eos_token_id)
        x = torch.as_tensor(blocks[shard.rows(len(blocks))])
        self.seen_at[step + 1] = self.sampler.seen_tokens
        return {"input_ids": x, "labels": x}

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].numel())

    # -- callback
    def on_start(self, model, resumed: bool, history: list[dict[str, Any]]) -> None:
        if not resumed:
            self.pool = list(range(self.total)) if self.scorer is None else []
            self.expand_to(n_units(self.cfg.start_fraction, self.total), model)

    def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model) -> None:
        cfg, pool_before = self.cfg, len(self.pool)
        plateau = self.tracker.update(val_loss)
        seen = self.seen_at.get(step, 0)
        self.seen_at = {k: v for k, v in self.seen_at.items() if k > step}
        row.update(best_val_loss=round(self.tracker.best, 5), pool_units=pool_before,
                   pool_fraction=round(pool_before / self.total, 5), pool_tokens=self.pool_tokens(),
                   seen_tokens=seen)
        if self.scorer is not None and pool_before < self.total and step < cfg.max_steps:  # none after the end
            size = target_size(cfg.pacing, pool_before, self.total, step=step, max_steps=cfg.max_steps,
                               start=cfg.start_fraction, increment=cfg.increment, full_at=cfg.full_at,
                               plateau=plateau)
            if size > pool_before:
                self.expand_to(size, model)
                self.sampler.restart()
                self.expansions.append({"step": step, "pool_units": len(self.pool), "val_loss": round(val_loss, 5)})
        if self.checkpoint_dir is not None and step in cfg.saved_steps and dist.is_main():
            model.save_pretrained(str(Path(self.checkpoint_dir) / f"checkpoint-{step}"))
        log.info("%s step %d/%d: pool %d/%d units", self.strategy, step, cfg.max_steps, len(self.pool), self.total)

    # -- checkpoint state (saved for the batch source and for the callback: the same state, loaded twice)
    def state(self) -> dict[str, Any]:
        return {"pool": list(self.pool), "tracker": self.tracker.state(), "sampler": self.sampler.state(),
                "rng": self.rng.bit_generator.state, "expansions": list(self.expansions),
                "seen_at": dict(self.seen_at)}

    def load_state(self, st: dict[str, Any]) -> None:
        self.pool, self.expansions = list(st["pool"]), list(st["expansions"])
        self.tracker = PlateauTracker(**st["tracker"])
        self.sampler.load(st["sampler"])
        self.rng.bit_generator.state = st["rng"]
        self.seen_at = dict(st["seen_at"])


def train_run(units: Units, val: Validation | np.ndarray, strategy: str, cfg: TrainConfig, seed: int, tokenizer,
              scores: np.ndarray | None = None, *, compute: ComputeConfig | None = None,
              resume_dir: Path | str | None = None, checkpoint_dir: Path | str | None = None,
              stop_after: int | None = None, live_dir: Path | str | None = None,
              label: str | None = None) -> dict[str, Any] | None:
    """Train one run; returns ``{"curve", "summary", "expansions", "model", "pool"}`` (pool: unit indices).

    ``units``: the pool units. ``val``: the validation set (a plain token array: one unstratified stream).
    ``scores``: static difficulty (low = easy), required for static scorers.
    ``resume_dir``: checkpoints for an exact resume; ``checkpoint_dir``: model saves at
    ``cfg.saved_steps``; ``live_dir``: DVCLive log of the curve. ``stop_after``: stop after that many
    steps of this call (a simulated interruption; returns None unless the run is complete). Wall-clock
    figures go to ``tinyhelen.timing``."""
    from tinyhelen import timing

    label = label or f"{strategy}-s{seed}"
    if len(units) == 0:
        raise ValueError("no pool units")
    val = val if isinstance(val, Validation) else Validation.of(val)
    curriculum = Curriculum(units, strategy, cfg, seed, tokenizer, scores, checkpoint_dir, compute)
    evaluate = ValidationLoss(val, cfg.seq_len, cfg.batch_size)
    model = build_model(cfg.model, tokenizer, seed)
    loop = LoopConfig(optim=cfg, compute=compute or ComputeConfig(), lr=cfg.lr, steps=cfg.max_steps,
                      cadence=Cadence(cfg.eval_every, cfg.eval_every, cfg.eval_every), ckpt_dir=resume_dir,
                      run_key=run_key(cfg, strategy, seed, units, val, scores), stop_after=stop_after, desc=label)
    res = train_loop(model, curriculum, loop, evaluate=evaluate,
                     callbacks=[curriculum, evaluate, *([TrainLog(live_dir)] if live_dir is not None else [])])
    timing.record(**res.timing)
    if not res.finished:
        return None
    curve = [{k: r.get(k) for k in curve_columns(val)} for r in res.history]
    final = curve[-1]
    summary = {"strategy": strategy, "seed": seed, "steps": final["step"], "tokens": final["tokens"],
               "final_val_loss": final["val_loss"], "best_val_loss": min(r["val_loss"] for r in curve),
               "pool_fraction": final["pool_fraction"], "pool_tokens": final["pool_tokens"],
               "seen_tokens": final["seen_tokens"],
               "total_units": curriculum.total, "total_tokens": int(curriculum.lengths.sum()),
               "expansions": len(curriculum.expansions), **curriculum.extra,
               # predicted validation tokens per genre: val_loss = sum_g w_g val_loss_<g> / sum_g w_g
               **({"val_weights": evaluate.weights} if val.genres else {})}
    return {"curve": curve, "summary": summary, "expansions": curriculum.expansions, "model": res.model,
            "pool": list(curriculum.pool)}
