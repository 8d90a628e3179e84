"""Benchmark creation: Leaner-GLUE (stage ``leaner_glue``) and Leaner-Eval (stage ``leaner_eval``).

**Leaner-GLUE.** ``replay`` (offline default) writes the released Leaner-GLUE items (prepared glue schema:
task, split, idx, text_a, text_b, label). ``openai`` needs the ORIGINAL GLUE items, which the offline release
does not have: ``leaner_glue.source_dir`` points at them, either as JSONL files in the prepared glue schema
(``<task>_<split>.jsonl``; ``source_format: jsonl``) or as the official GLUE download (``CoLA/train.tsv``,
``MNLI/dev_matched.tsv`` ...; ``source_format: glue_tsv``). Per item: (1) rewrite call with the gold label in
the prompt (``prompts/glue_rewrite``), (2) an independent call that takes the rewritten item as a test without
the label (``prompts/glue_verify``); the item is kept only if (2) reaches the gold label (STS-B: within
``stsb_tolerance``). Dropped items go to ``data/leaner/quarantine_glue.jsonl`` with the reason.

**Leaner-Eval.** ``replay`` writes the released questions with their released bin and our ``similarity``.
``openai`` asks the model for new simple questions from random seed examples (the released questions),
deduplicates them (exact after normalisation, then near-duplicates by TF-IDF cosine against seeds and kept
questions) and bins them by ``similarity``.

**Similarity (0-10)** of a question to the instruction-tuning data: ``10 x`` the maximum cosine similarity
between the question's TF-IDF vector and those of the instruction prompts (word 1-2-grams, lowercased,
sublinear tf, IDF fitted on the instruction prompts). Offline, the instruction data are the prompts of the
code genre (``parts.prompt`` in ``data/prepared/corpus/ori/train.jsonl``); the study used alpaca-cleaned.
Bins: ``0-7`` (< 7), ``7-8``, ``8-9``, ``9-10`` (>= 9).
"""
from __future__ import annotations

import csv
import hashlib
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from tinyhelen import timing
from tinyhelen.config import ParamsError, Section, check_subset
from tinyhelen.data import EVAL_BINS, GLUE_TASKS, read_docs
from tinyhelen.io import InputError, iter_jsonl, write_jsonl
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig
from tinyhelen.llm.prompts import load_template, strip_end_marker

log = logging.getLogger(__name__)

GLUE_LABELS: dict[str, list[str] | None] = {
    "cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
    "mnli": ["entailment", "neutral", "contradiction"], "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"], "wnli": ["not_entailment", "entailment"], "stsb": None,
}
TASK_DESCRIPTIONS = {
    "cola": "Is sentence A a grammatically acceptable English sentence?",
    "sst2": "Is the feeling of sentence A positive or negative?",
    "mrpc": "Do sentences A and B mean the same thing (equivalent)?",
    "qqp": "Do questions A and B ask the same thing (duplicate)?",
    "stsb": "How similar in meaning are sentences A and B, from 0 (not at all) to 5 (the same meaning)?",
    "mnli": "Given sentence A, is sentence B true (entailment), maybe true (neutral) or false (contradiction)?",
    "qnli": "Does sentence B contain the answer to question A (entailment) or not (not_entailment)?",
    "rte": "If sentence A is true, must sentence B also be true (entailment) or not (not_entailment)?",
    "wnli": "If sentence A is true, must sentence B also be true (entailment) or not (not_entailment)?",
}


# ============================================================================================ GLUE
class LeanerGlueConfig(Section):
    """``leaner_glue:`` section of params.yaml."""

    tasks: list[str] = Field(default_factory=lambda: list(GLUE_TASKS))
    source_format: Literal["jsonl", "glue_tsv"] = "jsonl"
    source_dir: str | None = None              # openai backend: the ORIGINAL GLUE items (see module doc)
    splits: list[str] | None = None             # openai: only these splits (null: every file found)
    max_items_per_file: int | None = Field(50, ge=1)  # openai: items per task/split file sent to the LLM
    stsb_tolerance: float = Field(0.5, ge=0, le=5)
    rewrite_version: int | None = None
    verify_version: int | None = None

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return check_subset(v, GLUE_TASKS, "GLUE task")


# official GLUE TSV layout: task -> (has header, text_a column, text_b column or None, label column, label map)
_TSV = {
    "cola": (False, 3, None, 1, {"0": 0, "1": 1}),
    "sst2": (True, "sentence", None, "label", {"0": 0, "1": 1}),
    "mrpc": (True, "#1 String", "#2 String", "Quality", {"0": 0, "1": 1}),
    "qqp": (True, "question1", "question2", "is_duplicate", {"0": 0, "1": 1}),
    "stsb": (True, "sentence1", "sentence2", "score", None),
    "mnli": (True, "sentence1", "sentence2", "gold_label", {"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": (True, "question", "sentence", "label", {"entailment": 0, "not_entailment": 1}),
    "rte": (True, "sentence1", "sentence2", "label", {"entailment": 0, "not_entailment": 1}),
    "wnli": (True, "sentence1", "sentence2", "label", {"0": 0, "1": 1}),
}
_TSV_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
             "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
_TSV_SPLITS = {"train.tsv": "train", "dev.tsv": "validation", "dev_matched.tsv": "validation_matched",
               "dev_mismatched.tsv": "validation_mismatched"}


def load_glue_tsv(root: Path, task: str) -> dict[str, list[dict[str, Any]]]:
    """Labelled splits of one task from the official GLUE download (test files have no labels: skipped)."""
    header, ca, cb, cl, lmap = _TSV[task]
    out: dict[str, list[dict[str, Any]]] = {}
    for fname, split in _TSV_SPLITS.items():
        path = root / _TSV_DIRS[task] / fname
        if not path.exists():
            continue
        items = []
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        cols = {name: i for i, name in enumerate(rows[0])} if header else {}
        for lineno, row in enumerate(rows[1:] if header else rows, 2 if header else 1):
            try:
                get = (lambda c, r=row: r[cols[c]] if isinstance(c, str) else r[c])
                raw = get(cl)
                label: int | float = float(raw) if lmap is None else lmap[raw]
                items.append({"task": task, "split": split, "idx": len(items), "text_a": get(ca),
                              "text_b": get(cb) if cb is not None else None, "label": label})
            except (IndexError, KeyError, ValueError) as exc:
                raise InputError(path, f"bad GLUE row ({type(exc).__name__}: {exc})", lineno) from None
        out[split] = items
    return out


def load_glue_jsonl(root: Path, task: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.glob(f"{task}_*.jsonl")):
        split = path.stem[len(task) + 1:]
        items = []
        for line, r in iter_jsonl(path):
            for k in ("idx", "text_a", "label"):
                if k not in r:
                    raise InputError(path, f"missing field {k!r}", line)
            items.append({"task": task, "split": split, "idx": r["idx"], "text_a": r["text_a"],
                          "text_b": r.get("text_b"), "label": r["label"]})
        out[split] = items
    return out


def label_name(task: str, label: int | float) -> str:
    names = GLUE_LABELS[task]
    return f"{float(label):.1f}" if names is None else names[int(label)]


def item_block(text_a: str, text_b: str | None) -> str:
    return f"A: {text_a}" + (f"\nB: {text_b}" if text_b is not None else "")


def parse_item(two: bool):
    """Parser of a rewrite reply: lines ``A: ...`` (and ``B: ...``) before the end marker."""

    def parse(text: str) -> dict[str, str | None]:
        body = strip_end_marker(text)
        got: dict[str, str] = {}
        for ln in body.splitlines():
            m = re.match(r"^\s*([AB])\s*:\s*(.*\S)\s*$", ln)
            if m:
                got.setdefault(m.group(1), m.group(2))
        if "A" not in got or (two and "B" not in got):
            raise ValueError("reply must have a line 'A: ...'" + (" and a line 'B: ...'" if two else ""))
        return {"text_a": got["A"], "text_b": got.get("B") if two else None}

    return parse


def parse_answer(task: str):
    """Parser of a verify reply ``ANSWER: <label>`` -> label id (or a float for STS-B)."""
    names = GLUE_LABELS[task]

    def parse(text: str) -> int | float:
        body = strip_end_marker(text)
        m = re.search(r"ANSWER\s*:\s*(.+)", body, re.I)
        if not m:
            raise ValueError("reply must have a line 'ANSWER: <answer>'")
        ans = m.group(1).strip().strip("\"'.` ").lower().replace(" ", "_")
        if names is None:
            try:
                v = float(ans)
            except ValueError:
                raise ValueError(f"answer {ans!r} is not a number from 0 to 5") from None
            if not 0 <= v <= 5:
                raise ValueError(f"answer {v} is outside 0-5")
            return v
        if ans not in names:
            raise ValueError(f"answer {ans!r} is not one of {names}")
        return names.index(ans)

    return parse


def leaner_glue(cfg: LeanerGlueConfig, llm: LLMConfig, prepared_glue: Path | str, out_dir: Path | str,
                quarantine_path: Path | str, llm_metrics_path: Path | str | None = None) -> dict[str, Any]:
    """Write ``out_dir/<task>_<split>.jsonl`` and the quarantine file; return the metrics."""
    t0 = time.time()
    out_dir = Path(out_dir)
    per: dict[str, dict[str, int]] = {}
    dropped_recs: list[dict[str, Any]] = []
    files: dict[str, list[dict[str, Any]]] = {}
    llm_metrics: dict[str, Any] = {}
    if llm.backend == "replay":
        for task in cfg.tasks:
            for path in sorted(Path(prepared_glue).glob(f"{task}_*.jsonl")):
                recs = [r for _, r in iter_jsonl(path)]
                files[path.stem] = recs
                per.setdefault(task, {"kept": 0, "dropped": 0})["kept"] += len(recs)
    else:
        if not cfg.source_dir:
            raise ParamsError("leaner_glue.source_dir: required with llm.backend=openai (the original GLUE "
                              "items are not part of the offline release); see docs/llm.md")
        root = Path(cfg.source_dir)
        if not root.is_dir():
            raise InputError(root, "leaner_glue.source_dir: directory not found")
        rw_t = load_template("glue_rewrite", cfg.rewrite_version)
        vf_t = load_template("glue_verify", cfg.verify_version)
        client = ChatClient(llm, metrics_path=llm_metrics_path)
        items: list[dict[str, Any]] = []
        for task in cfg.tasks:
            loader = load_glue_tsv if cfg.source_format == "glue_tsv" else load_glue_jsonl
            for split, recs in sorted(loader(root, task).items()):
                if cfg.splits is not None and split not in cfg.splits:
                    continue
                recs = sorted(recs, key=lambda r: r["idx"])[: cfg.max_items_per_file]
                files.setdefault(f"{task}_{split}", [])
                per.setdefault(task, {"kept": 0, "dropped": 0})
                items += recs
        fields = lambda it: "A and B" if it["text_b"] is not None else "A"  # noqa: E731
        rewrites = client.run([ChatRequest(
            f"{it['task']}_{it['split']}-{it['idx']}",
            rw_t.render(task_description=TASK_DESCRIPTIONS[it["task"]], label=label_name(it["task"], it["label"]),
                        fields=fields(it), item=item_block(it["text_a"], it["text_b"])),
            rw_t.template_id, parse_item(it["text_b"] is not None)) for it in items])
        ok = [(it, rw) for it, rw in zip(items, rewrites) if rw.ok]
        verdicts = client.run([ChatRequest(
            f"{it['task']}_{it['split']}-{it['idx']}-verify",
            vf_t.render(task_description=TASK_DESCRIPTIONS[it["task"]],
                        choices=" | ".join(GLUE_LABELS[it["task"]] or ["a number from 0 to 5"]),
                        item=item_block(rw.parsed["text_a"], rw.parsed["text_b"])),
            vf_t.template_id, parse_answer(it["task"])) for it, rw in ok])
        verdict_of = {id(it): v for (it, _), v in zip(ok, verdicts)}
        for it, rw in zip(items, rewrites):
            name, task = f"{it['task']}_{it['split']}", it["task"]
            base = {"task": task, "split": it["split"], "idx": it["idx"]}
            if not rw.ok:
                reason, detail = "rewrite_failed", rw.error
            else:
                v = verdict_of[id(it)]
                if not v.ok:
                    reason, detail = "verify_failed", v.error
                elif (abs(float(v.parsed) - float(it["label"])) <= cfg.stsb_tolerance if GLUE_LABELS[task] is None
                      else int(v.parsed) == int(it["label"])):
                    files[name].append({**base, **rw.parsed, "label": it["label"]})
                    per[task]["kept"] += 1
                    continue
                else:
                    reason, detail = "label_mismatch", {"gold": it["label"], "predicted": v.parsed}
            per[task]["dropped"] += 1
            dropped_recs.append({**base, "reason": reason, "details": detail})
        llm_metrics = {**client.metrics(), "templates": [rw_t.template_id, vf_t.template_id]}
    for name, recs in files.items():
        write_jsonl(out_dir / f"{name}.jsonl", recs)
    write_jsonl(quarantine_path, dropped_recs)
    for t in per.values():
        n = t["kept"] + t["dropped"]
        t["kept_share"] = round(t["kept"] / n, 4) if n else 0.0
    metrics = {"backend": llm.backend, "files": len(files), "kept": sum(t["kept"] for t in per.values()),
               "dropped": sum(t["dropped"] for t in per.values()),
               "dropped_reasons": dict(Counter(r["reason"] for r in dropped_recs)), "tasks": per,
               "llm": llm_metrics}
    timing.record(seconds=round(time.time() - t0, 2))
    log.info("leaner_glue: kept %d, dropped %d", metrics["kept"], metrics["dropped"])
    return metrics


# ============================================================================================ Eval
class LeanerEvalConfig(Section):
    """``leaner_eval:`` section of params.yaml."""

    n_requests: int = Field(20, ge=1)              # openai: generation calls
    questions_per_request: int = Field(10, ge=1)
    examples_per_request: int = Field(5, ge=1)     # seed questions shown per call (random, seeded)
    near_dup_threshold: float = Field(0.8, gt=0, le=1)  # TF-IDF cosine at or above which a question is a near duplicate
    inner_comparison_size: int = Field(31, ge=0)
    reference_genre: str = "code"                  # instruction data: parts.prompt of this genre's ori train docs
    prompt_version: int | None = None
    bin_edges: list[float] = Field(default_factory=lambda: [7.0, 8.0, 9.0])  # similarity edges of 0-7|7-8|8-9|9-10

    @field_validator("bin_edges")
    @classmethod
    def _edges(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or not 0 <= v[0] < v[1] < v[2] <= 10:
            raise ValueError("needs 3 increasing edges within 0-10 (for bins 0-7, 7-8, 8-9, 9-10)")
        return v


class Similarity:
    """``10 x max cosine`` of TF-IDF vectors (word 1-2-grams) between texts and the reference prompts."""

    def __init__(self, reference: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not reference:
            raise ValueError("similarity needs a non-empty reference (instruction) set")
        self.vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True,
                                   token_pattern=r"(?u)\b\w+\b", dtype=np.float64)
        self.ref = self.vec.fit_transform(reference)

    def scores(self, texts: list[str], block: int = 512) -> np.ndarray:
        out = np.zeros(len(texts))
        for i in range(0, len(texts), block):
            q = self.vec.transform(texts[i:i + block])
            out[i:i + block] = (q @ self.ref.T).max(axis=1).toarray().ravel()
        return np.round(10 * out, 4)


def bin_of(sim: float, edges: list[float] | tuple[float, ...] = (7.0, 8.0, 9.0)) -> str:
    """Bin label of a similarity; the labels keep the released names whatever the edges are."""
    a, b, c = edges
    return "0-7" if sim < a else "7-8" if sim < b else "8-9" if sim < c else "9-10"


def reference_prompts(shard: Path | str, genre: str = "code") -> list[str]:
    out = [d["parts"]["prompt"] for d in read_docs(shard, [genre]) if d.get("parts")]
    if not out:
        raise InputError(shard, f"no {genre} documents with parts.prompt (instruction reference for similarity)")
    return out


def normalise_q(q: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", q.lower()))


def parse_questions(n: int):
    def parse(text: str) -> list[str]:
        body = strip_end_marker(text)
        qs = [m.group(1).strip() for ln in body.splitlines() if (m := re.match(r"^\s*\d+[.)]\s+(.*\S)\s*$", ln))]
        if len(qs) < max(1, n // 2):
            raise ValueError(f"expected a numbered list of {n} questions, found {len(qs)}")
        return qs

    return parse


def dedupe(candidates: list[str], seeds: list[str], threshold: float) -> tuple[list[str], list[dict[str, Any]]]:
    """Drop exact duplicates (after normalisation) and near duplicates (TF-IDF word 1-2-gram cosine >=
    threshold) of seeds or of earlier kept candidates. Returns (kept, dropped records)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    dropped: list[dict[str, Any]] = []
    seen = {normalise_q(s): "copied_example" for s in seeds}
    exact_kept = []
    for q in candidates:
        k = normalise_q(q)
        if not k:
            dropped.append({"question": q, "reason": "empty"})
        elif k in seen:
            dropped.append({"question": q, "reason": seen[k] if seen[k] == "copied_example" else "exact_duplicate"})
        else:
            seen[k] = "generated"
            exact_kept.append(q)
    if not exact_kept:
        return [], dropped
    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    m = vec.fit_transform(seeds + exact_kept)
    s_m, c_m = m[: len(seeds)], m[len(seeds):]
    to_seed = (c_m @ s_m.T).max(axis=1).toarray().ravel() if len(seeds) else np.zeros(len(exact_kept))
    kept_idx: list[int] = []
    for i, q in enumerate(exact_kept):
        if to_seed[i] >= threshold:
            dropped.append({"question": q, "reason": "near_duplicate", "cosine": round(float(to_seed[i]), 4)})
            continue
        if kept_idx:
            c = (c_m[i] @ c_m[kept_idx].T).toarray().ravel()
            if c.max() >= threshold:
                dropped.append({"question": q, "reason": "near_duplicate", "cosine": round(float(c.max()), 4)})
                continue
        kept_idx.append(i)
    return [exact_kept[i] for i in kept_idx], dropped


def qid_of(q: str) -> str:
    return hashlib.sha256(q.encode("utf-8")).hexdigest()


def leaner_eval(cfg: LeanerEvalConfig, llm: LLMConfig, prepared_eval: Path | str, reference_shard: Path | str,
                out_dir: Path | str, quarantine_path: Path | str, seed: int = 1234,
                llm_metrics_path: Path | str | None = None) -> dict[str, Any]:
    """Write ``out_dir/all.jsonl`` and ``out_dir/inner_comparison.jsonl``; return the metrics."""
    t0 = time.time()
    prepared_eval, out_dir = Path(prepared_eval), Path(out_dir)
    sim = Similarity(reference_prompts(reference_shard, cfg.reference_genre))
    released = [r for _, r in iter_jsonl(prepared_eval / "all.jsonl")]
    llm_metrics: dict[str, Any] = {}
    dropped: list[dict[str, Any]] = []
    if llm.backend == "replay":
        allq = released
        inner = [r for _, r in iter_jsonl(prepared_eval / "inner_comparison.jsonl")]
    else:
        tpl = load_template("eval_generate", cfg.prompt_version)
        client = ChatClient(llm, metrics_path=llm_metrics_path)
        seeds = [r["question"] for r in released]
        reqs = []
        for i in range(cfg.n_requests):
            ex = random.Random(seed * 1_000_003 + i).sample(seeds, min(cfg.examples_per_request, len(seeds)))
            reqs.append(ChatRequest(f"eval-{i:05d}", tpl.render(examples="\n".join(f"- {q}" for q in ex),
                                                                 n=str(cfg.questions_per_request)),
                                    tpl.template_id, parse_questions(cfg.questions_per_request)))
        results = client.run(reqs)
        cands = [q for r in results if r.ok for q in r.parsed]
        dropped += [{"question": None, "reason": f"llm_{r.reason}", "details": r.error, "request": r.custom_id}
                    for r in results if not r.ok]
        kept, dd = dedupe(cands, seeds, cfg.near_dup_threshold)
        dropped += dd
        source = f"{llm.model}:{tpl.template_id}"
        allq = [{"qid": qid_of(q), "question": q, "source": source, "bin": None} for q in kept]
        rng = random.Random(seed)
        inner = [dict(q) for q in rng.sample(allq, min(cfg.inner_comparison_size, len(allq)))] if allq else []
        llm_metrics = {**client.metrics(), "template": tpl.template_id, "candidates": len(cands)}
    scores = sim.scores([q["question"] for q in allq]) if allq else np.zeros(0)
    bins_by_qid = {}
    for q, s in zip(allq, scores):
        q["similarity"] = float(s)
        if q.get("bin") is None:  # generated (or released without a bin): bin by our similarity
            q["bin"] = bin_of(float(s), cfg.bin_edges)
        bins_by_qid[q["qid"]] = q["bin"]
    inner_scores = sim.scores([q["question"] for q in inner]) if inner else np.zeros(0)
    for q, s in zip(inner, inner_scores):
        q["similarity"] = float(s)
        q["bin"] = bins_by_qid.get(q["qid"]) or bin_of(float(s), cfg.bin_edges)
    keys = ["qid", "question", "source", "bin", "similarity"]
    write_jsonl(out_dir / "all.jsonl", ({k: q.get(k) for k in keys} for q in allq))
    write_jsonl(out_dir / "inner_comparison.jsonl", ({k: q.get(k) for k in keys} for q in inner))
    write_jsonl(quarantine_path, dropped)
    computed = Counter(bin_of(float(s), cfg.bin_edges) for s in scores)
    metrics: dict[str, Any] = {
        "backend": llm.backend, "questions": len(allq), "inner_comparison": len(inner),
        "bins": {b: sum(q["bin"] == b for q in allq) for b in EVAL_BINS},
        "similarity_bins": {b: computed.get(b, 0) for b in EVAL_BINS},
        "similarity_mean": round(float(scores.mean()), 4) if len(scores) else 0.0,
        "dropped": len(dropped), "dropped_reasons": dict(Counter(d["reason"] for d in dropped)),
        "llm": llm_metrics,
    }
    timing.record(seconds=round(time.time() - t0, 2))
    if llm.backend == "replay" and len(scores):
        from scipy.stats import spearmanr

        order = {b: i for i, b in enumerate(EVAL_BINS)}
        rel = [order[q["bin"]] for q in allq if q["bin"] in order]
        ours = [q["similarity"] for q in allq if q["bin"] in order]
        rho = spearmanr(rel, ours).statistic if len(set(rel)) > 1 else float("nan")
        metrics["released_bin_spearman"] = round(float(rho), 4)
        metrics["bin_agreement"] = round(sum(bin_of(q["similarity"], cfg.bin_edges) == q["bin"] for q in allq) / len(allq), 4)
    log.info("leaner_eval: %d questions, %d dropped, bins %s", len(allq), len(dropped), metrics["bins"])
    return metrics
