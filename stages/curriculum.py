"""Stage `exp3_train@<strategy>-<seed>`: train the ~1M-parameter proxy with one curriculum strategy and
one seed (equal token budget for every strategy). Resumable: the run state is saved after every
evaluation under --resume-dir and restored when the stage is restarted with the same inputs.

params: exp3.train    deps: data/curriculum/units, data/curriculum/difficulty/<strategy>.jsonl, tokenizer
outs: data/curriculum/runs/<strategy>-s<seed>/ (curve.tsv, summary.json, expansions.json, checkpoints)
"""
from pathlib import Path

from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import STRATEGIES, Exp3Config


def main(args):
    import torch

    cfg = load_section("exp3", Exp3Config, args.params)
    torch.set_num_threads(args.threads or cfg.threads)
    name = f"{args.strategy}-s{args.seed}"
    Path(args.resume_dir).mkdir(parents=True, exist_ok=True)
    runs.train(args.strategy, args.seed, args.units,
               args.difficulty or f"data/curriculum/difficulty/{args.strategy}.jsonl", args.tokenizer, cfg,
               Path(args.runs) / name, state_path=Path(args.resume_dir) / f"{name}.pt")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("strategy", choices=STRATEGIES)
    p.add_argument("seed", type=int)
    p.add_argument("--units", default="data/curriculum/units")
    p.add_argument("--difficulty", default=None, help="default: data/curriculum/difficulty/<strategy>.jsonl")
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--runs", default="data/curriculum/runs")
    p.add_argument("--resume-dir", default="data/curriculum/resume", help="run states (not a DVC output)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
