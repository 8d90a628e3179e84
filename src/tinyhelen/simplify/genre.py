"""One genre of the ``simplify`` stage (``simplify_genre``): live rewrites of a sample, replay of the rest.

Live backends: the first ``simplify.max_docs_per_genre`` documents (by pairing hash) among those of at most
``simplify.max_doc_tokens`` estimated tokens are cut into chunks (``chunking``), each chunk is rewritten
with the genre's prompt template, each document is reassembled and validated (``validation``); content
failures go to quarantine with their reasons, an outage raises ``LLMFailure``. Every other document is
replayed: its released twin is kept (the validators' would-fail counts are reported), a document without
one is quarantined as ``no_released_twin``. ``math`` is never rewritten (live: it passes through).
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyhelen import timing
from tinyhelen.data import read_docs
from tinyhelen.llm import ChatClient, ChatRequest, ChatResult, LLMConfig, Template, quarantine_gate
from tinyhelen.llm.core import estimate_tokens
from tinyhelen.llm.prompts import load_template, strip_end_marker
from tinyhelen.llm.provenance import stage_provenance
from tinyhelen.simplify.chunking import REPLY_CAP_RULE, approx_tokens, chunk_text, fitted_budget, reply_budget
from tinyhelen.simplify.config import SimplifyConfig
from tinyhelen.simplify.resources import names_block
from tinyhelen.simplify.validation import Validator

log = logging.getLogger(__name__)

Plan = dict[str, list[tuple[str, int, str, str]]]  # doc id -> [(part, request index, chunk, separator)]


@dataclass
class GenreResult:
    docs: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    metrics: dict[str, Any]


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


def _rebuild(items: list[tuple[str, int, str, str]], results: list[ChatResult]
             ) -> tuple[dict[str, str] | None, str]:
    """A document's (parts, text) from the rewrites of its chunks (separators kept)."""
    rebuilt: dict[str, str] = {}
    for part, i, _chunk, sep in items:
        rebuilt[part] = rebuilt.get(part, "") + results[i].parsed.strip() + sep
    rebuilt = {k: v.rstrip() for k, v in rebuilt.items()}
    if "prompt" in rebuilt or "response" in rebuilt:
        parts = {"prompt": rebuilt.get("prompt", ""), "response": rebuilt.get("response", "")}
        return parts, parts["prompt"] + "\n\n" + parts["response"]
    return None, rebuilt.get("text", "")


def read_genre(genre: str, ori_shards: dict[str, Path], leaner_shards: dict[str, Path]
               ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The genre's original documents (every split of ``ori_shards``) and its released twins by doc id."""
    ori_docs: list[dict[str, Any]] = []
    twins: dict[str, dict[str, Any]] = {}
    for split in ori_shards:
        ori_docs += list(read_docs(ori_shards[split], [genre]))
        if split in leaner_shards and Path(leaner_shards[split]).exists():
            twins.update({d["doc_id"]: d for d in read_docs(leaner_shards[split], [genre])})
    return ori_docs, twins


class GenreRun:
    """One genre's documents and what becomes of them: kept (``out``), quarantined, counts and figures."""

    def __init__(self, genre: str, cfg: SimplifyConfig, llm: LLMConfig, ori_docs: list[dict[str, Any]],
                 twins: dict[str, dict[str, Any]]):
        self.genre, self.cfg, self.llm = genre, cfg, llm
        self.ori_docs, self.twins = ori_docs, twins
        self.validator = Validator(cfg)
        self.counts: Counter = Counter()
        self.would_fail: Counter = Counter()
        self.ratios: list[float] = []
        self.oovs: list[float] = []
        self.out: dict[str, dict[str, Any]] = {}
        self.quarantine: list[dict[str, Any]] = []

    def live_selection(self) -> tuple[set[str], int]:
        """The doc ids sent to the LLM, and how many documents were too long to be sent."""
        if self.llm.backend == "replay" or self.genre == "math":
            return set(), 0
        cfg = self.cfg
        ids = sorted(d["doc_id"] for d in self.ori_docs
                     if cfg.max_doc_tokens is None or approx_tokens(d["text"]) <= cfg.max_doc_tokens)
        return set(ids if cfg.max_docs_per_genre is None else ids[: cfg.max_docs_per_genre]), len(self.ori_docs) - len(ids)

    def quarantine_doc(self, doc: dict[str, Any], reasons: list[str], details: dict[str, Any]) -> None:
        self.quarantine.append({"doc_id": doc["doc_id"], "genre": self.genre, "split": doc["split"],
                                "reasons": reasons, "details": details})
        self.counts.update(reasons)

    def note_figures(self, figs: dict[str, float]) -> None:
        if figs:
            self.ratios.append(figs["length_ratio"])
            self.oovs.append(figs["oov_share"])

    # ------------------------------------------------------------------------------------ live
    def rewrite(self, live_ids: set[str], metrics_path: Path | str | None
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Rewrite the ``live_ids`` documents; returns (LLM metrics, provenance, quarantine gate)."""
        template = load_template(f"simplify_{self.genre}", self.cfg.prompt_version)
        names = names_block()
        with ChatClient(self.llm, metrics_path=metrics_path, timing_key=f"llm_{self.genre}") as client:
            budget = self._budget(client.context_limit(), estimate_tokens(template.render(names=names, text="")))
            plan, requests = self._plan(live_ids, template, names, budget)
            results = client.run(requests)  # raises LLMFailure on an outage: nothing is written
        llm_metrics = {**client.metrics(), "template": template.template_id, "chunks": len(requests),
                       "chunk_tokens": budget}
        provenance = stage_provenance(self.llm, results, [template.template_id],
                                      {**client.decoding(), "max_tokens_per_chunk": REPLY_CAP_RULE},
                                      replayed=len(live_ids) < len(self.ori_docs))
        for doc in self.ori_docs:
            if doc["doc_id"] in live_ids:
                self._accept(doc, plan[doc["doc_id"]], results)
        gate = quarantine_gate(len(self.quarantine), len(live_ids), self.llm, f"simplify@{self.genre}",
                               {k: v for k, v in self.counts.items() if k != "rewritten"}, provenance)
        return llm_metrics, provenance, gate

    def _budget(self, context: int | None, overhead: int) -> int:
        budget = fitted_budget(self.cfg.budget(self.genre), context, self.llm.max_tokens, overhead)
        if budget < self.cfg.budget(self.genre):
            log.info("simplify %s: chunks of at most %d tokens (not %d) so that prompt + chunk + max_tokens "
                     "fit the context of %d", self.genre, budget, self.cfg.budget(self.genre), context)
        return budget

    def _plan(self, live_ids: set[str], template: Template, names: str, budget: int
              ) -> tuple[Plan, list[ChatRequest]]:
        """One request per chunk of every live document, and where each chunk goes back."""
        plan: Plan = {}
        requests: list[ChatRequest] = []
        for doc in self.ori_docs:
            if doc["doc_id"] not in live_ids:
                continue
            items = []
            for part, text in _doc_parts(doc):
                for chunk, sep in chunk_text(text, budget):
                    cid = f"{doc['doc_id']}-{len(items):04d}"
                    items.append((part, len(requests), chunk, sep))
                    requests.append(ChatRequest(cid, template.render(names=names, text=chunk),
                                                template.template_id, strip_end_marker,
                                                max_tokens=reply_budget(chunk, self.cfg.max_length_ratio)))
            plan[doc["doc_id"]] = items
        return plan, requests

    def _accept(self, doc: dict[str, Any], items: list[tuple[str, int, str, str]], results: list[ChatResult]) -> None:
        """Keep the rewrite of ``doc`` or quarantine it (failed chunks, or a failed validation)."""
        failed = [results[i] for _, i, _, _ in items if not results[i].ok]
        if failed or not items:
            self.quarantine_doc(doc, sorted({f"llm_{r.reason}" for r in failed}) or ["empty"], {
                "chunks": len(items), "failed_chunks": [{"custom_id": r.custom_id, "error": r.error} for r in failed]})
            return
        parts, text = _rebuild(items, results)
        reasons, figs = self.validator.check(doc["text"], text, self.genre)
        self.note_figures(figs)
        if reasons:
            self.quarantine_doc(doc, reasons, {**figs, "rewrite": text[:2000]})
            return
        self.out[doc["doc_id"]] = _leaner_record(doc, text, parts)
        self.counts["rewritten"] += 1

    # ------------------------------------------------------------------------------------ replay
    def replay(self, live_ids: set[str]) -> None:
        """Every document not sent to the LLM: its released twin (math passes through on live backends)."""
        live = self.llm.backend != "replay"
        for doc in self.ori_docs:
            if doc["doc_id"] in live_ids:
                continue
            if live and self.genre == "math":  # math passes through unchanged
                self.out[doc["doc_id"]] = _leaner_record(doc, doc["text"], doc.get("parts"))
                self.counts["passthrough"] += 1
                continue
            twin = self.twins.get(doc["doc_id"])
            if twin is None:
                self.quarantine_doc(doc, ["no_released_twin"], {})
                continue
            if self.genre != "math":
                reasons, figs = self.validator.check(doc["text"], twin["text"], self.genre)
                self.would_fail.update(reasons)
                if reasons:
                    self.would_fail["docs"] += 1
                self.note_figures(figs)
            self.out[doc["doc_id"]] = _leaner_record(doc, twin["text"], twin.get("parts"))
            self.counts["replayed"] += 1

    def result(self, n_live: int, too_long: int, gate: dict[str, Any], llm_metrics: dict[str, Any],
               provenance: dict[str, Any]) -> GenreResult:
        docs = [self.out[d["doc_id"]] for d in self.ori_docs if d["doc_id"] in self.out]
        n_q, counts = len(self.quarantine), self.counts
        assert len(docs) + n_q == len(self.ori_docs), "every document is either kept or quarantined"
        metrics = {
            "genre": self.genre, "backend": self.llm.backend, "docs_in": len(self.ori_docs), "docs_out": len(docs),
            "quarantined": n_q, "llm_docs": n_live, "llm_ineligible_too_long": too_long,
            "quarantine_gate": gate,
            "replayed_docs": counts["replayed"],
            "passthrough_docs": counts["passthrough"], "rewritten_docs": counts["rewritten"],
            "quarantine_reasons": {k: v for k, v in sorted(counts.items())
                                   if k not in ("replayed", "passthrough", "rewritten")},
            "validation": {"checked": len(self.ratios), "released_would_fail": dict(sorted(self.would_fail.items())),
                           "length_ratio": _summary(self.ratios), "oov_share": _summary(self.oovs)},
            "llm": llm_metrics, "provenance": provenance,
        }
        return GenreResult(docs, self.quarantine, metrics)


def simplify_genre(genre: str, ori_shards: dict[str, Path], leaner_shards: dict[str, Path],
                   cfg: SimplifyConfig, llm: LLMConfig, llm_metrics_path: Path | str | None = None) -> GenreResult:
    """Produce the leaner documents of one genre (every split of ``ori_shards``). See the module docstring."""
    t0 = time.monotonic()
    run = GenreRun(genre, cfg, llm, *read_genre(genre, ori_shards, leaner_shards))
    live_ids, too_long = run.live_selection()
    llm_metrics: dict[str, Any] = {}
    provenance, gate = stage_provenance(llm), {}
    if live_ids:
        llm_metrics, provenance, gate = run.rewrite(live_ids, llm_metrics_path)
    run.replay(live_ids)
    res = run.result(len(live_ids), too_long, gate, llm_metrics, provenance)
    secs = time.monotonic() - t0
    timing.record(**{f"simplify_{genre}": {"seconds": round(secs, 3), "llm_docs": len(live_ids),
                                           "llm_docs_per_s": round(len(live_ids) / secs, 4) if live_ids else 0.0}})
    log.info("simplify %s: %d in, %d out, %d quarantined (%s)", genre, len(run.ori_docs), len(res.docs),
             len(res.quarantine), res.metrics["quarantine_reasons"])
    return res
