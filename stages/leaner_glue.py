"""Stage `leaner_glue`: Leaner-GLUE (replay: released items; openai/local: rewrite with label + verify).

params: llm.* (reply-changing keys), leaner_glue.*    deps: data/prepared/glue (replay), leaner_glue.source_dir (live)
outs: data/leaner/glue/<task>_<split>.jsonl, data/leaner/quarantine_glue.jsonl
metrics: reports/leaner_glue.json (kept/dropped per task, LLM counts, provenance); exits 3 on an LLM outage
"""
from tinyhelen.benchmarks import leaner_glue
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json
from tinyhelen.llm import LLMConfig


def main(args):
    llm = load_section("llm", LLMConfig, args.params)
    cfg = load_section("leaner_glue", leaner_glue.LeanerGlueConfig, args.params)
    write_json(args.metrics, leaner_glue.leaner_glue(cfg, llm, args.prepared, args.out, args.quarantine))


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--prepared": "prepared GLUE directory (replay)", "--out": "Leaner-GLUE directory",
        "--quarantine": "quarantine file (JSONL)", "--metrics": "metrics (JSON)"}))
