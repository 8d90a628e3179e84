"""Stage `glue@<arch>-<init>`: fine-tune one initialisation on Leaner-GLUE.

init = leaner / ori (a pretrained model: <pretrain run>/final) or scratch (the saved random initialisation of
`pretrain_scratch@<arch>`); --checkpoint names its directory. Every path comes from the command line (dvc.yaml).
params: models.preset, glue.*, seed. Writes the metrics (best lr, test mean/std per task, the mean over the
study's tasks) and the run file (a row per task x lr x seed x epoch: train loss, validation and test score; the
report's typed result is built from it); wall-clock figures go to reports/timings/. Each finished fine-tuning run
is kept in --work until the stage ends, so a killed stage reruns only the runs that did not finish. Several
processes: `torchrun --nproc_per_node N stages/glue.py ...` (docs/scaling.md); the main process writes.
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.exp1 import glue
from tinyhelen.exp1.run_files import write_glue
from tinyhelen.exp1.config import ModelsConfig
from tinyhelen.io import write_json
from tinyhelen.train import dist
from tinyhelen.train.compute import set_threads
from tinyhelen.train.finished import Finished


def main(args):
    preset = load_section("models", ModelsConfig, args.params).preset
    cfg = load_section("glue", glue.GlueConfig, args.params)
    seed = load_seed(args.params)
    set_threads(cfg.threads)
    res = glue.evaluate_checkpoint(args.checkpoint, args.arch, preset, None, args.glue, cfg, seed, args.work)
    summary = {"arch": args.arch, "init": args.init, "preset": preset, "mean_test_score": res["mean_test_score"],
               "mean_tasks": res["mean_tasks"],
               "tasks": {t: {k: v for k, v in r.items() if k != "runs"} for t, r in res["tasks"].items()}}
    if dist.is_main():
        write_json(args.metrics, summary)
        write_glue(args.run_file, {None: res["tasks"]}, arch=args.arch, init=args.init, preset=preset, seed=seed)
    Finished(args.work).clear()


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", help="a registered architecture (tinyhelen.exp1.models.arch_names())")
    p.add_argument("init", choices=["leaner", "ori", "scratch"])
    add_paths(p, {"--glue": "Leaner-GLUE directory (<task>_<split>.jsonl files)", "--checkpoint": "model directory "
                  "(a pretrained run's final/, or the saved scratch initialisation)", "--metrics": "metrics JSON "
                  "(per task: best lr, test mean/std)", "--run-file": "run file (TSV: task x lr x seed x epoch)",
                  "--work": "work directory of the finished fine-tuning runs while the stage runs (not a DVC "
                  "output; a rerun after a kill fine-tunes only the unfinished ones; removed at the end)"})
    stage_main(main, p)
