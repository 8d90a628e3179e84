"""Leaner-GLUE (stage ``leaner_glue``): GLUE items rewritten in leaner English, kept only if still correct.

``replay`` (offline default) writes the released Leaner-GLUE items (prepared glue schema: task, split, idx,
text_a, text_b, label). The live backends (``openai``, ``local``) need the ORIGINAL GLUE items, which the
offline release does not have: ``leaner_glue.source_dir`` points at them, either as JSONL files in the
prepared glue schema (``<task>_<split>.jsonl``; ``source_format: jsonl``) or as the official GLUE download
(``CoLA/train.tsv``, ``MNLI/dev_matched.tsv`` ...; ``source_format: glue_tsv``). Per item: (1) rewrite call
with the gold label in the prompt (``prompts/glue_rewrite``), (2) an independent call that takes the
rewritten item as a test without the label (``prompts/glue_verify``); the item is kept only if (2) reaches
the gold label (STS-B: within ``stsb_tolerance``). Dropped items go to ``data/leaner/quarantine_glue.jsonl``
with the reason (``rewrite_failed``, ``verify_failed``: content failures, counted against
``llm.max_quarantine_share``; ``label_mismatch``: the designed filter). An outage fails the stage.
"""
from __future__ import annotations

import csv
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tinyhelen import timing
from tinyhelen.config import ParamsError, Section, check_subset
from tinyhelen.data import GLUE_TASKS
from tinyhelen.io import InputError, iter_jsonl, write_jsonl
from tinyhelen.llm import ChatClient, ChatRequest, ChatResult, LLMConfig, Template, quarantine_gate
from tinyhelen.llm.prompts import load_template, strip_end_marker
from tinyhelen.llm.provenance import stage_provenance

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


def _replay_files(cfg: LeanerGlueConfig, prepared_glue: Path | str, files: dict[str, list[dict[str, Any]]],
                  per: dict[str, dict[str, int]]) -> None:
    """The released Leaner-GLUE items (prepared glue schema), every file of the configured tasks: all kept."""
    for task in cfg.tasks:
        for path in sorted(Path(prepared_glue).glob(f"{task}_*.jsonl")):
            recs = [r for _, r in iter_jsonl(path)]
            files[path.stem] = recs
            per.setdefault(task, {"kept": 0, "dropped": 0})["kept"] += len(recs)


def _source_items(cfg: LeanerGlueConfig, llm: LLMConfig, files: dict[str, list[dict[str, Any]]],
                  per: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """The original GLUE items sent to the LLM (``leaner_glue.source_dir``), at most
    ``max_items_per_file`` per task/split file (lowest ``idx`` first)."""
    if not cfg.source_dir:
        raise ParamsError(f"leaner_glue.source_dir: required with llm.backend={llm.backend} (the original GLUE "
                          "items are not part of the offline release); see docs/llm.md")
    root = Path(cfg.source_dir)
    if not root.is_dir():
        raise InputError(root, "leaner_glue.source_dir: directory not found")
    items: list[dict[str, Any]] = []
    loader = load_glue_tsv if cfg.source_format == "glue_tsv" else load_glue_jsonl
    for task in cfg.tasks:
        for split, recs in sorted(loader(root, task).items()):
            if cfg.splits is not None and split not in cfg.splits:
                continue
            recs = sorted(recs, key=lambda r: r["idx"])[: cfg.max_items_per_file]
            files.setdefault(f"{task}_{split}", [])
            per.setdefault(task, {"kept": 0, "dropped": 0})
            items += recs
    return items


def _ask(client: ChatClient, items: list[dict[str, Any]], rw_t: Template, vf_t: Template
         ) -> tuple[list[ChatResult], list[ChatResult | None]]:
    """Rewrite every item (with its gold label), then verify each parsed rewrite without the label.
    Returns the rewrites and the verdicts in item order (verdict None where the rewrite failed)."""
    fields = lambda it: "A and B" if it["text_b"] is not None else "A"  # noqa: E731
    rewrites = client.run([ChatRequest(
        f"{it['task']}_{it['split']}-{it['idx']}",
        rw_t.render(task_description=TASK_DESCRIPTIONS[it["task"]],
                    label=label_name(it["task"], it["label"]), fields=fields(it),
                    item=item_block(it["text_a"], it["text_b"])),
        rw_t.template_id, parse_item(it["text_b"] is not None)) for it in items])
    ok = [(it, rw) for it, rw in zip(items, rewrites) if rw.ok]
    verdicts = client.run([ChatRequest(
        f"{it['task']}_{it['split']}-{it['idx']}-verify",
        vf_t.render(task_description=TASK_DESCRIPTIONS[it["task"]],
                    choices=" | ".join(GLUE_LABELS[it["task"]] or ["a number from 0 to 5"]),
                    item=item_block(rw.parsed["text_a"], rw.parsed["text_b"])),
        vf_t.template_id, parse_answer(it["task"])) for it, rw in ok])
    given = iter(verdicts)
    return rewrites, [next(given) if rw.ok else None for rw in rewrites]


def _sort_out(cfg: LeanerGlueConfig, items: list[dict[str, Any]], rewrites: list[ChatResult],
              verdicts: list[ChatResult | None], files: dict[str, list[dict[str, Any]]],
              per: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Keep each rewritten item whose verdict reaches the gold label (STS-B: within the tolerance); returns
    the dropped items with their reason (``rewrite_failed``, ``verify_failed``, ``label_mismatch``)."""
    dropped: list[dict[str, Any]] = []
    for it, rw, v in zip(items, rewrites, verdicts):
        name, task = f"{it['task']}_{it['split']}", it["task"]
        base = {"task": task, "split": it["split"], "idx": it["idx"]}
        if not rw.ok:
            reason, detail = "rewrite_failed", rw.error
        else:
            assert v is not None
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
        dropped.append({**base, "reason": reason, "details": detail})
    return dropped


def _live(cfg: LeanerGlueConfig, llm: LLMConfig, items: list[dict[str, Any]], files: dict[str, list[dict[str, Any]]],
          per: dict[str, dict[str, int]], llm_metrics_path: Path | str | None
          ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Rewrite, verify and sort out ``items``: (dropped items, LLM metrics, provenance). Raises ``LLMFailure``
    on an outage or when more than ``llm.max_quarantine_share`` failed their content."""
    rw_t = load_template("glue_rewrite", cfg.rewrite_version)
    vf_t = load_template("glue_verify", cfg.verify_version)
    with ChatClient(llm, metrics_path=llm_metrics_path, timing_key="llm_glue") as client:
        rewrites, verdicts = _ask(client, items, rw_t, vf_t)
    dropped = _sort_out(cfg, items, rewrites, verdicts, files, per)
    provenance = stage_provenance(llm, [*rewrites, *(v for v in verdicts if v is not None)],
                                  [rw_t.template_id, vf_t.template_id], client.decoding())
    reasons = Counter(r["reason"] for r in dropped)
    gate = quarantine_gate(reasons["rewrite_failed"] + reasons["verify_failed"], len(items), llm, "leaner_glue",
                           {k: v for k, v in reasons.items() if k != "label_mismatch"}, provenance)
    llm_metrics = {**client.metrics(), "templates": [rw_t.template_id, vf_t.template_id], "quarantine_gate": gate}
    return dropped, llm_metrics, provenance


def leaner_glue(cfg: LeanerGlueConfig, llm: LLMConfig, prepared_glue: Path | str, out_dir: Path | str,
                quarantine_path: Path | str, llm_metrics_path: Path | str | None = None) -> dict[str, Any]:
    """Write ``out_dir/<task>_<split>.jsonl`` and the quarantine file; return the metrics. Raises
    ``LLMFailure`` (before writing anything) on an outage or too many content failures."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    per: dict[str, dict[str, int]] = {}
    files: dict[str, list[dict[str, Any]]] = {}
    dropped_recs: list[dict[str, Any]] = []
    llm_metrics: dict[str, Any] = {}
    provenance = stage_provenance(llm)
    items: list[dict[str, Any]] = []
    if llm.backend == "replay":
        _replay_files(cfg, prepared_glue, files, per)
    else:
        items = _source_items(cfg, llm, files, per)
        dropped_recs, llm_metrics, provenance = _live(cfg, llm, items, files, per, llm_metrics_path)
    for name, recs in files.items():
        write_jsonl(out_dir / f"{name}.jsonl", recs)
    write_jsonl(quarantine_path, dropped_recs)
    for t in per.values():
        n = t["kept"] + t["dropped"]
        t["kept_share"] = round(t["kept"] / n, 4) if n else 0.0
    metrics = {"backend": llm.backend, "files": len(files), "kept": sum(t["kept"] for t in per.values()),
               "dropped": sum(t["dropped"] for t in per.values()),
               "dropped_reasons": dict(Counter(r["reason"] for r in dropped_recs)), "tasks": per,
               "llm": llm_metrics, "provenance": provenance}
    secs = time.monotonic() - t0
    timing.record(leaner_glue={"seconds": round(secs, 3), "llm_items": len(items),
                               "llm_items_per_s": round(len(items) / secs, 4) if items else 0.0})
    log.info("leaner_glue: kept %d, dropped %d", metrics["kept"], metrics["dropped"])
    return metrics
