"""Training throughput of each EXP1 architecture: pretraining with its objective, and classification fine-tuning.

Runs the code path of the training stages on the chosen device: the architecture's pretraining objective
built on the device from the batch (``tinyhelen.pretrain.objective_for``), bf16 autocast where the device
supports it (``pretrain.precision: auto``), optional ``torch.compile``. Per architecture it reports
pretraining tokens/s, MFU on a GPU, and the time spent preparing inputs (building the objective from a
batch of token blocks) against the model step (forward, backward, optimiser), i.e. the share of a step the
input preparation would cost without the loop's prefetching. Random token blocks with the real 2K vocabulary;
``--warmup`` steps are not timed. Examples::

    python benchmarks/bench_train.py --json                            # paper preset, CPU-sized batch
    python benchmarks/bench_train.py --preset tiny --batch 16 --seq-len 128 --threads 2
    python benchmarks/bench_train.py --json --batch 128 --seq-len 512 --steps 20 --compile   # on a GPU
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
from tinyhelen.pretrain import PretrainConfig, objective_for  # noqa: E402
from tinyhelen.tokenizer import load  # noqa: E402
from tinyhelen.train.compute import autocast, device_of, peak_tflops, set_threads, uses_bf16  # noqa: E402
from tinyhelen.train.optim import build_optimizer, lr_at  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(arch: str, preset: str, tok, cfg: PretrainConfig, steps: int, warmup: int, finetune: bool) -> dict:
    """One architecture: timed input preparation and model steps of pretraining (and fine-tuning)."""
    device = device_of(cfg)
    bf16 = uses_bf16(cfg, device)
    torch.manual_seed(0)
    model = models.build_lm(arch, models.build_config(arch, preset, tok)).to(device)
    fpt = models.flops_per_token(model, cfg.seq_len, arch)
    lr = cfg.lr[0]
    opt = build_optimizer(model, cfg, lr)
    step_fn = torch.compile(model) if cfg.compile else model
    obj = objective_for(arch, tok, cfg)
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(10, len(tok), (cfg.batch_size, cfg.seq_len), generator=gen)
    prep_s, model_s = 0.0, 0.0
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        inputs = obj({"input_ids": blocks.to(device, non_blocking=True)}, gen)
        _sync(device)
        t1 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(i, lr, warmup + steps, cfg)
        with autocast(device, bf16):
            loss = step_fn(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            prep_s, model_s = prep_s + t1 - t0, model_s + t2 - t1
    tokens = cfg.batch_size * cfg.seq_len * steps
    tps = tokens / (prep_s + model_s)
    row = {"arch": arch, "objective": models.get(arch).objective, "preset": preset, "device": str(device),
           "bf16": bf16, "batch": cfg.batch_size, "seq_len": cfg.seq_len,
           "non_embedding_params": models.non_embedding_params(model), "tokens_per_s": round(tps, 1),
           "tokens_per_s_model_only": round(tokens / model_s, 1),
           "input_prep_ms": round(1000 * prep_s / steps, 2), "model_step_ms": round(1000 * model_s / steps, 2),
           "input_share": round(prep_s / (prep_s + model_s), 4)}
    peak = peak_tflops(device, cfg.peak_tflops)
    row["mfu"] = round(fpt * tokens / model_s / (peak * 1e12), 4) if peak else None
    if finetune:  # GLUE-like batch: 32 examples of 64 tokens
        clf = models.build_classifier(arch, models.build_config(arch, preset, tok), 2).to(device)
        copt = torch.optim.AdamW(clf.parameters(), lr=1e-3)
        ids = torch.randint(10, len(tok), (32, 64), generator=gen).to(device)
        labels = torch.randint(2, (32,), generator=gen).to(device)
        secs = 0.0
        for i in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            with autocast(device, bf16):
                loss = clf(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            copt.step()
            copt.zero_grad(set_to_none=True)
            _sync(device)
            secs += time.perf_counter() - t0 if i >= warmup else 0.0
        row["finetune_seqs_per_s"] = round(32 * steps / secs, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=models.PRESETS)
    p.add_argument("--archs", nargs="+", default=models.default_arch_names(), choices=models.arch_names())
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (GPU: e.g. 128)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning figure")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list (nothing else)")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()
    set_threads(args.threads)
    cfg = PretrainConfig(batch_size=args.batch, seq_len=args.seq_len, token_budget=args.batch * args.seq_len,
                         device=args.device, compile=args.compile, threads=args.threads)
    tok = load(args.tokenizer)
    rows = []
    for arch in args.archs:
        rows.append(bench(arch, args.preset, tok, cfg, args.steps, args.warmup, not args.no_finetune))
        if not args.json:
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
