"""The word list and the first names the simplify prompts and validators use (``resources/``).

The 2,000-word list is the project's own top-2000 word types of the released leaner training text
(``resources/common_words_2000.txt``), rebuilt by ``python -m tinyhelen.simplify wordlist``.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from tinyhelen.data import RESOURCES
from tinyhelen.entropy.words import count_unigrams

WORDLIST = RESOURCES / "common_words_2000.txt"
NAMES = RESOURCES / "first_names.txt"


def build_wordlist(texts: Iterable[str], size: int = 2000) -> list[str]:
    """Top-``size`` alphabetic word types (``tinyhelen.entropy.word_tokens``), most frequent first; ties by word."""
    counts = count_unigrams(texts)
    words = [(w, c) for w, c in counts.items() if w.replace("'", "").replace("\u2019", "").isalpha()]
    words.sort(key=lambda wc: (-wc[1], wc[0]))
    return [w for w, _ in words[:size]]


@lru_cache(maxsize=4)
def load_wordlist(path: str | None = None) -> tuple[str, ...]:
    p = Path(path) if path else WORDLIST
    words = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    if not words:
        raise ValueError(f"{p}: empty word list")
    return tuple(words)


@lru_cache(maxsize=1)
def first_names() -> dict[str, tuple[str, ...]]:
    out = {}
    for ln in NAMES.read_text(encoding="utf-8").splitlines():
        if ln.strip() and not ln.startswith("#"):
            letter, *names = ln.split()
            out[letter.upper()] = tuple(names)
    return out


def names_block() -> str:
    return "   " + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(first_names().items()))
