"""EXP2 judging and report: LLM-judge scores or offline proxy metrics of the generated answers.

Backends (``judge.backend``)
----------------------------
``openai``  (the study's protocol) grammar, coherence and specificity, integers 0-5 each (sum 0-15), from
    an LLM through the shared LLM layer (``tinyhelen.llm``: any OpenAI-compatible endpoint from the ``llm``
    params section, cache, retries, concurrency). Temperature is forced to 0. The answers of all recipes to
    one question (same checkpoint step) are judged TOGETHER in one request, in a seeded shuffled order, and
    again in a second order (the reverse of the first, so every answer of a 4-answer group moves to another
    position); the final score of an answer is the mean over the orders. Agreement between the two orders
    and the mean score per position are reported (position bias). Replies must be one strict JSON object
    ``{"A": {"grammar": g, "coherence": c, "specificity": s}, ...}`` (``parse_judgement``); a bad reply is
    re-asked by the LLM layer (``llm.max_reasks`` or ``judge.max_reasks``).
``proxy``  (offline default; no LLM, NOT the LLM scores) clearly named proxy metrics, all ``proxy_*``:

    proxy_ref_ppl      word-level perplexity of the answer under a reference language model trained in the
                       pipeline (an interpolated Kneser-Ney word-bigram LM on the prepared train corpora of
                       both sides; tokenizer-independent, so recipes with different BPEs compare). Lower is
                       more fluent-looking text (a fluency proxy; degenerate repetition can also score low).
                       Undefined (null, left out of its mean, counted in ``n``) for an answer without words.
    proxy_empty        1 for an answer without any word (empty or only spaces/symbols), else 0
    proxy_repetition   share of the answer's word 3-grams that repeat an earlier 3-gram of the same answer
    proxy_distinct_1/2 distinct word 1-/2-grams over all 1-/2-grams of the answer (0 for an empty answer)
    proxy_q_overlap    share of the question's content words (stop words removed) found in the answer
                       (a crude specificity proxy)
    proxy_len_words    answer length in words

Report (``exp2_report``): per recipe the mean of every criterion (and of the 0-15 sum for the LLM) with
bootstrap 95% intervals (questions resampled with replacement, seeded), per similarity bin, and the
checkpoint-selection curve on the 31 inner-comparison questions.
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinyhelen.config import ParamsError, Section
from tinyhelen.entropy import word_tokens
from tinyhelen.io import InputError, iter_jsonl

log = logging.getLogger(__name__)

CRITERIA = ("grammar", "coherence", "specificity")
LLM_METRICS = (*CRITERIA, "total")
PROXY_METRICS = ("proxy_ref_ppl", "proxy_empty", "proxy_repetition", "proxy_distinct_1", "proxy_distinct_2",
                 "proxy_q_overlap", "proxy_len_words")
HIGHER_IS_BETTER = {"grammar": True, "coherence": True, "specificity": True, "total": True,
                    "proxy_ref_ppl": False, "proxy_empty": False, "proxy_repetition": False, "proxy_distinct_1": True,
                    "proxy_distinct_2": True, "proxy_q_overlap": True, "proxy_len_words": True}
METRIC_LABELS = {
    "grammar": "grammar (LLM, 0-5)", "coherence": "coherence (LLM, 0-5)",
    "specificity": "specificity (LLM, 0-5)", "total": "sum (LLM, 0-15)",
    "proxy_ref_ppl": "proxy: reference-LM word perplexity of non-empty answers (lower = more fluent-looking)",
    "proxy_empty": "proxy: empty-answer share",
    "proxy_repetition": "proxy: repeated 3-gram share (lower = better)",
    "proxy_distinct_1": "proxy: distinct-1", "proxy_distinct_2": "proxy: distinct-2",
    "proxy_q_overlap": "proxy: question content-word overlap", "proxy_len_words": "proxy: answer length (words)",
}
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
END_MARK = "<<<END>>>"
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself
yourselves tell describe explain imagine think would like""".split())


# ----------------------------------------------------------------------------------------- config
class ProxyConfig(BaseModel):
    """``judge.proxy``: the reference LM of the proxy metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ref_corpora: list[str] = Field(default_factory=lambda: ["data/prepared/corpus/leaner/train.jsonl",
                                                            "data/prepared/corpus/ori/train.jsonl"])
    ref_genres: list[str] = Field(default_factory=lambda: ["book", "conversation", "textbook", "web", "wiki"])
    ref_max_words: int | None = Field(1_000_000, ge=1, description="words per corpus file (null = all)")
    discount: float = Field(0.75, gt=0, lt=1, description="Kneser-Ney absolute discount")


class JudgeConfig(Section):
    """``judge:`` section of params.yaml."""

    backend: Literal["proxy", "openai"] = "proxy"
    orders: int = Field(2, ge=1, le=2, description="judge each group in 1 or 2 orders (2: position bias)")
    max_reasks: int | None = Field(None, ge=0, description="null = llm.max_reasks")
    template_version: int | None = Field(None, ge=1, description="prompts/judge/v<N>.txt; null = latest")
    proxy: ProxyConfig = ProxyConfig()


# ----------------------------------------------------------------------------------------- parser
def parse_judgement(text: str, labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Strict parser of a judge reply: ONE JSON object mapping exactly ``labels`` to
    ``{"grammar": int, "coherence": int, "specificity": int}`` with integers 0-5.

    Tolerated around it: surrounding white space, a ```json code fence, a final ``<<<END>>>`` line.
    Anything else (prose, missing or extra labels/criteria, floats, out-of-range values) raises ValueError
    with a message that says what is wrong (sent back to the model on a re-ask)."""
    body = text.strip()
    if body.endswith(END_MARK):
        body = body[:-len(END_MARK)].rstrip()
    fence = re.fullmatch(r"```(?:json)?\s*\n?(.*?)\n?```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    if not body.startswith("{"):
        raise ValueError("reply is not a JSON object (it must start with '{' and contain nothing else)")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"reply is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(obj, dict):
        raise ValueError("reply must be a JSON object keyed by answer label")
    missing = [lab for lab in labels if lab not in obj]
    extra = [k for k in obj if k not in labels]
    if missing or extra:
        raise ValueError(f"labels must be exactly {list(labels)}; missing {missing}, unexpected {extra}")
    out: dict[str, dict[str, int]] = {}
    for lab in labels:
        s = obj[lab]
        if not isinstance(s, dict):
            raise ValueError(f"{lab}: expected an object with {list(CRITERIA)}")
        miss = [c for c in CRITERIA if c not in s]
        ext = [k for k in s if k not in CRITERIA]
        if miss or ext:
            raise ValueError(f"{lab}: criteria must be exactly {list(CRITERIA)}; missing {miss}, unexpected {ext}")
        out[lab] = {}
        for c in CRITERIA:
            v = s[c]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{lab}.{c}: must be an integer 0-5, got {v!r}")
            if not 0 <= v <= 5:
                raise ValueError(f"{lab}.{c}: {v} is outside 0-5")
            out[lab][c] = v
    return out


# ----------------------------------------------------------------------------------------- inputs
def read_generations(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Generation records of every recipe (``data/generations/<recipe>/<set>.jsonl``)."""
    out = []
    need = ("set", "qid", "question", "recipe", "step", "answer")
    for path in paths:
        for line, rec in iter_jsonl(path):
            if not isinstance(rec, dict) or any(k not in rec for k in need):
                raise InputError(path, f"generation record needs fields {list(need)}", line)
            out.append(rec)
    if not out:
        raise InputError(", ".join(map(str, paths)), "no generations")
    return out


def _answer_key(r: dict[str, Any]) -> tuple:
    return (r["set"], r["qid"], r["step"], r["recipe"])


# ----------------------------------------------------------------------------------------- LLM judge
def judge_groups(gens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Answers judged together: same question set, question and checkpoint step (one per recipe)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in gens:
        groups[(r["set"], r["qid"], r["step"])].append(r)
    out = []
    for key in sorted(groups, key=str):
        g = sorted(groups[key], key=lambda r: r["recipe"])
        if len({r["recipe"] for r in g}) != len(g):
            raise InputError(f"{key}", "duplicate answers of one recipe for the same question and step")
        out.append(g)
    return out


def orders_for(group: list[dict[str, Any]], seed: int, n_orders: int) -> list[list[int]]:
    """Seeded shuffled order of a group's answers and (if two orders) its reverse."""
    g0 = group[0]
    rng = random.Random(f"{seed}:{g0['set']}:{g0['qid']}:{g0['step']}")
    first = list(range(len(group)))
    rng.shuffle(first)
    return [first, first[::-1]][:n_orders]


def render_answers(answers: Sequence[str], labels: Sequence[str]) -> str:
    from tinyhelen.llm.prompts import BEGIN_TEXT, END_TEXT

    return "\n\n".join(f"Answer {lab}:\n{BEGIN_TEXT}\n{a.strip() or '(empty answer)'}\n{END_TEXT}"
                       for lab, a in zip(labels, answers))


def build_requests(groups: list[list[dict[str, Any]]], cfg: JudgeConfig, seed: int, template=None):
    """ChatRequests (one per group and order) and their bookkeeping ``[(group index, order, perm)]``."""
    from tinyhelen.llm.client import ChatRequest
    from tinyhelen.llm.prompts import load_template

    tpl = template or load_template("judge", cfg.template_version)
    reqs, meta = [], []
    for gi, group in enumerate(groups):
        labels = list(LABELS[:len(group)])
        example = json.dumps({lab: {c: 3 for c in CRITERIA} for lab in labels[:2]})
        for oi, perm in enumerate(orders_for(group, seed, cfg.orders)):
            msgs = tpl.render(question=group[0]["question"], answers=render_answers(
                [group[i]["answer"] for i in perm], labels), labels=", ".join(labels), example=example)
            g0 = group[0]
            reqs.append(ChatRequest(custom_id=f"judge:{g0['set']}:{g0['qid'][:16]}:s{g0['step']}:o{oi}",
                                    messages=msgs, template_id=tpl.template_id,
                                    parse=lambda t, labs=tuple(labels): parse_judgement(t, labs),
                                    max_reasks=cfg.max_reasks))
            meta.append((gi, oi, perm))
    return reqs, meta


def judge_llm(gens: list[dict[str, Any]], cfg: JudgeConfig, llm_cfg: Any, seed: int,
              metrics_path: Path | str | None = None, cache_dir: str | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every answer with the LLM judge; returns (score records, judge summary incl. agreement)."""
    from tinyhelen.llm.client import ChatClient

    if getattr(llm_cfg, "temperature", 0.0) != 0.0:
        log.warning("judge: forcing temperature 0 (llm.temperature=%s)", llm_cfg.temperature)
    # judge.backend=openai calls the `llm` endpoint itself: the corpus stages may stay on replay
    llm_cfg = llm_cfg.model_copy(update={"temperature": 0.0, "backend": "openai"})
    groups = judge_groups(gens)
    reqs, meta = build_requests(groups, cfg, seed)
    client = ChatClient(llm_cfg, metrics_path, cache_dir=cache_dir)
    t0 = time.time()
    try:
        results = client.run(reqs)
    except RuntimeError as exc:  # llm.backend makes no calls and the replies are not cached
        raise ParamsError(f"judge.backend=openai: {exc}") from None
    secs = time.time() - t0
    # per answer: scores of each order and the position it was shown at
    per: dict[tuple, dict[int, tuple[int, dict[str, int]]]] = defaultdict(dict)
    failures: Counter = Counter()
    for (gi, oi, perm), res in zip(meta, results, strict=True):
        group = groups[gi]
        if not res.ok:
            failures[res.reason or "unknown"] += 1
            log.warning("judge request %s failed: %s", res.custom_id, res.error)
            continue
        for pos, idx in enumerate(perm):
            per[_answer_key(group[idx])][oi] = (pos, res.parsed[LABELS[pos]])
    records = []
    for group in groups:
        for r in group:
            got = per.get(_answer_key(r), {})
            rec = _base_record(r)
            rec["backend"] = "openai"
            rec["orders"] = {str(oi): {"position": pos, **sc} for oi, (pos, sc) in sorted(got.items())}
            if got:
                for c in CRITERIA:
                    rec[c] = float(np.mean([sc[c] for _, sc in got.values()]))
                rec["total"] = sum(rec[c] for c in CRITERIA)
            else:
                for m in LLM_METRICS:
                    rec[m] = None
            records.append(rec)
    summary = {"backend": "openai", "model": getattr(llm_cfg, "model", None),
               "template_id": reqs[0].template_id if reqs else None, "groups": len(groups),
               "requests": len(reqs), "failed_requests": sum(failures.values()), "failures": dict(failures),
               "unjudged_answers": sum(1 for r in records if r["total"] is None),
               "seconds": round(secs, 2), "requests_per_s": round(len(reqs) / max(secs, 1e-9), 2),
               "agreement": order_agreement(records) if cfg.orders == 2 else None,
               "position_means": position_means(records), "llm": client.metrics()}
    return records, summary


def order_agreement(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How much the score of an answer depends on the order it was shown in (answers judged in both)."""
    pairs = [(r["orders"]["0"], r["orders"]["1"]) for r in records if len(r.get("orders", {})) == 2]
    out: dict[str, Any] = {"answers": len(pairs)}
    for c in (*CRITERIA, "total"):
        a = np.array([p[0][c] if c != "total" else sum(p[0][k] for k in CRITERIA) for p in pairs], float)
        b = np.array([p[1][c] if c != "total" else sum(p[1][k] for k in CRITERIA) for p in pairs], float)
        if not len(a):
            out[c] = None
            continue
        r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else None
        out[c] = {"exact": round(float((a == b).mean()), 4), "within_1": round(float((abs(a - b) <= 1).mean()), 4),
                  "mean_abs_diff": round(float(abs(a - b).mean()), 4),
                  "pearson": None if r is None else round(r, 4)}
    return out


def position_means(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean total score (0-15) by the position (A, B, ...) an answer was shown at, over all orders."""
    by: dict[int, list[float]] = defaultdict(list)
    for r in records:
        for o in r.get("orders", {}).values():
            by[o["position"]].append(sum(o[c] for c in CRITERIA))
    return {LABELS[p]: round(float(np.mean(v)), 4) for p, v in sorted(by.items())}


# ----------------------------------------------------------------------------------------- proxy
_SENT_SPLIT = re.compile(r"[.!?]+|\n")
BOS, EOS = "<s>", "</s>"


class BigramLM:
    """Interpolated Kneser-Ney word-bigram language model with sentence boundaries and an open vocabulary.

    p(w | v) = max(c(v w) - d, 0) / c(v) + d * N1+(v .) / c(v) * p_cont(w)
    p_cont(w) = (N1+(. w) + 1) / (N1+(. .) + |V| + 1)   (add-one over the vocabulary + one unknown word)
    An unseen history uses p_cont alone."""

    def __init__(self, discount: float = 0.75):
        self.d = discount
        self.bigrams: Counter = Counter()
        self.hist: Counter = Counter()
        self.followers: Counter = Counter()    # N1+(v .)
        self.cont: Counter = Counter()         # N1+(. w)
        self.n_types = 0
        self.words = 0

    @staticmethod
    def sentences(text: str) -> list[list[str]]:
        return [w for s in _SENT_SPLIT.split(text.replace("\\n", "\n")) if (w := word_tokens(s))]

    def fit(self, texts: Iterable[str], max_words: int | None = None) -> "BigramLM":
        for text in texts:
            for sent in self.sentences(text):
                seq = [BOS, *sent, EOS]
                self.bigrams.update(zip(seq, seq[1:]))
                self.words += len(sent)
            if max_words is not None and self.words >= max_words:
                break
        return self

    def finalize(self) -> "BigramLM":
        self.hist, self.followers, self.cont = Counter(), Counter(), Counter()
        for (v, w), c in self.bigrams.items():
            self.hist[v] += c
            self.followers[v] += 1
            self.cont[w] += 1
        self.n_bigram_types = len(self.bigrams)
        self.vocab = len(self.cont)
        return self

    def logprob(self, v: str, w: str) -> float:
        pc = (self.cont.get(w, 0) + 1) / (self.n_bigram_types + self.vocab + 1)
        cv = self.hist.get(v, 0)
        if not cv:
            return math.log(pc)
        p = max(self.bigrams.get((v, w), 0) - self.d, 0) / cv + self.d * self.followers[v] / cv * pc
        return math.log(p)

    def perplexity(self, text: str) -> float:
        """Per-token perplexity (words + one end-of-sentence token per sentence). An empty text is scored
        as one empty sentence (``<s> </s>``), so every answer gets a finite value."""
        sents = self.sentences(text) or [[]]
        lp, n = 0.0, 0
        for sent in sents:
            seq = [BOS, *sent, EOS]
            for v, w in zip(seq, seq[1:]):
                lp += self.logprob(v, w)
                n += 1
        return math.exp(-lp / n)


def train_reference_lm(cfg: ProxyConfig) -> tuple[BigramLM, dict[str, Any]]:
    """The proxy reference LM, trained on the configured prepared corpora (natural-language genres)."""
    from tinyhelen.data import read_docs

    t0 = time.time()
    lm = BigramLM(cfg.discount)
    for path in cfg.ref_corpora:
        before = lm.words
        docs = (d["text"] for d in read_docs(path, cfg.ref_genres))
        lm.fit(docs, None if cfg.ref_max_words is None else before + cfg.ref_max_words)
        if lm.words == before:
            raise InputError(path, f"no words of genres {cfg.ref_genres} for the reference LM")
    lm.finalize()
    secs = time.time() - t0
    info = {"kind": "interpolated Kneser-Ney word bigram", "corpora": list(cfg.ref_corpora),
            "genres": list(cfg.ref_genres), "train_words": lm.words, "vocab": lm.vocab,
            "bigram_types": lm.n_bigram_types, "seconds": round(secs, 2),
            "words_per_s": round(lm.words / max(secs, 1e-9))}
    log.info("reference LM: %s", info)
    return lm, info


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def content_words(text: str) -> set[str]:
    words = set(word_tokens(text))
    return (words - STOPWORDS) or words


def proxy_scores(answer: str, question: str, lm: BigramLM) -> dict[str, float | None]:
    """All proxy metrics of one answer (see the module docstring)."""
    words = word_tokens(answer)
    tri = _ngrams(words, 3)
    seen: set = set()
    rep = 0
    for g in tri:
        rep += g in seen
        seen.add(g)
    out: dict[str, float | None] = {"proxy_ref_ppl": lm.perplexity(answer) if words else None,
                                    "proxy_empty": 0.0 if words else 1.0,
                                    "proxy_repetition": rep / len(tri) if tri else 0.0}
    for n in (1, 2):
        grams = _ngrams(words, n)
        out[f"proxy_distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    q = content_words(question)
    out["proxy_q_overlap"] = len(q & set(words)) / len(q) if q else 0.0
    out["proxy_len_words"] = float(len(words))
    return out


def _base_record(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("set", "qid", "bin", "recipe", "checkpoint", "step")}


def judge_proxy(gens: list[dict[str, Any]], cfg: JudgeConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lm, info = train_reference_lm(cfg.proxy)
    t0 = time.time()
    records = []
    for r in gens:
        rec = _base_record(r)
        rec["backend"] = "proxy"
        rec.update({k: None if v is None else round(v, 6)
                    for k, v in proxy_scores(r["answer"], r["question"], lm).items()})
        records.append(rec)
    secs = time.time() - t0
    return records, {"backend": "proxy", "note": "proxy metrics, not LLM-judge scores", "reference_lm": info,
                     "answers": len(records), "empty_answers": int(sum(r["proxy_empty"] for r in records)),
                     "seconds": round(secs, 2), "answers_per_s": round(len(records) / max(secs, 1e-9), 1)}


# ----------------------------------------------------------------------------------------- report
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval (items resampled with replacement, seeded)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(x.mean()), float(lo), float(hi)


def metrics_of(backend: str) -> tuple[str, ...]:
    return LLM_METRICS if backend == "openai" else PROXY_METRICS


def _summ(vals: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    m, lo, hi = bootstrap_ci(vals, n_boot, seed)
    r = lambda v: None if math.isnan(v) else round(v, 4)  # noqa: E731
    return {"mean": r(m), "ci95": [r(lo), r(hi)], "n": len(vals)}


def report(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
           selection_metric: str | None = None, max_unscored_share: float = 0.5) -> dict[str, Any]:
    """Per recipe / per bin tables with bootstrap CIs and the checkpoint-selection curve.

    Checkpoint selection: the best mean of the selection metric among the checkpoints whose share of
    answers WITHOUT a value (proxy_ref_ppl: empty answers; LLM: unjudged) is at most ``max_unscored_share``
    (an all-empty checkpoint must not win on the few answers it gave); if none qualifies, the checkpoint
    with the fewest unscored answers."""
    metrics = metrics_of(backend)
    sel = selection_metric or metrics[-1 if backend == "openai" else 0]
    if sel not in metrics:
        raise ParamsError(f"exp2.selection_metric: {sel!r} is not a metric of backend {backend} "
                          f"({', '.join(metrics)})")
    main = [s for s in scores if s["set"] == "all"]
    inner = [s for s in scores if s["set"] == "inner_comparison"]
    out: dict[str, Any] = {"backend": backend, "metrics": list(metrics), "recipes": {}, "by_bin": {},
                           "checkpoint_curve": {}, "selection_metric": sel,
                           "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in metrics}}
    bins = sorted({s["bin"] for s in main if s.get("bin")})
    for rec in recipes:
        rows = [s for s in main if s["recipe"] == rec]
        out["recipes"][rec] = {m: _summ([s[m] for s in rows if s.get(m) is not None], n_boot, seed)
                               for m in metrics}
        out["recipes"][rec]["answers"] = len(rows)
        out["by_bin"][rec] = {b: {m: _summ([s[m] for s in rows if s.get("bin") == b and s.get(m) is not None],
                                           n_boot, seed) for m in metrics} for b in bins}
        steps = sorted({s["step"] for s in inner if s["recipe"] == rec})
        curve = []
        for st in steps:
            here = [s for s in inner if s["recipe"] == rec and s["step"] == st]
            vals = [s[sel] for s in here if s.get(sel) is not None]
            curve.append({"step": st, **_summ(vals, n_boot, seed),
                          "unscored_share": round(1 - len(vals) / len(here), 4)})
        out["checkpoint_curve"][rec] = curve
        valid = [c for c in curve if c["mean"] is not None and c["unscored_share"] <= max_unscored_share]
        if valid:
            best = (max if HIGHER_IS_BETTER[sel] else min)(valid, key=lambda c: c["mean"])
            out["recipes"][rec]["selected_step"] = best["step"]
        elif curve:
            out["recipes"][rec]["selected_step"] = min(curve, key=lambda c: (c["unscored_share"], c["step"]))["step"]
    return out


def flat_metrics(rep: dict[str, Any]) -> dict[str, Any]:
    """The compact DVC metrics view: per recipe mean and interval of every metric."""
    return {rec: {m: {"mean": v[m]["mean"], "lo": v[m]["ci95"][0], "hi": v[m]["ci95"][1]}
                  for m in rep["metrics"]} | {"selected_step": v.get("selected_step")}
            for rec, v in rep["recipes"].items()}


def _fmt(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.3g} [{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]"


def markdown(rep: dict[str, Any], provenance: dict[str, Any]) -> str:
    backend = rep["backend"]
    metrics = rep["metrics"]
    lines = ["# EXP2: instruction tuning with four data recipes", ""]
    if backend == "proxy":
        lines += ["> **Proxy metrics, not LLM-judge scores.** Judged offline (`judge.backend: proxy`): the "
                  "columns are automatic proxies (see docs/exp2.md), not the study's grammar/coherence/"
                  "specificity scores. Run with `judge.backend=openai` for the LLM-judged table.", ""]
    else:
        lines += [f"Judge: LLM `{provenance.get('judge_model')}` (temperature 0), grammar/coherence/"
                  "specificity 0-5 each, sum 0-15; mean over two presentation orders.", ""]
    lines += [f"- Instruction data source: `{provenance.get('instruct_source')}`",
              f"- Recipe = `<pretraining corpus>-<instruction-tuning corpus>`; 95% bootstrap intervals "
              f"({provenance.get('n_boot')} resamples of the questions)",
              f"- Questions answered: {provenance.get('questions')}; decoding: {provenance.get('decoding')}", ""]
    lines += ["## Per recipe (Leaner-Eval)", "", "| recipe | " + " | ".join(METRIC_LABELS[m] for m in metrics)
              + " | selected step |", "|---" * (len(metrics) + 2) + "|"]
    for rec, v in rep["recipes"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[m]) for m in metrics) + f" | {v.get('selected_step')} |")
    main = metrics[-1] if backend == "openai" else metrics[0]
    lines += ["", f"## Per similarity bin: {METRIC_LABELS[main]}", ""]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    lines += ["| recipe | " + " | ".join(f"split-{b}" for b in bins) + " |", "|---" * (len(bins) + 1) + "|"]
    for rec, v in rep["by_bin"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[b][main]) for b in bins) + " |")
    sel = rep["selection_metric"]
    lines += ["", f"## Checkpoint selection (31 inner-comparison questions): {METRIC_LABELS[sel]}", ""]
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    lines += ["| recipe | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for rec, cs in rep["checkpoint_curve"].items():
        by = {c["step"]: c for c in cs}
        lines.append(f"| {rec} | " + " | ".join(
            (_fmt(by[s]) + (f" ({by[s]['unscored_share']:.0%} unscored)" if by[s].get("unscored_share") else ""))
            if s in by else "" for s in steps) + " |")
    if provenance.get("agreement"):
        ag = provenance["agreement"]
        lines += ["", "## Position bias (same answers, two presentation orders)", "",
                  f"Answers judged in both orders: {ag['answers']}. Position means (sum 0-15): "
                  f"{provenance.get('position_means')}", "",
                  "| criterion | exact agreement | within 1 | mean abs diff | Pearson r |", "|---|---|---|---|---|"]
        for c in (*CRITERIA, "total"):
            a = ag.get(c)
            if a:
                lines.append(f"| {c} | {a['exact']} | {a['within_1']} | {a['mean_abs_diff']} | {a['pearson']} |")
    return "\n".join(lines) + "\n"


def curve_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: step x recipe (selection metric)."""
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    rows = []
    for s in steps:
        row: dict[str, Any] = {"step": s}
        for rec, cs in rep["checkpoint_curve"].items():
            row[rec] = next((c["mean"] for c in cs if c["step"] == s), None)
        rows.append(row)
    return rows


def recipe_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: one per (recipe, bin) with the main metric (bin 'all' = every question)."""
    main = rep["metrics"][-1] if rep["backend"] == "openai" else rep["metrics"][0]
    rows = []
    for rec, v in rep["recipes"].items():
        rows.append({"recipe": rec, "bin": "all", "metric": main, "mean": v[main]["mean"],
                     "lo": v[main]["ci95"][0], "hi": v[main]["ci95"][1]})
        for b, bv in rep["by_bin"][rec].items():
            rows.append({"recipe": rec, "bin": b, "metric": main, "mean": bv[main]["mean"],
                         "lo": bv[main]["ci95"][0], "hi": bv[main]["ci95"][1]})
    return rows


def plot_png(rep: dict[str, Any], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    metrics = rep["metrics"]
    main = metrics[-1] if rep["backend"] == "openai" else metrics[0]
    recipes = list(rep["recipes"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    means = [rep["recipes"][r][main]["mean"] or 0 for r in recipes]
    err = [[m - (rep["recipes"][r][main]["ci95"][0] or m) for r, m in zip(recipes, means)],
           [(rep["recipes"][r][main]["ci95"][1] or m) - m for r, m in zip(recipes, means)]]
    ax.bar(recipes, means, yerr=err, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][:len(recipes)])
    ax.set_title(METRIC_LABELS[main], fontsize=9)
    ax.set_xlabel("recipe (pretrain-tune)")
    ax = axes[1]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    w = 0.8 / max(1, len(recipes))
    for i, r in enumerate(recipes):
        ax.bar([j + i * w for j in range(len(bins))],
               [rep["by_bin"][r][b][main]["mean"] or 0 for b in bins], width=w, label=r)
    ax.set_xticks([j + w * (len(recipes) - 1) / 2 for j in range(len(bins))], [f"split-{b}" for b in bins])
    ax.set_title(f"by similarity bin: {main}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    sel = rep["selection_metric"]
    for r, cs in rep["checkpoint_curve"].items():
        ax.plot([c["step"] for c in cs], [c["mean"] for c in cs], marker="o", label=r)
    ax.set_title(f"checkpoint selection (inner comparison): {sel}", fontsize=9)
    ax.set_xlabel("instruction-tuning step")
    ax.legend(fontsize=7)
    if rep["backend"] == "proxy":
        fig.suptitle("EXP2 - PROXY METRICS (offline, not LLM-judge scores)", fontsize=10)
    else:
        fig.suptitle("EXP2 - LLM judge", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


class Exp2Config(Section):
    """``exp2:`` section of params.yaml (the report)."""

    n_boot: int = Field(1000, ge=100)
    selection_metric: str | None = Field(None, description="checkpoint-selection metric; null = "
                                                           "proxy_ref_ppl (proxy) / total (openai)")
    recipes: list[str] = Field(default_factory=lambda: ["leaner-leaner", "leaner-ori", "ori-leaner", "ori-ori"])
    max_unscored_share: float = Field(0.5, ge=0, le=1, description="checkpoint selection ignores checkpoints "
                                      "with more answers without a score (empty / unjudged)")
