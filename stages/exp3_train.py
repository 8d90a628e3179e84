"""Stage `exp3_train@<strategy>-<seed>`: train the ~1M-parameter proxy with one curriculum strategy and
one seed (equal token budget for every strategy). Resumable: the run is checkpointed after every
evaluation under --resume and continued when the stage is restarted with the same inputs.

Every path comes from the command line (dvc.yaml). params: exp3.train, exp3 compute keys (threads, ...).
Writes <out>/ (curve.tsv, summary.json, expansions.json, checkpoint-<step>/ models), the run file (the curve per
evaluation with the pool's size per genre and the proxy's size: the EXP3 typed result is built from it) and the run's DVCLive
log (<live>/metrics.json, <live>/plots/metrics/*.tsv); wall-clock figures go to reports/timings/.
"""
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3 import run_files, runs
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.exp3.scorers import check_strategy
from tinyhelen.exp3.units import load_units
from tinyhelen.train.compute import set_threads


def proxy_params(model_cfg, tokenizer_dir: str) -> int:
    """Non-embedding parameters of the proxy (built from its config, not trained)."""
    from tinyhelen import tokenizer
    from tinyhelen.exp1 import models
    from tinyhelen.exp3.curriculum import proxy_config

    tok = tokenizer.load(tokenizer_dir)
    return models.non_embedding_params(models.build_lm(model_cfg.arch, proxy_config(model_cfg, tok)))


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    set_threads(args.threads or cfg.threads)
    summary = runs.train(args.strategy, args.seed, args.units, args.difficulty, args.tokenizer, cfg, args.out,
                         resume_dir=args.resume, live_dir=args.live)
    curve = run_files.read_curve(Path(args.out) / "curve.tsv")
    pool_genres = load_units(args.units)[0].subset("pool").tokens_by_genre()
    run_files.write_run(args.run_file, curve, summary, proxy_params(cfg.train.model, args.tokenizer),
                        strategy=args.strategy, seed=args.seed, pool_genres=pool_genres)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("strategy", type=check_strategy,
                   help="a registered scorer or baseline (tinyhelen.exp3.scorers.strategy_names())")
    p.add_argument("seed", type=int)
    add_paths(p, {"--units": "curriculum units directory (exp3_units)", "--difficulty": "the strategy's "
                  "difficulty scores (exp3_difficulty)", "--tokenizer": "tokenizer directory",
                  "--out": "run directory (a DVC output)", "--run-file": "run file of the curve (TSV)",
                  "--live": "DVCLive directory of the run's metrics",
                  "--resume": "checkpoint directory of the run (not a DVC output)"})
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
