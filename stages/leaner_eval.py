"""Stage `leaner_eval`: Leaner-Eval questions with a similarity (0-10) to the instruction data and a bin.

params: seed, llm.* (reply-changing keys), leaner_eval.*
deps: data/prepared/eval, data/prepared/corpus/ori/train.jsonl (reference)
outs: data/leaner/eval/{all,inner_comparison}.jsonl, data/leaner/quarantine_eval.jsonl
metrics: reports/leaner_eval.json (bins, LLM counts, provenance); exits 3 on an LLM outage
"""
from tinyhelen.benchmarks import leaner_eval
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.io import write_json
from tinyhelen.llm import LLMConfig


def main(args):
    llm = load_section("llm", LLMConfig, args.params)
    cfg = load_section("leaner_eval", leaner_eval.LeanerEvalConfig, args.params)
    write_json(args.metrics, leaner_eval.leaner_eval(cfg, llm, args.prepared, args.reference, args.out,
                                                     args.quarantine, seed=load_seed(args.params)))


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--prepared": "prepared Leaner-Eval directory", "--reference": "the training shard the similarity is to",
        "--out": "Leaner-Eval directory", "--quarantine": "quarantine file (JSONL)", "--metrics": "metrics (JSON)"}))
