"""Stage `exp3_reference_lm`: train the reference LM behind the `lmloss` scorer on held-out training
documents (the `reference` units, never in the proxy's pool).

params: exp3.reference_lm    deps: data/curriculum/units, leaner tokenizer
outs: data/curriculum/reference_lm (save_pretrained), reports/exp3/reference_lm.json (metrics)
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import Exp3Config
from tinyhelen.io import write_json


def main(args):
    import torch

    cfg = load_section("exp3", Exp3Config, args.params)
    torch.set_num_threads(args.threads or cfg.threads)
    info = runs.reference_lm(args.units, args.tokenizer, cfg, args.out)
    write_json(args.metrics, info)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--units", default="data/curriculum/units")
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--out", default="data/curriculum/reference_lm")
    p.add_argument("--metrics", default="reports/exp3/reference_lm.json")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
