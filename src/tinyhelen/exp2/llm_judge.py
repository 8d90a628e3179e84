"""The LLM judge (``judge.backend: llm``): grammar, coherence and specificity 0-5 from an LLM through the
shared LLM layer. See ``tinyhelen.exp2.judge`` for the protocol; this module groups the answers, builds and
sends the requests (JSON-schema constrained), parses the replies strictly and aggregates the scores.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinyhelen import timing
from tinyhelen.io import InputError
from tinyhelen.llm import ChatClient, ChatRequest, quarantine_gate
from tinyhelen.llm.prompts import BEGIN_TEXT, END_MARK, END_TEXT, load_template
from tinyhelen.llm.provenance import answered_model, stage_provenance
from tinyhelen.exp2.proxy_judge import base_record

log = logging.getLogger(__name__)

CRITERIA = ("grammar", "coherence", "specificity")
LLM_METRICS = (*CRITERIA, "total")
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
REPLY_TOKENS_PER_ANSWER = 48  # '"A": {"grammar": 4, "coherence": 3, "specificity": 5}, ' is about 25 tokens
EMPTY_ANSWER = "(empty answer: the model wrote nothing; give it the worst score, 0, on every criterion)"


class JudgeLLMConfig(BaseModel):
    """``judge.llm``: the LLM judge's endpoint and model; every null key takes the ``llm`` section's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["openai", "local"] | None = Field(None, description="null: llm.backend (openai if replay)")
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    model_path: str | None = Field(None, description="local: the judge's GGUF (null: llm.local.model_path)")
    model_params: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2, description="study: 0.8 with top_p 0.95; 0: reproducible scores")


def judge_llm_config(llm: Any, jl: JudgeLLMConfig) -> Any:
    """The LLMConfig the judge uses: ``llm`` with every non-null ``judge.llm`` key applied (backend
    ``replay`` becomes ``openai``: no judge replies were released), temperature ``judge.llm.temperature``."""
    update: dict[str, Any] = {"temperature": jl.temperature,
                              "backend": jl.backend or ("openai" if llm.backend == "replay" else llm.backend)}
    for key in ("base_url", "model", "api_key_env", "model_params", "max_tokens"):
        if getattr(jl, key) is not None:
            update[key] = getattr(jl, key)
    if jl.model_path is not None:
        update["local"] = llm.local.model_copy(update={"model_path": jl.model_path})
    if update["backend"] == "local":
        update["batch_api"] = False
    return llm.model_copy(update=update)


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


def judge_schema(labels: Sequence[str]) -> dict[str, Any]:
    """OpenAI ``response_format`` with a strict JSON schema of a reply for ``labels`` (llama.cpp, vLLM,
    Ollama and OpenAI constrain decoding to it, so even a small model returns parseable scores)."""
    score = {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}
    one = {"type": "object", "properties": {c: score for c in CRITERIA}, "required": list(CRITERIA),
           "additionalProperties": False}
    schema = {"type": "object", "properties": {lab: one for lab in labels}, "required": list(labels),
              "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "judge_scores", "strict": True, "schema": schema}}


# ----------------------------------------------------------------------------------------- requests
def answer_key(r: dict[str, Any]) -> tuple:
    return (r["set"], r["qid"], r["step"], r["recipe"])


def judge_groups(gens: list[dict[str, Any]], group_by: str = "question", max_group: int = 10
                 ) -> list[list[dict[str, Any]]]:
    """Answers judged together, at most ``max_group`` each. ``question`` (the study's): the answers to one
    question, sorted by (recipe, step) and split in order into chunks; in the inner comparison one recipe's
    checkpoints form a group (checkpoint selection), in Leaner-Eval the four recipes' answers;
    ``question_step``: the answers of the recipes to one question at the same checkpoint step."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in gens:
        if group_by == "question_step":
            key = (r["set"], r["qid"], r["step"])
        elif r["set"] == "inner_comparison":
            key = (r["set"], r["qid"], r["recipe"])
        else:
            key = (r["set"], r["qid"])
        groups[key].append(r)
    out = []
    for key in sorted(groups, key=str):
        g = sorted(groups[key], key=lambda r: (r["recipe"], r["step"]))
        if len({(r["recipe"], r["step"]) for r in g}) != len(g):
            raise InputError(f"{key}", "duplicate answers of one recipe for the same question and step")
        out += [g[i:i + max_group] for i in range(0, len(g), max_group)]
    return out


def group_id(group: list[dict[str, Any]]) -> str:
    g0 = group[0]
    members = "|".join(f"{r['recipe']}@{r['step']}" for r in group)
    return f"{g0['set']}:{g0['qid']}:{hashlib.sha256(members.encode()).hexdigest()[:8]}"


def orders_for(group: list[dict[str, Any]], seed: int, n_orders: int) -> list[list[int]]:
    """Seeded shuffled order of a group's answers and (if two orders) its reverse."""
    rng = random.Random(f"{seed}:{group_id(group)}")
    first = list(range(len(group)))
    rng.shuffle(first)
    return [first, first[::-1]][:n_orders]


def render_answers(answers: Sequence[str], labels: Sequence[str]) -> str:
    return "\n\n".join(f"Answer {lab}:\n{BEGIN_TEXT}\n{a.strip() or EMPTY_ANSWER}\n{END_TEXT}"
                       for lab, a in zip(labels, answers))


def build_requests(groups: list[list[dict[str, Any]]], cfg: Any, seed: int, template=None):
    """ChatRequests (one per group and order) and their bookkeeping ``[(group index, order, perm)]``.
    ``cfg``: the JudgeConfig (orders, json_schema, max_reasks, template_version)."""
    tpl = template or load_template("judge", cfg.template_version)
    reqs, meta = [], []
    for gi, group in enumerate(groups):
        labels = list(LABELS[:len(group)])
        example = json.dumps({lab: {c: 3 for c in CRITERIA} for lab in labels[:2]})
        for oi, perm in enumerate(orders_for(group, seed, cfg.orders)):
            msgs = tpl.render(question=group[0]["question"], answers=render_answers(
                [group[i]["answer"] for i in perm], labels), labels=", ".join(labels), example=example)
            reqs.append(ChatRequest(custom_id=f"judge:{group_id(group)}:o{oi}", messages=msgs,
                                    template_id=tpl.template_id,
                                    parse=lambda t, labs=tuple(labels): parse_judgement(t, labs),
                                    max_reasks=cfg.max_reasks,
                                    response_format=judge_schema(labels) if cfg.json_schema else None,
                                    max_tokens=REPLY_TOKENS_PER_ANSWER * len(labels) + 32))
            meta.append((gi, oi, perm))
    return reqs, meta


# ----------------------------------------------------------------------------------------- judging
def judge_llm(gens: list[dict[str, Any]], cfg: Any, llm: Any, seed: int, metrics_path: Path | str | None = None,
              cache_dir: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every answer with the LLM judge (``cfg``: the JudgeConfig, ``llm``: the ``llm`` section);
    returns (score records, summary incl. agreement, quarantine and provenance). Raises ``LLMFailure`` on
    an outage or when more than ``llm.max_quarantine_share`` of the requests fail their format."""
    llm_cfg = judge_llm_config(llm, cfg.llm)
    groups = judge_groups(gens, cfg.group_by, cfg.max_group)
    reqs, meta = build_requests(groups, cfg, seed)
    client = ChatClient(llm_cfg, metrics_path, cache_dir=cache_dir, timing_key="llm_judge")
    t0 = time.monotonic()
    results = client.run(reqs)
    secs = time.monotonic() - t0
    per: dict[tuple, dict[int, tuple[int, dict[str, int]]]] = defaultdict(dict)  # answer -> order -> (pos, scores)
    failures: Counter = Counter()
    quarantine = []
    for (gi, oi, perm), req, res in zip(meta, reqs, results, strict=True):
        group = groups[gi]
        if not res.ok:
            failures[res.reason or "unknown"] += 1
            log.warning("judge request %s failed: %s", res.custom_id, res.error)
            quarantine.append({"custom_id": res.custom_id, "reason": res.reason, "error": res.error,
                               "reply": res.text, "answers": [list(answer_key(group[i])) for i in perm]})
            continue
        for pos, idx in enumerate(perm):
            per[answer_key(group[idx])][oi] = (pos, res.parsed[LABELS[pos]])
    prov = stage_provenance(llm_cfg, results, [r.template_id for r in reqs[:1]],
                            client.decoding(reqs[0]) if reqs else None)
    gate = quarantine_gate(len(quarantine), len(reqs), llm_cfg, "judge", dict(failures), prov)
    records = []
    for group in groups:
        for r in group:
            got = per.get(answer_key(r), {})
            rec = base_record(r)
            rec["backend"] = "llm"
            rec["orders"] = {str(oi): {"position": pos, **sc} for oi, (pos, sc) in sorted(got.items())}
            if got:
                for c in CRITERIA:
                    rec[c] = float(np.mean([sc[c] for _, sc in got.values()]))
                rec["total"] = sum(rec[c] for c in CRITERIA)
            else:
                for m in LLM_METRICS:
                    rec[m] = None
            records.append(rec)
    timing.record(judge={"seconds": round(secs, 3), "requests": len(reqs),
                         "requests_per_s": round(len(reqs) / secs, 4) if secs else 0.0})
    summary = {"backend": "llm", "model": answered_model(prov), "template_id": reqs[0].template_id if reqs else None,
               "groups": len(groups), "max_group": cfg.max_group, "group_by": cfg.group_by,
               "requests": len(reqs), "failed_requests": sum(failures.values()), "failures": dict(failures),
               "parsed_replies": len(reqs) - sum(failures.values()),
               "unjudged_answers": sum(1 for r in records if r["total"] is None), "quarantine_gate": gate,
               "agreement": order_agreement(records) if cfg.orders == 2 else None,
               "position_means": position_means(records), "llm": client.metrics(), "provenance": prov,
               "quarantine": quarantine}
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
