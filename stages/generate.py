"""Stage `generate` (matrix over the four recipes): the checkpoint selected for a recipe (`judge_inner`)
answers the Leaner-Eval questions (a seeded bin-stratified subsample of `generate.max_questions`).

Every path comes from the command line (dvc.yaml). params: generate, instruct.template, seed
Writes <out> (JSONL: one record per question) and <metrics>; wall-clock figures go to reports/timings/.
"""
import json
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.generate import GenerateConfig, answer_selected
from tinyhelen.instruct import RECIPES, InstructConfig
from tinyhelen.io import InputError, write_json
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("generate", GenerateConfig, args.params)
    template = load_section("instruct", InstructConfig, args.params).template
    selected = json.loads(Path(args.selection).read_text())["selected"]
    if args.recipe not in selected:
        raise InputError(args.selection, f"no checkpoint selected for {args.recipe}; run judge_inner")
    set_threads(cfg.threads)
    write_json(args.metrics, answer_selected(args.model, args.recipe, selected[args.recipe], cfg, args.out,
                                             load_seed(args.params), template))


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--model": "the recipe's tuned-model directory (step-NNNNNN checkpoints)",
                                    "--selection": "the checkpoint selection (judge_inner)",
                                    "--out": "generations (JSONL)", "--metrics": "metrics JSON of the stage"})
    p.add_argument("--recipe", required=True, choices=RECIPES, help="<pretrain side>-<tune side>")
    stage_main(main, p)
