"""Stage `instruct_data`: the paired instruction-tuning sets (leaner and ori sides).

params: instruct.source, instruct.leaner_corpus, instruct.ori_corpus, instruct.max_examples, instruct.online, seed
deps: the prepared code pairs (source code_pairs) or the pinned online files (source released)
outs: data/instruct/<side>/{train,validation}.jsonl; metrics reports/instruct_data.json
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.instruct import InstructConfig, build_instruct_data
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("instruct", InstructConfig, args.params)
    stats = build_instruct_data(cfg, "data/instruct", seed=load_seed(args.params))
    write_json("reports/instruct_data.json", stats)


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
