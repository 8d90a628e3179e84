"""Stage `instruct_data`: the paired instruction-tuning sets (leaner and ori sides).

params: instruct.source, instruct.leaner_corpus, instruct.ori_corpus, instruct.max_examples, instruct.online, seed
deps: the prepared code pairs (source code_pairs) or the pinned online files (source released)
outs: <out>/<side>/{train,validation}.jsonl; metrics (JSON)
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.exp2.config import InstructConfig
from tinyhelen.exp2.instruct_data import build_instruct_data
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("instruct", InstructConfig, args.params)
    write_json(args.metrics, build_instruct_data(cfg, args.out, seed=load_seed(args.params)))


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {"--out": "directory of the instruction sets",
                                                 "--metrics": "metrics (JSON)"}))
