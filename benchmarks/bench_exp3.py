"""CPU cost of EXP3's pieces, measured as process CPU time (``time.process_time``) so that a shared machine
does not distort it: one training step of the proxy (the study's shape, ~1.05M non-embedding parameters;
forward, backward, AdamW, through the stages' training loop) per batch size x sequence length, and forward-only scoring (``selfloss`` /
``lmloss``: ``unit_losses``) per 1,000 tokens, and with ``--run-steps N`` whole runs (``train_run``: sampling,
evaluation every 20 steps, pool growth, ``selfloss`` rescoring) on a synthetic pool of random documents.
Used to size the CPU default and the ``cpu-study`` profile.

    python benchmarks/bench_exp3.py --threads 1 --steps 6 --out reports/timings/bench_exp3.json
    python benchmarks/bench_exp3.py --shapes 4x128 --run-steps 200 --pool-tokens 150000

Random token blocks over the 2K vocabulary; the first two steps of each shape are not timed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tinyhelen  # noqa: E402,F401  (pins the CPU math kernels before torch loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tinyhelen.exp3.config import ModelConfig, TrainConfig, UnitsConfig  # noqa: E402
from tinyhelen.exp3.scorers import unit_losses  # noqa: E402
from tinyhelen.exp3.curriculum import build_model  # noqa: E402
from tinyhelen.train.config import ComputeConfig  # noqa: E402
from tinyhelen.train.loop import Cadence, LoopConfig, train_loop  # noqa: E402


class VocabOnly:
    """What building the proxy needs of a tokenizer: the 2K vocabulary and the special ids."""

    pad_token_id = eos_token_id = bos_token_id = 0
    cls_token_id, sep_token_id, mask_token_id = 1, 2, 3

    def __len__(self) -> int:
        return 2000


class RandomBlocks:
    """Batch source of random token blocks over the 2K vocabulary (what the proxy's step costs does not depend
    on the tokens)."""

    def __init__(self, batch: int, seq_len: int):
        self.batch_size, self.seq_len, self.gen = batch, seq_len, torch.Generator().manual_seed(0)

    def batch(self, step: int) -> dict:
        x = torch.randint(4, 2000, (self.batch_size, self.seq_len), generator=self.gen)
        return {"input_ids": x, "labels": x}

    def tokens(self, batch: dict) -> int:
        return self.batch_size * self.seq_len

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def train_step_cpu_s(batch: int, seq_len: int, steps: int) -> float:
    """CPU seconds per training step of the proxy, through the training loop the stages use (two untimed
    warm-up steps first)."""
    model = build_model(ModelConfig(), VocabOnly(), 0)
    cfg = TrainConfig(batch_size=batch, seq_len=seq_len)
    compute = ComputeConfig(device="cpu", threads=torch.get_num_threads())
    source = RandomBlocks(batch, seq_len)

    def run(n: int) -> float:
        loop = LoopConfig(optim=cfg, compute=compute, lr=cfg.lr, steps=n, progress=False,
                          cadence=Cadence(n, n, n, eval_at_start=False))
        t0 = time.process_time()
        train_loop(model, source, loop)
        return time.process_time() - t0

    run(2)
    return run(steps) / steps


def score_cpu_s_per_ktok(unit_len: int, n_units: int, batch: int) -> float:
    model = build_model(ModelConfig(), VocabOnly(), 0)
    rng = np.random.default_rng(0)
    units = [rng.integers(4, 2000, size=int(n)) for n in rng.integers(unit_len // 2, unit_len * 3 // 2, n_units)]
    t0 = time.process_time()
    unit_losses(model, units, eos_id=0, pad_id=0, batch_size=batch)
    return (time.process_time() - t0) / (sum(len(u) for u in units) / 1000)


def run_cpu_s(strategy: str, batch: int, seq_len: int, steps: int, pool_tokens: int) -> dict:
    """CPU seconds of one whole run on random documents (lengths as skewed as real ones)."""
    from tinyhelen.exp3.curriculum import train_run
    from tinyhelen.exp3.units import Units

    rng = np.random.default_rng(0)
    lens = []
    while sum(lens) < pool_tokens:
        lens.append(int(min(rng.lognormal(5.5, 1.0), 4000)) + 1)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    units = Units(rng.integers(4, 2000, offsets[-1]).astype(np.uint16), offsets,
                  [{"unit_id": f"d{i}:0"} for i in range(len(lens))])
    val = rng.integers(4, 2000, UnitsConfig().val_tokens)  # the default validation size
    cfg = TrainConfig(max_steps=steps, batch_size=batch, seq_len=seq_len, checkpoints=0)
    scores = None if strategy in ("full-random", "selfloss") else rng.random(len(lens))
    t0 = time.process_time()
    res = train_run(units, val, strategy, cfg, 0, VocabOnly(), scores,
                    compute=ComputeConfig(device="cpu", threads=torch.get_num_threads()))
    secs = time.process_time() - t0
    return {"what": "run", "strategy": strategy, "batch": batch, "seq_len": seq_len, "steps": steps,
            "pool_tokens": int(offsets[-1]), "units": len(lens), "expansions": len(res["expansions"]),
            "cpu_s": round(secs, 2), "cpu_s_per_step": round(secs / steps, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--shapes", default="4x128,8x128,16x128,8x256,16x256,4x512,8x512,2x1024,4x1024",
                    help="batch x seq_len pairs")
    ap.add_argument("--run-steps", type=int, default=0, help="also time whole runs of this many steps")
    ap.add_argument("--pool-tokens", type=int, default=150_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes.split(",") if args.steps else ():
        b, n = map(int, shape.split("x"))
        s = train_step_cpu_s(b, n, args.steps)
        rows.append({"what": "train step", "batch": b, "seq_len": n, "cpu_s": round(s, 4),
                     "tokens_per_cpu_s": round(b * n / s)})
        print(json.dumps(rows[-1]), flush=True)
    for unit_len in (256, 1024) if args.steps else ():
        s = score_cpu_s_per_ktok(unit_len, 64, 8)
        rows.append({"what": "score (forward)", "unit_len": unit_len, "cpu_s_per_1k_tokens": round(s, 4)})
        print(json.dumps(rows[-1]), flush=True)
    if args.run_steps:
        b, n = map(int, args.shapes.split(",")[0].split("x"))
        for strategy in ("full-random", "random", "lmloss", "selfloss"):
            rows.append(run_cpu_s(strategy, b, n, args.run_steps, args.pool_tokens))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
