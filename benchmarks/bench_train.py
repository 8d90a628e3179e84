"""Training throughput of each EXP1 architecture: pretraining with its objective, and classification fine-tuning.

Runs the code the training stages run: ``tinyhelen.train.loop.train_loop`` over pretraining's ``BlockSource``
(the architecture's objective built from a batch of token blocks, ``tinyhelen.exp1.pretrain``) and over GLUE's
``ExampleBatches`` (``tinyhelen.exp1.glue``), on the chosen device, bf16 autocast where the device supports it
(``pretrain.precision: auto``), optional ``torch.compile``. Per architecture it reports pretraining tokens/s,
MFU on a GPU, and the time spent preparing inputs (the batch source, with the loop's prefetching switched
off so that it is measured) against the rest of the step (forward, backward, optimiser), i.e. the share of a
step the input preparation would cost without prefetching, and the CPU seconds per step (``cpu_s_per_step``,
``cpu_tokens_per_s``: with ``--threads 1`` the latency of a step on an idle core even when other jobs share the
machine; ``python -m tinyhelen.profiles estimate`` reads them from ``benchmarks/results/``). Random token blocks
with the real 2K vocabulary;
``--warmup`` steps run first in a separate call and are not timed. Examples::

    python benchmarks/bench_train.py --json                            # paper preset, CPU-sized batch
    python benchmarks/bench_train.py --preset tiny --batch 16 --seq-len 128 --threads 2
    python benchmarks/bench_train.py --json --batch 128 --seq-len 512 --steps 20 --compile   # on a GPU
    # the CPU figures of `python -m tinyhelen.profiles estimate` (one thread, CPU seconds per step):
    python benchmarks/bench_train.py --preset tiny --batch 16 --seq-len 128 --threads 1 --steps 6 --warmup 2 \
        --out benchmarks/results/train_cpu_tiny.json
    python benchmarks/bench_train.py --preset paper --batch 4 --seq-len 512 --threads 1 --steps 2 --warmup 1 \
        --out benchmarks/results/train_cpu_paper.json
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

from tinyhelen.exp1 import models  # noqa: E402
from tinyhelen.exp1.glue import ExampleBatches, GlueConfig  # noqa: E402
from tinyhelen.exp1.pretrain import BlockSource, PretrainConfig, objective_for  # noqa: E402
from tinyhelen.tokenizer import load  # noqa: E402
from tinyhelen.train.compute import device_of, set_threads, uses_bf16  # noqa: E402
from tinyhelen.train.loop import Cadence, LoopConfig, train_loop  # noqa: E402


def timed(model: torch.nn.Module, source, section, steps: int, warmup: int, **kw) -> dict:
    """``train_loop`` over ``source``: ``warmup`` steps (not timed), then ``steps`` timed ones; the loop's
    wall-clock figures and ``cpu_s``, the CPU seconds of this process (threads included) per step: on a machine
    other jobs share it is the latency the step would have alone with one thread."""
    def loop(n: int) -> dict:
        cfg = LoopConfig.of(section, lr=1e-3, steps=n, cadence=Cadence(n, n, n, eval_at_start=False),
                            prefetch=False, progress=False, **kw)
        return train_loop(model, source, cfg).timing

    if warmup:
        loop(warmup)
    cpu = time.process_time()
    timing = loop(steps)
    return {**timing, "cpu_s": (time.process_time() - cpu) / steps}


def bench(arch: str, preset: str, tok, cfg: PretrainConfig, steps: int, warmup: int, finetune: bool) -> dict:
    """One architecture: timed pretraining steps (input preparation apart) and fine-tuning steps."""
    spec = models.get(arch)
    device = device_of(cfg)
    torch.manual_seed(0)
    model = models.build_lm(spec, models.build_config(spec, preset, tok))
    fpt = models.flops_per_token(model, cfg.seq_len, spec)
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(10, len(tok), (4 * cfg.batch_size, cfg.seq_len), generator=gen)
    source = BlockSource({"input_ids": blocks}, cfg.batch_size, 0, objective_for(spec, tok, cfg))
    t = timed(model, source, cfg, steps, warmup, flops_per_token=fpt, peak_tflops=cfg.peak_tflops)
    secs, prep = t["seconds"], t["input_wait_s"]
    tokens = cfg.batch_size * cfg.seq_len * steps
    row = {"arch": arch, "objective": spec.objective, "preset": preset, "device": str(device),
           "bf16": uses_bf16(cfg, device), "batch": cfg.batch_size, "seq_len": cfg.seq_len,
           "non_embedding_params": models.non_embedding_params(model), "tokens_per_s": round(tokens / secs, 1),
           "tokens_per_s_model_only": round(tokens / max(secs - prep, 1e-9), 1),
           "input_prep_ms": round(1000 * prep / steps, 2), "model_step_ms": round(1000 * (secs - prep) / steps, 2),
           "input_share": round(prep / secs, 4), "mfu": t.get("mfu"), "cpu_s_per_step": round(t["cpu_s"], 4),
           "cpu_tokens_per_s": round(cfg.batch_size * cfg.seq_len / t["cpu_s"], 1)}
    if finetune:  # a GLUE batch: 32 examples of 64 tokens, through the fine-tuning stage's batch source
        gcfg = GlueConfig(batch_size=32, device=cfg.device, precision=cfg.precision, compile=cfg.compile,
                          threads=cfg.threads)
        clf = models.build_classifier(spec, models.build_config(spec, preset, tok), 2)
        x = [{"input_ids": torch.randint(10, len(tok), (64,), generator=gen).tolist(), "token_type_ids": [0] * 64}
             for _ in range(32)]
        y = torch.randint(2, (32,), generator=gen).tolist()
        batches = ExampleBatches(x, y, 32, torch.Generator().manual_seed(0), pad_id=tok.pad_token_id,
                                 side=spec.padding_side, with_types=spec.token_type_ids, regression=False)
        ft = timed(clf, batches, gcfg, steps, warmup)
        row["finetune_seqs_per_s"] = round(32 * steps / ft["seconds"], 1)
        row["finetune_cpu_seqs_per_s"] = round(32 / ft["cpu_s"], 1)
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
