"""Stage `generate` (matrix over the four recipes): answers to Leaner-Eval and the inner-comparison set.

params: generate, seed      deps: data/models/instruct/<recipe>, <generate.eval_dir>/{all,inner_comparison}.jsonl
outs: data/generations/<recipe>/{all,inner_comparison}.jsonl; metrics reports/generate/<recipe>.json
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.generate import GenerateConfig, run
from tinyhelen.instruct import RECIPES
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("generate", GenerateConfig, args.params)
    stats = run(f"data/models/instruct/{args.recipe}", args.recipe, cfg, f"data/generations/{args.recipe}",
                load_seed(args.params))
    write_json(f"reports/generate/{args.recipe}.json", stats)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--recipe", required=True, choices=RECIPES, help="<pretrain side>-<tune side>")
    stage_main(main, p)
