"""Training throughput of each architecture (pretraining objective and classification fine-tuning).

Used to size the CPU defaults of EXP1 (``pretrain.token_budget``, ``glue.*``). Random token blocks with the
real 2K vocabulary; a few warm-up steps are not timed. Example::

    python benchmarks/bench_train.py --preset tiny --steps 10 --threads 2
    python benchmarks/bench_train.py --preset paper --batch 128 --seq-len 512   # on a GPU

Prints one row per arch: pretraining tokens/s, fine-tuning sequences/s (and MFU on GPU) and writes the
rows as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tinyhelen  # noqa: E402,F401  (pins the CPU math kernels before torch loads)
import torch  # noqa: E402

from tinyhelen import models  # noqa: E402
from tinyhelen.pretrain import PretrainConfig  # noqa: E402
from tinyhelen.tokenizer import load  # noqa: E402
from tinyhelen.train.compute import peak_tflops  # noqa: E402
from tinyhelen.train.objectives import make_objective  # noqa: E402
from tinyhelen.train.optim import build_optimizer, lr_at  # noqa: E402


def bench(arch: str, preset: str, tok, batch: int, seq_len: int, steps: int, warmup: int,
          device: torch.device, bf16: bool) -> dict:
    torch.manual_seed(0)
    cfg = PretrainConfig(batch_size=batch, seq_len=seq_len, token_budget=batch * seq_len * 100)
    model = models.build_lm(arch, models.build_config(arch, preset, tok)).to(device)
    opt = build_optimizer(model, cfg, cfg.lr)
    obj = make_objective(models.get(arch).objective, tok, cfg)
    step = [0]
    gen = torch.Generator().manual_seed(0)
    vocab = len(tok)

    def step_lm() -> None:
        for group in opt.param_groups:
            group["lr"] = lr_at(step[0], cfg.lr, 100, cfg)
        step[0] += 1
        ids = torch.randint(10, vocab, (batch, seq_len), generator=gen)
        inputs = {k: v.to(device) for k, v in obj({"input_ids": ids}, gen).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(fn, n) -> float:
        for _ in range(warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    secs = timed(step_lm, steps)
    tps = batch * seq_len * steps / secs
    row = {"arch": arch, "preset": preset, "non_embedding_params": models.non_embedding_params(model),
           "pretrain_tokens_per_s": round(tps, 1), "pretrain_step_s": round(secs / steps, 4)}
    peak = peak_tflops(device)
    if peak:
        row["mfu"] = round(models.flops_per_token(model, seq_len, arch) * tps / (peak * 1e12), 4)

    # classification fine-tuning: GLUE-like batch (32 pairs of ~64 tokens)
    clf = models.build_classifier(arch, models.build_config(arch, preset, tok), 2).to(device)
    copt = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    cb, cl = 32, 64

    def step_clf() -> None:
        ids = torch.randint(10, vocab, (cb, cl), generator=gen).to(device)
        labels = torch.randint(2, (cb,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = clf(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        copt.step()
        copt.zero_grad(set_to_none=True)

    secs = timed(step_clf, steps)
    row["finetune_seqs_per_s"] = round(cb * steps / secs, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=models.PRESETS)
    p.add_argument("--archs", nargs="+", default=models.arch_names(), choices=models.arch_names())
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    tok = load(args.tokenizer)
    rows = []
    print(f"device={device} threads={torch.get_num_threads()} bf16={bf16} batch={args.batch} "
          f"seq_len={args.seq_len}")
    for arch in args.archs:
        row = bench(arch, args.preset, tok, args.batch, args.seq_len, args.steps, args.warmup, device, bf16)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
