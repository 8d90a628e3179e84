"""Stage `exp3_glue`: Leaner-GLUE scores of every run's proxy checkpoints (`exp3.train.saved_steps`) and of
the untrained random-init proxy of each seed (step 0), fine-tuned and scored with EXP1's
`tinyhelen.exp1.glue.evaluate_checkpoint`, so every strategy is compared at the same steps (the study compared
all six runs and the random-init proxy). With `exp3.glue.enabled: false` it only records that it was
skipped (`exp3.glue.untrained: false` skips the untrained proxy).

Every path comes from the command line (dvc.yaml).
params: exp3.strategies, exp3.seeds, exp3.glue, exp3.train (checkpoint steps, model), glue
Writes <out>/<strategy>-s<seed>.json and <out>/untrained-s<seed>.json, and the same as run files
<run-files>/<name>-s<seed>.tsv (a row per checkpoint x task x lr x seed x epoch: read by `exp3_report`). The
fine-tuning protocol is EXP1's `glue:` params section (`tinyhelen.exp1.glue.GlueConfig`, incl. its threads)
narrowed by `exp3.glue.tasks` / `exp3.glue.seeds`; `exp3.glue.seed` is the base seed passed to
`evaluate_checkpoint`.
"""
import logging
import tempfile
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen import runfiles
from tinyhelen.exp1.run_files import write_glue
from tinyhelen.exp3 import runs
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.exp3.result import run_name
from tinyhelen.io import atomic_path, write_json

log = logging.getLogger("tinyhelen.exp3_glue")


def _run_file(args, strategy: str, seed: int) -> Path:
    return Path(args.run_files) / Path(runfiles.LAYOUT["exp3_glue"]).name.format(name=strategy, seed=seed)


def main(args):
    with atomic_path(args.out) as out:  # a persisted output: replaced as a whole when every score is there
        out.mkdir()
        scores(args, out)


def scores(args, out: Path) -> None:
    cfg = load_section("exp3", Exp3Config, args.params)
    jobs = [(s, seed) for s in cfg.strategies for seed in cfg.seeds]
    jobs += [(runs.UNTRAINED, seed) for seed in cfg.seeds]
    todo = []
    for strategy, seed in jobs:
        skip = ("exp3.glue.enabled is false" if not cfg.glue.enabled else
                "exp3.glue.untrained is false" if strategy == runs.UNTRAINED and not cfg.glue.untrained else None)
        if skip:
            write_json(out / f"{run_name(strategy, seed)}.json",
                       {"enabled": False, "strategy": strategy, "seed": seed, "skipped": skip})
            write_glue(_run_file(args, strategy, seed), {}, "exp3_glue", strategy=strategy, run_seed=seed,
                       enabled=False, skipped=skip, tasks=[])
        else:
            todo.append((strategy, seed))
    if not todo:
        return
    from tinyhelen.exp1.glue import GlueConfig  # EXP1
    from tinyhelen.train.compute import set_threads

    glue_cfg = load_section("glue", GlueConfig, args.params)
    set_threads(glue_cfg.threads)
    for i, (strategy, seed) in enumerate(todo, 1):
        name = run_name(strategy, seed)
        log.info("exp3_glue %d/%d: %s", i, len(todo), name)
        run = None if strategy == runs.UNTRAINED else Path(args.runs) / name
        with tempfile.TemporaryDirectory() as work:
            res = runs.glue(strategy, seed, run, args.tokenizer, args.glue, cfg, glue_cfg, work)
        write_json(out / f"{name}.json", {"enabled": True, **res})
        write_glue(_run_file(args, strategy, seed), {int(k.removeprefix("step")): t for k, t in res["details"].items()},
                   "exp3_glue", strategy=strategy, run_seed=seed, enabled=True, tasks=res["tasks"])


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--runs": "the exp3_train runs directory (<strategy>-s<seed>/checkpoint-<step>/)",
                  "--glue": "Leaner-GLUE directory", "--tokenizer": "tokenizer directory",
                  "--out": "directory of the scores JSON files", "--run-files": "directory of the run files"})
    stage_main(main, p)
