"""Stage `simplify@<genre>`: the leaner twin of every original document of one genre (both splits).

params: llm.* (backend, endpoint, decoding), simplify.*, data.splits (the splits rewritten)
deps: prepared ori + leaner shards (leaner: the released twins used by the replay backend)
outs: data/leaner/genres/<genre>.jsonl, data/leaner/quarantine/<genre>.jsonl
metrics: reports/simplify/<genre>.json (reasons, validation stats, LLM requests/tokens/cost, cache hits,
provenance); throughput (documents/s, tokens/s) goes to reports/timings/simplify@<genre>.json.
An LLM outage (or more quarantine than llm.max_quarantine_share) exits 3 and writes nothing.
"""
from pathlib import Path

from tinyhelen import simplify
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.data import GENRES, DataConfig
from tinyhelen.llm import LLMConfig


def main(args):
    llm = load_section("llm", LLMConfig, args.params)
    cfg = load_section("simplify", simplify.SimplifyConfig, args.params)
    splits = list(load_section("data", DataConfig, args.params).splits)
    ori = {s: Path(args.ori) / f"{s}.jsonl" for s in splits}
    lean = {s: Path(args.released) / f"{s}.jsonl" for s in splits}
    res = simplify.simplify_genre(args.genre, ori, lean, cfg, llm)
    simplify.write_genre(res, f"data/leaner/genres/{args.genre}.jsonl",
                         f"data/leaner/quarantine/{args.genre}.jsonl", f"reports/simplify/{args.genre}.json")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("genre", choices=list(GENRES))
    p.add_argument("--ori", default="data/prepared/corpus/ori", help="original documents (prepared shards)")
    p.add_argument("--released", default="data/prepared/corpus/leaner", help="released leaner twins (replay)")
    stage_main(main, p)
