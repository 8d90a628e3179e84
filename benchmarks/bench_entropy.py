"""Benchmark: word tokenisation + unigram counting and n-gram entropy throughput on one core.

    python benchmarks/bench_entropy.py [--shards data/prepared/corpus/*/train.jsonl] [--repeat 3]

Reads prepared shards (defaults: both sides' train + validation), then times, best of --repeat:
  1. word unigram counting (tokenise + Counter), the throughput target (>= 5M word tokens/s);
  2. n-gram counting for n = 1..4 over integer ids (numpy);
and prints tokens/s. Use `taskset -c 0` to pin to one core.
"""
from __future__ import annotations

import argparse
import glob
import json
import time


from tinyhelen.data import read_docs
from tinyhelen.entropy.measure import Vocab, entropy_bits, ngram_counts
from tinyhelen.entropy.words import count_unigrams, word_tokens


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", nargs="*", default=sorted(glob.glob("data/prepared/corpus/*/*.jsonl")))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-n", type=int, default=4)
    args = ap.parse_args()
    texts = [r["text"] for p in args.shards for r in read_docs(p)]
    mb = sum(len(t) for t in texts) / 1e6
    secs, counts = best_of(lambda: count_unigrams(texts), args.repeat)
    n_tok = sum(counts.values())
    vocab = Vocab()
    docs = [vocab.encode(word_tokens(t)) for t in texts]
    res = {"docs": len(texts), "chars_M": round(mb, 2), "word_tokens": n_tok,
           "unigram_count_s": round(secs, 3), "unigram_tokens_per_s": round(n_tok / secs)}
    for n in range(1, args.max_n + 1):
        s, c = best_of(lambda n=n: entropy_bits(ngram_counts(docs, n)), args.repeat)
        res[f"ngram{n}_tokens_per_s"] = round(n_tok / s)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
