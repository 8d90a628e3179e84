"""Stage `glue@<arch>-<side>` / `glue_scratch@<arch>`: fine-tune one initialisation on Leaner-GLUE.

init = a pretrained checkpoint data/models/pretrain/<arch>-<side>/final, or `scratch` (random init of the
`models.preset` shape with the leaner tokenizer's vocabulary).
params: models.preset, glue.*, seed     deps: the checkpoint (or data/tokenizers/leaner), data/leaner/glue
outs:   reports/glue/<arch>-<init>.json (metrics: best lr, test mean/std per task),
        reports/glue_runs/<arch>-<init>.json (every lr x seed run, validation and test metrics)
"""
from pathlib import Path

from tinyhelen import glue, models, train
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.io import write_json


def main(args):
    preset = load_section("models", models.ModelsConfig, args.params).preset
    cfg = load_section("glue", glue.GlueConfig, args.params)
    seed = load_seed(args.params)
    train.set_threads()
    if args.init == "scratch":
        ckpt, tokdir = None, Path(args.tokenizer_dir or "data/tokenizers/leaner")
    else:
        ckpt = Path(args.checkpoint or f"data/models/pretrain/{args.arch}-{args.init}/final")
        tokdir = None
    res = glue.evaluate_checkpoint(ckpt, args.arch, preset, tokdir, Path(args.glue_dir), cfg, seed)
    name = f"{args.arch}-{args.init}"
    summary = {"arch": args.arch, "init": args.init, "preset": preset,
               "mean_test_score": res["mean_test_score"], "seconds": res["seconds"],
               "sequences_per_s": res["sequences_per_s"],
               "tasks": {t: {k: v for k, v in r.items() if k != "runs"} for t, r in res["tasks"].items()}}
    write_json(f"reports/glue/{name}.json", summary)
    write_json(f"reports/glue_runs/{name}.json", {t: r["runs"] for t, r in res["tasks"].items()})


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", choices=models.ARCHS)
    p.add_argument("init", choices=["leaner", "ori", "scratch"])
    p.add_argument("--glue-dir", default="data/leaner/glue", help="Leaner-GLUE <task>_<split>.jsonl files")
    p.add_argument("--checkpoint", help="default: data/models/pretrain/<arch>-<init>/final")
    p.add_argument("--tokenizer-dir", help="scratch only; default: data/tokenizers/leaner")
    stage_main(main, p)
