"""Stage `exp3_glue@<strategy>-<seed>` (and `exp3_glue_untrained@<seed>`): Leaner-GLUE scores of one run's
proxy checkpoints (`exp3.train.saved_steps`) or of the untrained random-init proxy of that seed
(`--untrained`, step 0), fine-tuned and scored with EXP1's `tinyhelen.glue.evaluate_checkpoint`, so every
strategy is compared at the same steps (the study compared all six runs and the random-init proxy). With
`exp3.glue.enabled: false` it only records that it was skipped.

Every path comes from the command line (dvc.yaml).
params: exp3.glue, exp3.train (checkpoint steps, model), glue
Writes the scores JSON (read by `exp3_report`). The fine-tuning protocol is EXP1's `glue:` params section
(`tinyhelen.glue.GlueConfig`, incl. its threads) narrowed by `exp3.glue.tasks` / `exp3.glue.seeds`;
`exp3.glue.seed` is the base seed passed to `evaluate_checkpoint`.
"""
import tempfile

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import Exp3Config
from tinyhelen.curriculum.scorers import check_strategy
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    strategy = runs.UNTRAINED if args.untrained else args.strategy
    if strategy is None or (args.run is None) != args.untrained:
        raise ValueError("name a strategy and its --run, or pass --untrained")
    skip = ("exp3.glue.enabled is false" if not cfg.glue.enabled else
            "exp3.glue.untrained is false" if args.untrained and not cfg.glue.untrained else None)
    if skip:
        write_json(args.out, {"enabled": False, "strategy": strategy, "seed": args.seed, "skipped": skip})
        return
    from tinyhelen.glue import GlueConfig  # EXP1
    from tinyhelen.train.compute import set_threads

    glue_cfg = load_section("glue", GlueConfig, args.params)
    set_threads(glue_cfg.threads)
    with tempfile.TemporaryDirectory() as work:
        out = runs.glue(strategy, args.seed, args.run, args.tokenizer, args.glue, cfg, glue_cfg, work)
    write_json(args.out, {"enabled": True, **out})


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("seed", type=int, help="training seed of the run (and of the untrained proxy)")
    p.add_argument("strategy", nargs="?", type=check_strategy, help="a strategy of exp3.strategies")
    p.add_argument("--untrained", action="store_true", help="score the random-init proxy of the seed instead")
    p.add_argument("--run", help="the exp3_train run directory (checkpoint-<step>/); not with --untrained")
    add_paths(p, {"--glue": "Leaner-GLUE directory", "--tokenizer": "tokenizer directory", "--out": "scores JSON"})
    stage_main(main, p)
