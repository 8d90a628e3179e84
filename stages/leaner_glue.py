"""Stage `leaner_glue`: Leaner-GLUE (replay: released items; openai: rewrite with label + verify).

params: llm.*, leaner_glue.*    deps: data/prepared/glue (replay), leaner_glue.source_dir (openai)
outs: data/leaner/glue/<task>_<split>.jsonl, data/leaner/quarantine_glue.jsonl
metrics: reports/leaner_glue.json (kept/dropped per task)
"""
from tinyhelen import benchmarks
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json
from tinyhelen.llm import LLMConfig


def main(args):
    llm = load_section("llm", LLMConfig, args.params)
    cfg = load_section("leaner_glue", benchmarks.LeanerGlueConfig, args.params)
    m = benchmarks.leaner_glue(cfg, llm, "data/prepared/glue", "data/leaner/glue", "data/leaner/quarantine_glue.jsonl")
    write_json("reports/leaner_glue.json", m)


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
