"""The ``simplify`` stage: make the leaner twin of every original document, one genre at a time.

Backends (``llm.backend``):

* ``replay`` (offline default): the leaner twin is the RELEASED one (prepared leaner shard, joined by the
  pairing hash). The validators still run on it and their would-fail counts are reported, but released
  documents are kept (they are the study's data). An original document without a released twin is written to
  the quarantine file with reason ``no_released_twin`` (never dropped silently).
* ``openai`` / ``local`` (live): the first ``simplify.max_docs_per_genre`` documents of the genre (by pairing
  hash, i.e. a fixed pseudo-random sample; null = all) among those of at most ``simplify.max_doc_tokens``
  estimated tokens (null = any length; a CPU pipeline check cannot rewrite 100k-word books) are cut into chunks of whole sentences up to a
  per-genre token budget (fenced code blocks are never split; with a known context size, ``local``, the
  budget shrinks so that prompt + chunk + ``llm.max_tokens`` fit), each chunk is rewritten with the genre's
  versioned prompt template (``tinyhelen/prompts/simplify_<genre>/v<N>.txt``), each document is reassembled
  (chunk separators kept) and validated; content failures go to quarantine with their reasons (a share
  above ``llm.max_quarantine_share`` fails the stage), outages fail the stage (``LLMFailure``). The
  remaining documents are replayed as above. ``math`` is never rewritten (the study left it unchanged);
  ``code`` must keep runnable code.

Validation rules of a rewrite (``validate``), each a quarantine reason:

* ``empty``: no text left;
* ``length_ratio``: word tokens of rewrite / original outside [min_length_ratio, max_length_ratio]
  (checked when the original has >= ``min_words_checked`` words);
* ``oov_share``: share of alphabetic word tokens outside the 2,000-word list above ``max_oov_share``
  (prose only: fenced code is excluded; the list is the project's own top-2000 word types of the released
  leaner training text, ``resources/common_words_2000.txt``, rebuilt by ``python -m tinyhelen.simplify wordlist``);
* ``leftover_marker``: a template delimiter (``<<<BEGIN TEXT>>>`` ...) that was not in the original;
* ``language``: not English: share of word tokens among the 100 most frequent list words below
  ``min_function_word_share``, or share of ASCII letters among letters below ``min_ascii_letter_share``;
* ``code_broken`` (code): the number of fenced code blocks changed, or a Python block that parsed in the
  original no longer parses;
* ``llm_format`` / ``llm_too_large``: a chunk's reply failed the strict parser after all re-asks, or the
  endpoint rejected a chunk as larger than its context.

Token counts for chunking are estimated as ceil(UTF-8 bytes / 4) (no tokenizer download needed).
"""
from __future__ import annotations

import ast
import logging
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from tinyhelen import timing
from tinyhelen.config import ParamsError, Section, check_subset
from tinyhelen.data import GENRES, RESOURCES, read_docs
from tinyhelen.entropy.words import count_unigrams, word_tokens
from tinyhelen.io import write_json, write_jsonl
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, quarantine_gate
from tinyhelen.llm.core import estimate_tokens
from tinyhelen.llm.prompts import MARKERS, load_template, strip_end_marker
from tinyhelen.llm.provenance import stage_provenance

log = logging.getLogger(__name__)

WORDLIST = RESOURCES / "common_words_2000.txt"
NAMES = RESOURCES / "first_names.txt"
_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+|\n\s*")
_PY_LANG_RE = re.compile(r"```\s*(python|py)\b", re.I)


class SimplifyConfig(Section):
    """``simplify:`` section of params.yaml."""

    max_docs_per_genre: int | None = Field(20, ge=0, description="live backends: documents per genre sent to the LLM (null: all); the rest are replayed")
    max_doc_tokens: int | None = Field(None, ge=1)       # live backends: longer documents are not sent (replayed)
    chunk_tokens: dict[str, int] = Field(default_factory=lambda: {"default": 700, "code": 1500})
    prompt_version: int | None = None                    # null: latest file in prompts/simplify_<genre>/
    min_length_ratio: float = Field(0.2, gt=0)
    max_length_ratio: float = Field(1.5, gt=0)
    min_words_checked: int = Field(20, ge=0)
    max_oov_share: float = Field(0.25, ge=0, le=1)
    min_function_word_share: float = Field(0.2, ge=0, le=1)
    min_ascii_letter_share: float = Field(0.9, ge=0, le=1)
    wordlist: str | None = None                          # path; null: the shipped resource

    @field_validator("chunk_tokens")
    @classmethod
    def _chunks(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(GENRES) - {"default"})
        if bad:
            raise ValueError(f"unknown key(s) {bad}; use genre names or 'default'")
        if "default" not in v:
            raise ValueError("needs a 'default' budget")
        if any(n < 50 for n in v.values()):
            raise ValueError("budgets must be >= 50 tokens")
        return v

    @model_validator(mode="after")
    def _ratios(self) -> "SimplifyConfig":
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self

    def budget(self, genre: str) -> int:
        return self.chunk_tokens.get(genre, self.chunk_tokens["default"])


# ----------------------------------------------------------------------------------------- resources
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


# ----------------------------------------------------------------------------------------- validation
def approx_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def prose(text: str) -> str:
    """Text without fenced code blocks."""
    return _FENCE_RE.sub(" ", text)


def _python_blocks(text: str) -> list[str]:
    out = []
    for m in _FENCE_RE.finditer(text):
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


# ----------------------------------------------------------------------------------------- chunking
def split_units(text: str) -> list[str]:
    """Sentence-sized units (each with its trailing whitespace); fenced code blocks are single units.
    ``"".join(split_units(t)) == t``."""
    units: list[str] = []
    pos = 0
    for fm in list(_FENCE_RE.finditer(text)) + [None]:
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


# ----------------------------------------------------------------------------------------- the stage
@dataclass
class GenreResult:
    docs: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    metrics: dict[str, Any]


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


REPLY_CAP_RULE = "min(llm.max_tokens, ceil(1.3 * max_length_ratio * chunk tokens) + 64)"


def reply_budget(chunk: str, max_length_ratio: float) -> int:
    """Tokens a chunk's rewrite may take: what the length check could still accept (``max_length_ratio``
    times the chunk, with a margin for tokenizers that need more tokens than UTF-8 bytes / 4, plus the end
    marker). Bounds the cost of a model that loops instead of ending its reply."""
    return math.ceil(approx_tokens(chunk) * max_length_ratio * 1.3) + 64


def _doc_parts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(part name, text) to rewrite: code documents are rewritten per part so ``parts`` can be rebuilt."""
    if doc["genre"] == "code" and doc.get("parts"):
        return [("prompt", doc["parts"]["prompt"]), ("response", doc["parts"]["response"])]
    return [("text", doc["text"])]


def _leaner_record(ori: dict[str, Any], text: str, parts: dict[str, str] | None) -> dict[str, Any]:
    return {"doc_id": ori["doc_id"], "genre": ori["genre"], "split": ori["split"], "side": "leaner",
            "text": text, "parts": parts}


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
    return {"mean": round(statistics.fmean(values), 4), "p05": round(qs[0], 4),
            "median": round(statistics.median(values), 4), "p95": round(qs[-1], 4)}


def simplify_genre(genre: str, ori_shards: dict[str, Path], leaner_shards: dict[str, Path],
                   cfg: SimplifyConfig, llm: LLMConfig, llm_metrics_path: Path | str | None = None) -> GenreResult:
    """Produce the leaner documents of one genre (every split of ``ori_shards``). See the module docstring."""
    t0 = time.monotonic()
    ori_docs: list[dict[str, Any]] = []
    twins: dict[str, dict[str, Any]] = {}
    for split in ori_shards:
        ori_docs += list(read_docs(ori_shards[split], [genre]))
        if split in leaner_shards and Path(leaner_shards[split]).exists():
            twins.update({d["doc_id"]: d for d in read_docs(leaner_shards[split], [genre])})
    validator = Validator(cfg)
    counts: Counter = Counter()
    would_fail: Counter = Counter()
    ratios, oovs = [], []
    out: dict[str, dict[str, Any]] = {}
    quarantine: list[dict[str, Any]] = []
    live = llm.backend != "replay"

    live_ids: set[str] = set()
    too_long = 0
    if live and genre != "math":
        ids = sorted(d["doc_id"] for d in ori_docs
                     if cfg.max_doc_tokens is None or approx_tokens(d["text"]) <= cfg.max_doc_tokens)
        too_long = len(ori_docs) - len(ids)
        live_ids = set(ids if cfg.max_docs_per_genre is None else ids[: cfg.max_docs_per_genre])

    # ---- live rewrites
    llm_metrics: dict[str, Any] = {}
    provenance = stage_provenance(llm)
    gate: dict[str, Any] = {}
    if live_ids:
        template = load_template(f"simplify_{genre}", cfg.prompt_version)
        names = names_block()
        with ChatClient(llm, metrics_path=llm_metrics_path, timing_key=f"llm_{genre}") as client:
            budget = fitted_budget(cfg.budget(genre), client.context_limit(), llm.max_tokens,
                                   estimate_tokens(template.render(names=names, text="")))
            if budget < cfg.budget(genre):
                log.info("simplify %s: chunks of at most %d tokens (not %d) so that prompt + chunk + max_tokens "
                         "fit the context of %d", genre, budget, cfg.budget(genre), client.context_limit())
            plan: dict[str, list[tuple[str, int, str, str]]] = {}  # doc -> [(part, req index, chunk, sep)]
            requests: list[ChatRequest] = []
            for doc in ori_docs:
                if doc["doc_id"] not in live_ids:
                    continue
                items = []
                for part, text in _doc_parts(doc):
                    for chunk, sep in chunk_text(text, budget):
                        cid = f"{doc['doc_id']}-{len(items):04d}"
                        items.append((part, len(requests), chunk, sep))
                        requests.append(ChatRequest(cid, template.render(names=names, text=chunk),
                                                    template.template_id, strip_end_marker,
                                                    max_tokens=reply_budget(chunk, cfg.max_length_ratio)))
                plan[doc["doc_id"]] = items
            results = client.run(requests)  # raises LLMFailure on an outage: nothing is written
        llm_metrics = {**client.metrics(), "template": template.template_id, "chunks": len(requests),
                       "chunk_tokens": budget}
        provenance = stage_provenance(llm, results, [template.template_id],
                                      {**client.decoding(), "max_tokens_per_chunk": REPLY_CAP_RULE},
                                      replayed=len(live_ids) < len(ori_docs))
        for doc in ori_docs:
            if doc["doc_id"] not in live_ids:
                continue
            items = plan[doc["doc_id"]]
            failed = [results[i] for _, i, _, _ in items if not results[i].ok]
            if failed or not items:
                reasons = sorted({f"llm_{r.reason}" for r in failed}) or ["empty"]
                quarantine.append({"doc_id": doc["doc_id"], "genre": genre, "split": doc["split"], "reasons": reasons,
                                   "details": {"chunks": len(items), "failed_chunks": [
                                       {"custom_id": r.custom_id, "error": r.error} for r in failed]}})
                counts.update(reasons)
                continue
            rebuilt: dict[str, str] = {}
            for part, i, _chunk, sep in items:
                rebuilt[part] = rebuilt.get(part, "") + results[i].parsed.strip() + sep
            rebuilt = {k: v.rstrip() for k, v in rebuilt.items()}
            if "prompt" in rebuilt or "response" in rebuilt:
                parts = {"prompt": rebuilt.get("prompt", ""), "response": rebuilt.get("response", "")}
                text = parts["prompt"] + "\n\n" + parts["response"]
            else:
                parts, text = None, rebuilt.get("text", "")
            reasons, figs = validator.check(doc["text"], text, genre)
            if figs:
                ratios.append(figs["length_ratio"])
                oovs.append(figs["oov_share"])
            if reasons:
                quarantine.append({"doc_id": doc["doc_id"], "genre": genre, "split": doc["split"],
                                   "reasons": reasons, "details": {**figs, "rewrite": text[:2000]}})
                counts.update(reasons)
                continue
            out[doc["doc_id"]] = _leaner_record(doc, text, parts)
            counts["rewritten"] += 1
        gate = quarantine_gate(len(quarantine), len(live_ids), llm, f"simplify@{genre}",
                               {k: v for k, v in counts.items() if k != "rewritten"}, provenance)

    # ---- replay (everything not sent to the LLM)
    for doc in ori_docs:
        if doc["doc_id"] in live_ids:
            continue
        if live and genre == "math":  # math passes through unchanged
            out[doc["doc_id"]] = _leaner_record(doc, doc["text"], doc.get("parts"))
            counts["passthrough"] += 1
            continue
        twin = twins.get(doc["doc_id"])
        if twin is None:
            quarantine.append({"doc_id": doc["doc_id"], "genre": genre, "split": doc["split"],
                               "reasons": ["no_released_twin"], "details": {}})
            counts["no_released_twin"] += 1
            continue
        if genre != "math":
            reasons, figs = validator.check(doc["text"], twin["text"], genre)
            would_fail.update(reasons)
            if reasons:
                would_fail["docs"] += 1
            if figs:
                ratios.append(figs["length_ratio"])
                oovs.append(figs["oov_share"])
        out[doc["doc_id"]] = _leaner_record(doc, twin["text"], twin.get("parts"))
        counts["replayed"] += 1

    docs = [out[d["doc_id"]] for d in ori_docs if d["doc_id"] in out]
    n_q = len(quarantine)
    assert len(docs) + n_q == len(ori_docs), "every document is either kept or quarantined"
    metrics = {
        "genre": genre, "backend": llm.backend, "docs_in": len(ori_docs), "docs_out": len(docs),
        "quarantined": n_q, "llm_docs": len(live_ids), "llm_ineligible_too_long": too_long,
        "quarantine_gate": gate,
        "replayed_docs": counts["replayed"],
        "passthrough_docs": counts["passthrough"], "rewritten_docs": counts["rewritten"],
        "quarantine_reasons": {k: v for k, v in sorted(counts.items())
                               if k not in ("replayed", "passthrough", "rewritten")},
        "validation": {"checked": len(ratios), "released_would_fail": dict(sorted(would_fail.items())),
                       "length_ratio": _summary(ratios), "oov_share": _summary(oovs)},
        "llm": llm_metrics, "provenance": provenance,
    }
    secs = time.monotonic() - t0
    timing.record(**{f"simplify_{genre}": {"seconds": round(secs, 3), "llm_docs": len(live_ids),
                                           "llm_docs_per_s": round(len(live_ids) / secs, 4) if live_ids else 0.0}})
    log.info("simplify %s: %d in, %d out, %d quarantined (%s)", genre, len(ori_docs), len(docs), n_q,
             metrics["quarantine_reasons"])
    return GenreResult(docs, quarantine, metrics)


def write_genre(res: GenreResult, out: Path | str, quarantine: Path | str, metrics: Path | str) -> None:
    write_jsonl(out, res.docs)
    write_jsonl(quarantine, res.quarantine)
    write_json(metrics, res.metrics)


def assemble_corpus(genre_files: list[Path], out_dir: Path | str, splits: list[str]) -> dict[str, Any]:
    """Concatenate per-genre leaner files into ``<out_dir>/<split>.jsonl`` (genre order as given)."""
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    stats: dict[str, Any] = {}
    for path in genre_files:
        for rec in read_docs(path):
            if rec["split"] not in by_split:
                raise ValueError(f"{path}: document {rec['doc_id'][:12]} has split {rec['split']!r}, "
                                 f"expected one of {splits}")
            by_split[rec["split"]].append(rec)
            g = stats.setdefault(rec["split"], {}).setdefault(rec["genre"], {"docs": 0, "words": 0})
            g["docs"] += 1
            g["words"] += len(rec["text"].split())
    for split, recs in by_split.items():
        write_jsonl(Path(out_dir) / f"{split}.jsonl", recs)
    return {"documents": stats,
            "totals": {s: {"docs": sum(g["docs"] for g in t.values()), "words": sum(g["words"] for g in t.values())}
                       for s, t in stats.items()}}


def main(argv: list[str] | None = None) -> int:
    """``python -m tinyhelen.simplify wordlist [--shard S] [--out F]``: rebuild the 2,000-word list."""
    import argparse

    from tinyhelen.data import NATURAL_GENRES
    from tinyhelen.io import atomic_open

    p = argparse.ArgumentParser(description=main.__doc__)
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
