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
`evaluate_checkpoint`. Several processes: `torchrun --nproc_per_node N stages/exp3_glue.py ...` (every
fine-tuning run uses them all; the main process writes).
"""
import logging
import tempfile
from pathlib import Path

from tinyhelen import runfiles
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp1.run_files import write_glue
from tinyhelen.exp3 import runs
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.exp3.result import run_name
from tinyhelen.io import atomic_path, write_json
from tinyhelen.train import dist

log = logging.getLogger("tinyhelen.exp3_glue")


def _run_file(args, strategy: str, seed: int) -> Path:
    return Path(args.run_files) / Path(runfiles.LAYOUT["exp3_glue"]).name.format(name=strategy, seed=seed)


def main(args):
    if not dist.is_main():  # under torchrun the other processes fine-tune their share; the main process writes
        with tempfile.TemporaryDirectory() as out:
            scores(args, Path(out))
        return
    with atomic_path(args.out) as out:  # a persisted output: replaced as a whole when every score is there
        out.mkdir()
        scores(args, out)


def scores(args, out: Path) -> None:
    cfg = load_section("exp3", Exp3Config, args.params)
    main_process = dist.is_main()
    jobs = [(s, seed) for s in cfg.strategies for seed in cfg.seeds]
    jobs += [(runs.UNTRAINED, seed) for seed in cfg.seeds]
    todo = []
    for strategy, seed in jobs:
        skip = ("exp3.glue.enabled is false" if not cfg.glue.enabled else
                "exp3.glue.untrained is false" if strategy == runs.UNTRAINED and not cfg.glue.untrained else None)
        if skip:
            write_json(out / f"{run_name(strategy, seed)}.json",
                       {"enabled": False, "strategy": strategy, "seed": seed, "skipped": skip})
            if main_process:
                write_glue(_run_file(args, strategy, seed), {}, "exp3_glue", strategy=strategy, run_seed=seed,
                           enabled=False, skipped=skip, tasks=[])
        else:
            todo.append((strategy, seed))
    if not todo:
        return
    from tinyhelen.exp1.glue import GlueConfig  # EXP1
    from tinyhelen.train.compute import accelerator, set_threads
    from tinyhelen.train.finished import Finished

    glue_cfg = load_section("glue", GlueConfig, args.params)
    set_threads(glue_cfg.threads)
    accelerator(glue_cfg)  # the process group of a torchrun launch, before the first fine-tuning run
    for i, (strategy, seed) in enumerate(todo, 1):
        name = run_name(strategy, seed)
        log.info("exp3_glue %d/%d: %s", i, len(todo), name)
        run = None if strategy == runs.UNTRAINED else Path(args.runs) / name
        res = runs.glue(strategy, seed, run, args.tokenizer, args.glue, cfg, glue_cfg, args.work)
        write_json(out / f"{name}.json", {"enabled": True, **res})
        if main_process:
            write_glue(_run_file(args, strategy, seed), {int(k.removeprefix("step")): t
                                                         for k, t in res["details"].items()},
                       "exp3_glue", strategy=strategy, run_seed=seed, enabled=True, tasks=res["tasks"])
    Finished(args.work).clear()


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--runs": "the exp3_train runs directory (<strategy>-s<seed>/checkpoint-<step>/)",
                  "--glue": "Leaner-GLUE directory", "--tokenizer": "tokenizer directory",
                  "--out": "directory of the scores JSON files", "--run-files": "directory of the run files",
                  "--work": "work directory while the stage runs: the untrained proxies and the finished "
                  "fine-tuning runs (not a DVC output; a rerun after a kill fine-tunes only the unfinished runs; "
                  "removed at the end)"})
    stage_main(main, p)
