"""Stage `glue@<arch>-<side>` / `glue_scratch@<arch>`: fine-tune one initialisation on Leaner-GLUE.

init = a pretrained checkpoint (--checkpoint <pretrain run>/final), or `scratch` (random init of the
`models.preset` shape with the vocabulary of --tokenizer). Every path comes from the command line (dvc.yaml).
params: models.preset, glue.*, seed. Writes the metrics (best lr, test mean/std per task) and every
lr x seed run (validation and test metrics); wall-clock figures go to reports/timings/.
"""
from tinyhelen import glue, models
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.io import write_json
from tinyhelen.train.compute import set_threads


def main(args):
    preset = load_section("models", models.ModelsConfig, args.params).preset
    cfg = load_section("glue", glue.GlueConfig, args.params)
    seed = load_seed(args.params)
    set_threads(cfg.threads)
    if (args.init == "scratch") != (args.checkpoint is None) or (args.init == "scratch") != bool(args.tokenizer):
        raise SystemExit("scratch needs --tokenizer (and no --checkpoint); a pretrained init needs --checkpoint")
    res = glue.evaluate_checkpoint(args.checkpoint, args.arch, preset, args.tokenizer, args.glue, cfg, seed)
    summary = {"arch": args.arch, "init": args.init, "preset": preset, "mean_test_score": res["mean_test_score"],
               "tasks": {t: {k: v for k, v in r.items() if k != "runs"} for t, r in res["tasks"].items()}}
    write_json(args.metrics, summary)
    write_json(args.runs, {t: r["runs"] for t, r in res["tasks"].items()})


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", help="a registered architecture (tinyhelen.models.arch_names())")
    p.add_argument("init", choices=["leaner", "ori", "scratch"])
    add_paths(p, {"--glue": "Leaner-GLUE directory (<task>_<split>.jsonl files)", "--metrics": "metrics JSON "
                  "(per task: best lr, test mean/std)", "--runs": "JSON of every lr x seed run"})
    p.add_argument("--checkpoint", help="pretrained model directory (leaner / ori init)")
    p.add_argument("--tokenizer", help="tokenizer directory (scratch init)")
    stage_main(main, p)
