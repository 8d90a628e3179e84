"""Cutting a document into chunks the LLM rewrites one at a time, and the token budgets of prompt and reply.

Token counts are estimated as ceil(UTF-8 bytes / 4) (no tokenizer download needed). A chunk is a run of
whole sentence-sized units up to a per-genre budget; fenced code blocks are single units, never split.
"""
from __future__ import annotations

import math
import re

from tinyhelen.config import ParamsError

FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+|\n\s*")
REPLY_CAP_RULE = "min(llm.max_tokens, ceil(1.3 * max_length_ratio * chunk tokens) + 64)"


def approx_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def prose(text: str) -> str:
    """Text without fenced code blocks."""
    return FENCE_RE.sub(" ", text)


def split_units(text: str) -> list[str]:
    """Sentence-sized units (each with its trailing whitespace); fenced code blocks are single units.
    ``"".join(split_units(t)) == t``."""
    units: list[str] = []
    pos = 0
    for fm in list(FENCE_RE.finditer(text)) + [None]:
        end = fm.start() if fm else len(text)
        seg = text[pos:end]
        start = 0
        for m in _BOUNDARY_RE.finditer(seg):
            units.append(seg[start:m.end()])
            start = m.end()
        if start < len(seg):
            units.append(seg[start:])
        if fm:
            # the fence plus the whitespace after it
            ws = re.match(r"\s*", text[fm.end():])
            stop = fm.end() + (ws.end() if ws else 0)
            units.append(text[fm.start():stop])
            pos = stop
    return [u for u in units if u]


def chunk_text(text: str, budget: int) -> list[tuple[str, str]]:
    """Pack whole units into chunks of at most ``budget`` estimated tokens (a longer unit is its own chunk).

    Returns [(chunk text without trailing whitespace, the whitespace that followed it)]; joining
    ``text + sep`` over the chunks gives back the input (modulo leading whitespace)."""
    chunks: list[tuple[str, str]] = []
    cur = ""
    for u in split_units(text):
        if cur and approx_tokens(cur + u) > budget:
            chunks.append(_cut(cur))
            cur = ""
        cur += u
    if cur.strip():
        chunks.append(_cut(cur))
    return [(c, s) for c, s in chunks if c.strip()]


def _cut(s: str) -> tuple[str, str]:
    body = s.rstrip()
    return body, s[len(body):]


def fitted_budget(budget: int, context: int | None, max_tokens: int, overhead: int) -> int:
    """The chunk budget (estimated tokens, UTF-8 bytes / 4) shrunk so that a prompt of ``overhead`` tokens
    plus the chunk plus ``max_tokens`` of reply fit a ``context`` (None: unknown, no shrinking). Prompt
    tokens are estimated high (bytes / 3, ``tinyhelen.llm.core.estimate_tokens``)."""
    if context is None:
        return budget
    room = context - max_tokens - overhead
    if room * 3 // 4 < 50:
        raise ParamsError(f"llm.local: the context ({context} tokens) leaves no room for a chunk: the prompt takes ~{overhead} "
                         f"and llm.max_tokens={max_tokens}; raise llm.local.max_ctx / n_ctx or lower llm.max_tokens")
    return min(budget, room * 3 // 4)


def reply_budget(chunk: str, max_length_ratio: float) -> int:
    """Tokens a chunk's rewrite may take: what the length check could still accept (``max_length_ratio``
    times the chunk, with a margin for tokenizers that need more tokens than UTF-8 bytes / 4, plus the end
    marker). Bounds the cost of a model that loops instead of ending its reply."""
    return math.ceil(approx_tokens(chunk) * max_length_ratio * 1.3) + 64
