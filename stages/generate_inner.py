"""Stage `generate_inner`: every checkpoint of every recipe of `exp2.recipes` answers the 31
inner-comparison questions (the input of checkpoint selection, `judge_inner`).

Every path comes from the command line (dvc.yaml). params: generate, instruct.template, exp2.recipes
Reads <models>/<recipe>/step-NNNNNN; writes <out>/<recipe>.jsonl (one record per question and checkpoint)
and <metrics> (per recipe); wall-clock figures go to reports/timings/.
"""
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp2.generate import GenerateConfig, answer_inner
from tinyhelen.exp2.config import InstructConfig
from tinyhelen.io import write_json
from tinyhelen.exp2.config import Exp2Config
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("generate", GenerateConfig, args.params)
    template = load_section("instruct", InstructConfig, args.params).template
    recipes = load_section("exp2", Exp2Config, args.params).recipes
    set_threads(cfg.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(args.metrics, {r: answer_inner(Path(args.models) / r, r, cfg, out / f"{r}.jsonl", template)
                              for r in recipes})


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--models": "directory of the tuned models (<recipe>/step-NNNNNN)",
                                    "--out": "directory of the <recipe>.jsonl generations",
                                    "--metrics": "metrics JSON of the stage"})
    stage_main(main, p)
