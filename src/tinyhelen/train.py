"""Generic, resumable (pre)training loop and the EXP1 pretraining objectives.

What is here (reused by the instruction-tuning and curriculum components):

- ``TrainLoopConfig``: optimiser/schedule/logging knobs of any run (subclass it for your own section);
  ``PretrainConfig`` adds the pretraining data/objective knobs (``pretrain:`` in params.yaml).
- ``tokenize_docs`` / ``pack``: documents -> one token stream (``<eos>`` between documents) -> fixed-length
  blocks ("packed sequences"); ``even_blocks`` takes an evenly spread subset (validation).
- Objectives (``make_objective``): turn a batch of blocks into model inputs + labels, deterministically
  from ``(seed, step)``: causal LM (LLaMA, Mamba), masked LM (BERT: 15%, 80/10/10) and permutation LM
  (XLNet: span masking + factorisation-order ``perm_mask`` and a ``target_mapping`` over the predicted
  positions only, as in the XLNet paper).
- ``train_loop``: AdamW, linear warmup then cosine/linear decay, gradient clipping, gradient accumulation,
  bf16 autocast on GPU (``precision: auto``), optional ``torch.compile``, multi-GPU through ``accelerate``
  (``accelerate launch`` / ``torchrun`` run the same code; every rank takes its slice of each global batch,
  so data order and the number of tokens do not depend on the number of processes), tqdm with tokens/s,
  model FLOPs utilisation on GPU, train/validation loss history, and checkpoints that resume exactly
  (model, optimizer, scheduler, RNG states and data position = step; a run resumed from a checkpoint
  gives the same weights as an uninterrupted one, bitwise on CPU).

Data order: the blocks of epoch ``e`` are visited in the order ``randperm(N, seed=(seed, e))``; global step
``s`` takes stream positions ``[s*B, (s+1)*B)``. Nothing else decides which data a step sees.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from tinyhelen.config import Section
from tinyhelen.io import atomic_path, write_json, write_tsv

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Objective = Callable[[Batch, torch.Generator], Batch]


# --------------------------------------------------------------------------------------------- config
class TrainLoopConfig(Section):
    """Optimisation and bookkeeping of one training run (any objective)."""

    batch_size: int = Field(32, ge=1, description="sequences per optimizer step (global, all processes)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step and process")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.98, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="fraction of steps with linear warmup")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr / peak lr (cosine, linear)")
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU that supports it, fp32 otherwise")
    compile: bool = Field(False, description="torch.compile the model (GPU runs)")
    log_every: int = Field(10, ge=1, description="steps between train-loss log rows")
    eval_every: int = Field(100, ge=1, description="steps between validation-loss evaluations")
    checkpoint_every: int = Field(200, ge=1, description="steps between resumable checkpoints")
    keep_checkpoints: int = Field(1, ge=1)
    peak_tflops: float | None = Field(
        None, gt=0, description="accelerator peak TFLOP/s for MFU; null: looked up from the GPU name")


class PretrainConfig(TrainLoopConfig):
    """``pretrain:`` section: one pretraining run per arch x corpus side, all with the same token budget."""

    token_budget: int = Field(600_000, ge=1, description="training tokens seen by every run (equal for all)")
    seq_len: int = Field(128, ge=8, description="packed block length (even, XLNet's perm mask needs it)")
    max_train_docs: int | None = Field(None, ge=1, description="null: all training documents")
    eval_tokens: int = Field(32_768, ge=0, description="validation tokens scored at each evaluation")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    plm_probability: float = Field(1 / 6, gt=0, lt=1)
    plm_max_span: int = Field(5, ge=1)

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
            g = torch.Generator().manual_seed(_mix(seed, "epoch", epoch))
            cache[epoch] = torch.randperm(n, generator=g)
        take = min(end - pos, n - off)
        out.append(cache[epoch][off:off + take])
        pos += take
    return torch.cat(out)


def _mix(*parts: Any) -> int:
    """A 63-bit seed derived from any parts (stable across runs and platforms)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------- objectives
def clm_objective(pad_id: int | None = None) -> Objective:
    """Causal LM: labels = input ids (``labels`` in the batch win, e.g. prompt tokens set to -100)."""

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        labels = batch.get("labels")
        if labels is None:
            labels = ids.clone()
            if pad_id is not None:
                labels[ids == pad_id] = -100
        out = {"input_ids": ids, "labels": labels}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"]
        return out

    return fn


def mlm_objective(tokenizer: Any, probability: float = 0.15) -> Objective:
    """BERT masked LM: ``probability`` of the non-special tokens are predicted; of those 80% become
    ``<mask>``, 10% a random token, 10% stay."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"].clone()
        labels = ids.clone()
        prob = torch.full(ids.shape, probability)
        prob[torch.isin(ids, special)] = 0.0
        picked = torch.bernoulli(prob, generator=gen).bool()
        labels[~picked] = -100
        r = torch.rand(ids.shape, generator=gen)
        ids[picked & (r < 0.8)] = mask_id
        rand_pos = picked & (r >= 0.8) & (r < 0.9)
        ids[rand_pos] = torch.randint(vocab, ids.shape, generator=gen)[rand_pos]
        out = {"input_ids": ids, "labels": labels}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"]
        return out

    return fn


def plm_objective(tokenizer: Any, probability: float = 1 / 6, max_span: int = 5) -> Objective:
    """XLNet permutation LM (the span sampling and leakage-free ``perm_mask`` of transformers'
    ``DataCollatorForPermutationLanguageModeling``), predicting only the sampled spans: ``target_mapping``
    is ``(B, K, L)`` over the K predicted positions (rows padded with zeros / label -100), so the query
    stream costs K/L of the full sequence. Inputs are not replaced by ``<mask>``: the permutation mask
    alone hides targets."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        b, length = ids.shape
        if length % 2:
            raise ValueError("permutation LM needs an even sequence length")
        masked = torch.zeros(b, length, dtype=torch.bool)
        for i in range(b):
            cur = 0
            while cur < length:
                span = int(torch.randint(1, max_span + 1, (1,), generator=gen))
                ctx = int(span / probability)
                start = cur + int(torch.randint(ctx - span + 1, (1,), generator=gen))
                masked[i, start:start + span] = True
                cur += ctx
        func = torch.isin(ids, special)  # functional tokens (<eos> between documents)
        masked &= ~func
        non_func = ~func
        perm_mask = torch.zeros(b, length, length)
        half = length // 2
        for i in range(b):
            order = torch.arange(length).reshape(-1, half).transpose(0, 1)
            order = order[torch.randperm(half, generator=gen)]
            order = order.transpose(0, 1).flatten()
            order = order.masked_fill(~masked[i] & non_func[i], -1)
            perm_mask[i] = ((order.view(-1, 1) <= order.view(1, -1)) & masked[i]).float()
        k = max(1, int(masked.sum(1).max()))
        target_mapping = torch.zeros(b, k, length)
        labels = torch.full((b, k), -100, dtype=torch.long)
        for i in range(b):
            pos = masked[i].nonzero().flatten()
            target_mapping[i, torch.arange(len(pos)), pos] = 1.0
            labels[i, : len(pos)] = ids[i, pos]
        return {"input_ids": ids, "perm_mask": perm_mask, "target_mapping": target_mapping, "labels": labels}

    return fn


def make_objective(arch: str, tokenizer: Any, cfg: PretrainConfig) -> Objective:
    from tinyhelen.models import OBJECTIVE

    kind = OBJECTIVE[arch]
    if kind == "mlm":
        return mlm_objective(tokenizer, cfg.mlm_probability)
    if kind == "plm":
        return plm_objective(tokenizer, cfg.plm_probability, cfg.plm_max_span)
    return clm_objective()


# --------------------------------------------------------------------------------------- LR schedule
def lr_lambda(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup, then cosine/linear decay."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1 - frac
    return min_ratio + (1 - min_ratio) * decay


def make_optimizer(model: torch.nn.Module, cfg: TrainLoopConfig, total_steps: int):
    """AdamW (no weight decay on biases, norms and embeddings) + LambdaLR warmup/decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed" in name.lower() or "norm" in name.lower() else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio))
    return opt, sched


# ---------------------------------------------------------------------------------------------- MFU
_PEAK_BF16_TFLOPS = {  # dense bf16 tensor-core peak per GPU
    "H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "A100": 312.0, "A800": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "A6000": 155.0,
    "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in _PEAK_BF16_TFLOPS.items():
        if key in name:
            if key == "H100" and "PCIe" in name:
                return 756.0
            return val
    log.warning("unknown GPU %r: set peak_tflops to report model FLOPs utilisation", name)
    return None


# ---------------------------------------------------------------------------------------- the loop
def _fingerprint(cfg: TrainLoopConfig, extra: dict[str, Any]) -> str:
    payload = json.dumps({"cfg": cfg.model_dump(exclude={"log_every", "eval_every", "checkpoint_every",
                                                         "keep_checkpoints", "peak_tflops", "compile"}),
                          **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def latest_checkpoint(ckpt_dir: Path, fingerprint: str | None = None) -> Path | None:
    """Newest complete checkpoint under ``ckpt_dir`` (optionally only one with the given fingerprint)."""
    if not ckpt_dir.is_dir():
        return None
    for d in sorted(ckpt_dir.glob("step-*"), reverse=True):
        state = d / "state.json"
        if not state.exists():
            continue
        if fingerprint and json.loads(state.read_text()).get("fingerprint") != fingerprint:
            log.warning("%s: checkpoint of a different configuration; not resuming from it", d)
            continue
        return d
    return None


def _rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _split(batch: Batch, parts: int) -> list[Batch]:
    n = next(iter(batch.values())).shape[0]
    size = math.ceil(n / parts)
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]


def train_loop(model: torch.nn.Module, train: Batch, cfg: TrainLoopConfig, *, steps: int, seed: int,
               objective: Objective, out_dir: Path | str, val: Batch | None = None,
               flops_per_token: float | None = None, resume: bool = True,
               stop_after: int | None = None, fingerprint_extra: dict[str, Any] | None = None,
               desc: str = "train") -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimizer steps of ``cfg.batch_size`` rows of ``train``.

    ``train``/``val``: dicts of equally long tensors (at least ``input_ids``; ``labels``/``attention_mask``
    optional), one row per sequence. ``objective(batch, generator)`` turns rows into model kwargs incl.
    ``labels``; its generator is seeded from ``(seed, step)``, so masks do not depend on resuming.
    Resumable checkpoints go to ``out_dir/checkpoints/step-NNNNNNN`` (model, optimizer, scheduler, RNG
    states per process, step = data position, loss history). With ``resume`` the newest checkpoint of the
    same configuration is continued. ``stop_after`` ends early after that many steps (tests, time limits)
    with a checkpoint written. Returns ``{"history": [...], "final": {...}}``; the caller saves the model.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    n_rows = int(train["input_ids"].shape[0])
    use_cuda = torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda and torch.cuda.is_bf16_supported())
    acc = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not use_cuda)
    world, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum "
                         f"({world} x {cfg.grad_accum})")
    fp = _fingerprint(cfg, {"steps": steps, "seed": seed, "rows": n_rows, **(fingerprint_extra or {})})

    opt, sched = make_optimizer(model, cfg, steps)
    start, history, tokens_seen = 0, [], 0
    ck = latest_checkpoint(ckpt_dir, fp) if resume else None
    if ck is not None:
        model.load_state_dict(torch.load(ck / "model.pt", map_location="cpu", weights_only=True))
        opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=False))
        sched.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=False))
        state = json.loads((ck / "state.json").read_text())
        start, history, tokens_seen = state["step"], state["history"], state["tokens_seen"]
        rng_file = ck / f"rng_{rank}.pt"
        if rng_file.exists():
            _set_rng_state(torch.load(rng_file, weights_only=False))
        log.info("%s: resumed from %s (step %d/%d)", desc, ck, start, steps)
    if cfg.compile:
        model = torch.compile(model)
    model, opt = acc.prepare(model, opt)
    peak = peak_tflops(acc.device, cfg.peak_tflops)

    def save_checkpoint(step: int) -> None:
        acc.wait_for_everyone()
        target = ckpt_dir / f"step-{step:07d}"
        if acc.is_main_process:
            with atomic_path(target) as tmp:
                tmp.mkdir(parents=True)
                unwrapped = acc.unwrap_model(model)
                unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # torch.compile wrapper
                torch.save(unwrapped.state_dict(), tmp / "model.pt")  # tied tensors stay tied
                torch.save(opt.state_dict(), tmp / "optimizer.pt")
                torch.save(sched.state_dict(), tmp / "scheduler.pt")
                torch.save(_rng_state(), tmp / "rng_0.pt")
                (tmp / "state.json").write_text(json.dumps(
                    {"step": step, "tokens_seen": tokens_seen, "fingerprint": fp, "history": history}))
        acc.wait_for_everyone()
        if not acc.is_main_process:  # other ranks add their RNG state to the finished checkpoint
            torch.save(_rng_state(), target / f"rng_{rank}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            old = sorted(ckpt_dir.glob("step-*"))[:-cfg.keep_checkpoints]
            for d in old:
                shutil.rmtree(d, ignore_errors=True)

    def evaluate(step: int) -> float | None:
        if val is None:
            return None
        model.eval()
        n_val = int(val["input_ids"].shape[0])
        tot, cnt = torch.zeros((), device=acc.device), torch.zeros((), device=acc.device)
        gen = torch.Generator().manual_seed(_mix(seed, "eval"))  # same masks at every evaluation
        per = cfg.batch_size // cfg.grad_accum
        with torch.no_grad():
            for i in range(0, n_val, per):
                rows = {k: v[i:i + per] for k, v in val.items()}
                inputs = objective(rows, gen)
                if (i // per) % world != rank:
                    continue
                inputs = {k: v.to(acc.device) for k, v in inputs.items()}
                with acc.autocast():
                    loss = model(**inputs).loss
                tot += loss.float()
                cnt += 1
        tot, cnt = acc.reduce(tot, "sum"), acc.reduce(cnt, "sum")
        model.train()
        return float(tot / cnt) if float(cnt) else None

    model.train()
    tokens_per_step = cfg.batch_size * int(train["input_ids"].shape[1])
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not acc.is_main_process, unit="step",
               dynamic_ncols=True, mininterval=2.0)
    t_window, tok_window, loss_window = time.perf_counter(), 0, []
    t_start, tok_start = time.perf_counter(), tokens_seen
    end = steps if stop_after is None else min(steps, start + stop_after)
    if start == 0 and val is not None and not history:
        history.append({"step": 0, "tokens": 0, "train_loss": None, "val_loss": evaluate(0),
                        "lr": sched.get_last_lr()[0], "tokens_per_s": None, "mfu": None})
    for step in range(start, end):
        idx = stream_indices(step, cfg.batch_size, n_rows, seed)
        gen = torch.Generator().manual_seed(_mix(seed, "step", step))
        inputs = objective({k: v[idx] for k, v in train.items()}, gen)
        mine = {k: v[rank::world] for k, v in inputs.items()}  # this process's slice
        micro = _split(mine, cfg.grad_accum)
        step_loss = 0.0
        for j, mb in enumerate(micro):
            mb = {k: v.to(acc.device, non_blocking=True) for k, v in mb.items()}
            sync = j == len(micro) - 1
            ctx = acc.no_sync(model) if not sync and world > 1 else _null()
            with ctx:
                loss = model(**mb).loss
                acc.backward(loss / len(micro))
            step_loss += float(loss.detach()) / len(micro)
        acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr_now = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens_seen += tokens_per_step
        tok_window += tokens_per_step
        loss_window.append(step_loss)
        done = step + 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == steps or done % cfg.eval_every == 0:
            if use_cuda:
                torch.cuda.synchronize()
            secs = max(time.perf_counter() - t_window, 1e-9)
            tps = tok_window / secs
            mean_loss = acc.reduce(torch.tensor(float(np.mean(loss_window)), device=acc.device), "mean")
            mfu = (flops_per_token * tps / (peak * 1e12)) if (peak and flops_per_token) else None
            row = {"step": done, "tokens": tokens_seen, "train_loss": round(float(mean_loss), 5),
                   "val_loss": None, "lr": lr_now, "tokens_per_s": round(tps, 1),
                   "mfu": round(mfu, 4) if mfu is not None else None}
            if done % cfg.eval_every == 0 or done == steps:
                row["val_loss"] = evaluate(done)
                row["val_loss"] = round(row["val_loss"], 5) if row["val_loss"] is not None else None
            history.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{tps:,.0f}",
                            **({"mfu": f"{mfu:.1%}"} if mfu is not None else {}))
            t_window, tok_window, loss_window = time.perf_counter(), 0, []
        if done % cfg.checkpoint_every == 0 or done == end:
            save_checkpoint(done)
    bar.close()
    secs = time.perf_counter() - t_start
    tps = (tokens_seen - tok_start) / max(secs, 1e-9)
    final = {"steps": end, "steps_planned": steps, "tokens_seen": tokens_seen, "seconds": round(secs, 2),
             "tokens_per_s": round(tps, 1), "processes": world, "bf16": bf16, "device": str(acc.device)}
    if peak and flops_per_token:
        final["mfu"] = round(flops_per_token * tps / (peak * 1e12), 4)
    trained = [r for r in history if r["train_loss"] is not None]
    final["train_loss"] = trained[-1]["train_loss"] if trained else None
    vals = [r for r in history if r["val_loss"] is not None]
    final["val_loss"] = vals[-1]["val_loss"] if vals else None
    log.info("%s: %s", desc, final)
    unwrapped = acc.unwrap_model(model)
    return {"history": history, "final": final, "model": getattr(unwrapped, "_orig_mod", unwrapped),
            "accelerator": acc}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- EXP1 pretraining run
HISTORY_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu"]


def pretrain(arch: str, preset: str, corpus_dir: Path | str, tokenizer_dir: Path | str,
             out_dir: Path | str, cfg: PretrainConfig, seed: int, *, resume: bool = True,
             stop_after: int | None = None, name: str | None = None) -> dict[str, Any]:
    """One EXP1 pretraining run: ``corpus_dir/{train,validation}.jsonl`` tokenised with ``tokenizer_dir``,
    packed into ``cfg.seq_len`` blocks, trained for exactly ``cfg.tokens_per_run`` tokens.

    Writes ``out_dir/final/`` (``save_pretrained`` model + tokenizer files) on the main process and
    returns ``{"final": metrics, "history": rows}``. Checkpoints: ``out_dir/checkpoints/``."""
    from tinyhelen import models
    from tinyhelen.data import read_docs
    from tinyhelen.tokenizer import load as load_tokenizer

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    name = name or out_dir.name
    tok = load_tokenizer(tokenizer_dir)
    t0 = time.perf_counter()
    docs = (r["text"] for i, r in enumerate(read_docs(corpus_dir / "train.jsonl"))
            if cfg.max_train_docs is None or i < cfg.max_train_docs)
    train_blocks = pack(tokenize_docs(docs, tok), cfg.seq_len)
    val_stream = tokenize_docs((r["text"] for r in read_docs(corpus_dir / "validation.jsonl")), tok)
    val_blocks = even_blocks(pack(val_stream, cfg.seq_len), cfg.eval_tokens) if cfg.eval_tokens else None
    log.info("%s: %d train blocks (%d tokens), %d val blocks, tokenised in %.1fs", name, len(train_blocks), train_blocks.numel(),
             0 if val_blocks is None else len(val_blocks), time.perf_counter() - t0)

    torch.manual_seed(_mix(seed, "init", arch) % (2**31))
    config = models.build_config(arch, preset, tok)
    model = models.build_lm(arch, config)
    fpt = models.flops_per_token(model, cfg.seq_len, arch)
    res = train_loop(model, {"input_ids": train_blocks}, cfg, steps=cfg.steps, seed=seed,
                     objective=make_objective(arch, tok, cfg), out_dir=out_dir,
                     val=None if val_blocks is None else {"input_ids": val_blocks},
                     flops_per_token=fpt, resume=resume, stop_after=stop_after,
                     fingerprint_extra={"arch": arch, "preset": preset, "corpus": str(corpus_dir),
                                        "train_tokens": int(train_blocks.numel())},
                     desc=f"pretrain {name}")
    final = res["final"]
    if final["steps"] == cfg.steps:
        # the equal-budget guarantee of EXP1: every run sees exactly tokens_per_run tokens
        assert final["tokens_seen"] == cfg.tokens_per_run, (final["tokens_seen"], cfg.tokens_per_run)
    final.update({"arch": arch, "preset": preset, "non_embedding_params": models.non_embedding_params(model),
                  "params": models.total_params(model), "train_blocks": int(len(train_blocks)),
                  "train_epochs": round(cfg.tokens_per_run / train_blocks.numel(), 3),
                  "flops_per_token": fpt})
    acc = res["accelerator"]
    if acc.is_main_process and final["steps"] == cfg.steps:
        with atomic_path(out_dir / "final") as tmp:
            res["model"].save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            write_json(tmp / "train_info.json", final)
    acc.wait_for_everyone()
    return {"final": final, "history": res["history"]}


def write_history(path: Path | str, history: list[dict[str, Any]]) -> None:
    write_tsv(path, history, HISTORY_COLUMNS)


def set_threads() -> None:
    """``TINYHELEN_THREADS`` (if set) fixes torch's intra-op threads (the test suite uses 1); flush denormals."""
    n = os.environ.get("TINYHELEN_THREADS")
    if n:
        torch.set_num_threads(int(n))
    torch.set_flush_denormal(True)  # Mamba's decaying scan states hit denormals: 10x slower CPU math
