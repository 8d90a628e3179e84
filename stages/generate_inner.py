"""Stage `generate_inner` (matrix over the four recipes): every checkpoint of a recipe answers the 31
inner-comparison questions (the input of checkpoint selection, `judge_inner`).

Every path comes from the command line (dvc.yaml). params: generate, instruct.template
Writes <out> (JSONL: one record per question and checkpoint) and <metrics>; wall-clock figures go to reports/timings/.
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.generate import GenerateConfig, answer_inner
from tinyhelen.instruct import RECIPES, InstructConfig
from tinyhelen.io import write_json
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("generate", GenerateConfig, args.params)
    template = load_section("instruct", InstructConfig, args.params).template
    set_threads(cfg.threads)
    write_json(args.metrics, answer_inner(args.model, args.recipe, cfg, args.out, template))


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--model": "the recipe's tuned-model directory (step-NNNNNN checkpoints)",
                                    "--out": "generations (JSONL)", "--metrics": "metrics JSON of the stage"})
    p.add_argument("--recipe", required=True, choices=RECIPES, help="<pretrain side>-<tune side>")
    stage_main(main, p)
