"""The checks a rewrite must pass to be kept (``Validator``); each failed check is a quarantine reason.

* ``empty``: no text left;
* ``length_ratio``: word tokens of rewrite / original outside [min_length_ratio, max_length_ratio]
  (checked when the original has >= ``min_words_checked`` words);
* ``oov_share``: share of alphabetic word tokens outside the 2,000-word list above ``max_oov_share``
  (prose only: fenced code is excluded);
* ``leftover_marker``: a template delimiter (``<<<BEGIN TEXT>>>`` ...) that was not in the original;
* ``language``: not English: share of word tokens among the 100 most frequent list words below
  ``min_function_word_share``, or share of ASCII letters among letters below ``min_ascii_letter_share``;
* ``code_broken`` (code): the number of fenced code blocks changed, or a Python block that parsed in the
  original no longer parses.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from tinyhelen.entropy.words import word_tokens
from tinyhelen.llm.prompts import MARKERS
from tinyhelen.simplify.chunking import FENCE_RE, prose
from tinyhelen.simplify.config import SimplifyConfig
from tinyhelen.simplify.resources import load_wordlist

_PY_LANG_RE = re.compile(r"```\s*(python|py)\b", re.I)


def _python_blocks(text: str) -> list[str]:
    out = []
    for m in FENCE_RE.finditer(text):
        block = m.group(0)
        if _PY_LANG_RE.match(block):
            body = block.split("\n", 1)[1] if "\n" in block else ""
            out.append(body.rsplit("```", 1)[0])
    return out


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except (SyntaxError, ValueError):
        return False


@dataclass
class Validator:
    """Checks of one rewrite against its original (see module docstring). Returns reasons and figures."""

    cfg: SimplifyConfig
    words: frozenset[str] = field(init=False)
    function_words: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        wl = load_wordlist(self.cfg.wordlist)
        self.words = frozenset(wl)
        self.function_words = frozenset(wl[:100])

    def figures(self, original: str, rewrite: str, genre: str) -> dict[str, float]:
        ow, nw = word_tokens(prose(original)), word_tokens(prose(rewrite))
        alpha = [w for w in nw if w.replace("'", "").replace("\u2019", "").isalpha()]
        letters = [c for c in prose(rewrite) if c.isalpha()]
        return {
            "words_ori": len(word_tokens(original)), "words_new": len(word_tokens(rewrite)),
            "prose_words": len(nw),
            "length_ratio": len(word_tokens(rewrite)) / max(1, len(word_tokens(original))),
            "oov_share": sum(w not in self.words for w in alpha) / len(alpha) if alpha else 0.0,
            "function_word_share": sum(w in self.function_words for w in nw) / len(nw) if nw else 0.0,
            "ascii_letter_share": sum(c.isascii() for c in letters) / len(letters) if letters else 1.0,
            "prose_words_ori": len(ow),
        }

    def check(self, original: str, rewrite: str, genre: str) -> tuple[list[str], dict[str, float]]:
        c = self.cfg
        if not rewrite.strip():
            return ["empty"], {}
        f = self.figures(original, rewrite, genre)
        reasons = []
        if f["words_ori"] >= c.min_words_checked and not c.min_length_ratio <= f["length_ratio"] <= c.max_length_ratio:
            reasons.append("length_ratio")
        if f["prose_words"] >= c.min_words_checked:
            if f["oov_share"] > c.max_oov_share:
                reasons.append("oov_share")
            if f["function_word_share"] < c.min_function_word_share or f["ascii_letter_share"] < c.min_ascii_letter_share:
                reasons.append("language")
        if any(m in rewrite and m not in original for m in MARKERS):
            reasons.append("leftover_marker")
        if genre == "code":
            if original.count("```") != rewrite.count("```"):
                reasons.append("code_broken")
            else:
                ob, nb = _python_blocks(original), _python_blocks(rewrite)
                if any(_parses(o) and not _parses(n) for o, n in zip(ob, nb)):
                    reasons.append("code_broken")
        return reasons, {k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()}
