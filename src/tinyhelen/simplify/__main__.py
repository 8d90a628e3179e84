"""``python -m tinyhelen.simplify wordlist [--shard S] [--out F]``: rebuild the 2,000-word list."""
from __future__ import annotations

import argparse

from tinyhelen.data import NATURAL_GENRES, read_docs
from tinyhelen.io import atomic_open
from tinyhelen.simplify.resources import WORDLIST, build_wordlist


def main(argv: list[str] | None = None) -> int:
    """``python -m tinyhelen.simplify wordlist [--shard S] [--out F]``: rebuild the 2,000-word list."""
    p = argparse.ArgumentParser(prog="python -m tinyhelen.simplify", description=main.__doc__)
    p.add_argument("command", choices=["wordlist"])
    p.add_argument("--shard", default="data/prepared/corpus/leaner/train.jsonl")
    p.add_argument("--out", default=str(WORDLIST))
    p.add_argument("--size", type=int, default=2000)
    a = p.parse_args(argv)
    words = build_wordlist((d["text"] for d in read_docs(a.shard, list(NATURAL_GENRES))), a.size)
    with atomic_open(a.out) as fh:
        fh.write(f"# top-{a.size} word types (tinyhelen.entropy.word_tokens, alphabetic) of the released leaner\n"
                 f"# training text, natural genres; rebuild: python -m tinyhelen.simplify wordlist --shard {a.shard}\n")
        fh.write("\n".join(words) + "\n")
    print(f"{a.out}: {len(words)} words")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
