"""Provenance of LLM-derived outputs: which backend and model produced them, with which prompts and decoding.

Every LLM stage (simplify per genre, leaner_glue, leaner_eval, judge) writes ``provenance`` into its
metrics JSON (deterministic: no timestamps, no paths, no ports)::

    {"backend": "local",                       # replay | openai | local
     "source": "llm",                          # released | llm | llm+released (part replayed)
     "configured_model": "SmolLM2-135M-Instruct.Q4_1.gguf",
     "models": [{"model": "SmolLM2-135M-Instruct.Q4_1.gguf",   # the response's `model` field
                 "backend": "local", "model_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                 "model_sha256": "b179c9...", "n_params": 134515008}],
     "templates": ["simplify_wiki@v1:0123456789ab"],
     "decoding": {"temperature": 0.0, "max_tokens": 2048, "seed": 1234}}

``result_status(provenance, llm.pipeline_check_below_params)`` tells the report card how to label a
figure: the study's released outputs, a pipeline check (a model below the size threshold answered), or a
result. ``quarantine_gate`` fails a stage whose share of quarantined documents exceeds
``llm.max_quarantine_share``; for a pipeline check (a model below the threshold, e.g. the packaged 135M
model) it records the share and lets the stage finish, since such outputs are never results.
"""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from tinyhelen.llm.core import ChatResult, LLMFailure

RELEASED = "the study's released outputs"
PIPELINE_CHECK = "pipeline check, not a result"


def _fmt_summary(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt:
        return None
    name = (fmt.get("json_schema") or {}).get("name")
    return {"type": fmt.get("type"), **({"name": name} if name else {})}


def models_of(results: Iterable[ChatResult]) -> list[dict[str, Any]]:
    """The distinct models that answered (live or from the cache), sorted."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in results:
        if r.model is None and r.served_by is None:
            continue
        m = {"model": r.model, **(r.served_by or {})}
        seen.setdefault(tuple(sorted((k, str(v)) for k, v in m.items())), m)
    return [seen[k] for k in sorted(seen)]


def stage_provenance(llm: Any, results: Sequence[ChatResult] = (), templates: Iterable[str] = (),
                     decoding: dict[str, Any] | None = None, *, replayed: bool = False) -> dict[str, Any]:
    """The ``provenance`` block of an LLM stage's metrics. ``llm``: the LLMConfig used; ``results``: every
    ChatResult of the stage; ``replayed``: part (or all) of the output is the released data."""
    if llm.backend == "replay" or not results:
        return {"backend": llm.backend, "source": "released", "configured_model": None, "models": [],
                "templates": [], "decoding": None}
    dec = dict(decoding or {})
    if "response_format" in dec:
        dec["response_format"] = _fmt_summary(dec["response_format"])
    models = models_of(results)
    configured = next((m.get("model_file") for m in models if m.get("model_file")), None) or llm.model
    prov = {"backend": llm.backend, "source": "llm+released" if replayed else "llm", "configured_model": configured,
            "models": models, "templates": sorted(set(templates)), "decoding": dec}
    status = result_status(prov, llm.pipeline_check_below_params)
    gguf = next((m for m in models if m.get("model_file")), {})
    # the summary the report card reads: which model, which GGUF, and whether the outputs are a pipeline check
    return {**prov, "model": answered_model(prov), "gguf_file": gguf.get("model_file"),
            "gguf_sha256": gguf.get("model_sha256"), "pipeline_check": status["status"] == "pipeline_check",
            "status": status["status"], "status_reason": status["reason"]}


def answered_model(provenance: dict[str, Any]) -> str | None:
    """The model(s) that answered ("+"-joined if several), else the configured one."""
    names = sorted({str(m.get("model")) for m in provenance.get("models") or [] if m.get("model")})
    return "+".join(names) if names else provenance.get("configured_model")


def result_status(provenance: dict[str, Any], below_params: int) -> dict[str, str]:
    """How to label a figure that depends on this output: ``status`` (released | proxy | pipeline_check | result),
    ``label`` and ``reason``. A model below ``below_params`` parameters (``llm.pipeline_check_below_params``)
    makes it a pipeline check; a model of unknown size is a result (say so in the reason)."""
    if provenance.get("source") == "released":
        return {"status": "released", "label": RELEASED, "reason": "replayed from the release"}
    if provenance.get("source") == "proxy":
        return {"status": "proxy", "label": "proxy metrics, not LLM-judge scores", "reason": "no LLM involved"}
    models = provenance.get("models") or []
    small = [m for m in models if m.get("n_params") is not None and m["n_params"] < below_params]
    if small or not models:
        m = small[0] if small else {}
        why = (f"{m.get('model')} has {m.get('n_params', 0) / 1e6:.0f}M parameters (< {below_params / 1e6:.0f}M)"
               if small else "no model is recorded")
        return {"status": "pipeline_check", "label": PIPELINE_CHECK, "reason": why}
    unknown = [m.get("model") for m in models if m.get("n_params") is None]
    return {"status": "result", "label": "result",
            "reason": f"model size unknown: {', '.join(map(str, unknown))}" if unknown else "model size above the threshold"}


def quarantine_gate(quarantined: int, total: int, llm: Any, where: str, reasons: dict[str, int],
                    provenance: dict[str, Any]) -> dict[str, Any]:
    """The quarantine share of the ``total`` documents/items/requests sent to the LLM, checked against
    ``llm.max_quarantine_share``. Above it: ``LLMFailure`` (the stage writes nothing), unless the output
    is a pipeline check (then the gate is waived and says why). Returns the gate record for the metrics."""
    share = quarantined / total if total else 0.0
    gate = {"sent": total, "quarantined": quarantined, "share": round(share, 4), "limit": llm.max_quarantine_share,
            "status": "passed"}
    if share <= llm.max_quarantine_share:
        return gate
    status = result_status(provenance, llm.pipeline_check_below_params)
    if status["status"] == "pipeline_check":
        return {**gate, "status": f"waived: {PIPELINE_CHECK} ({status['reason']})"}
    why = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    raise LLMFailure(f"{where}: {quarantined} of {total} sent to the LLM were quarantined ({share:.0%} > "
                     f"llm.max_quarantine_share={llm.max_quarantine_share:g}); nothing was written.\n"
                     f"  reasons: {why or 'n/a'}\n  The replies are cached: raise llm.max_quarantine_share "
                     "to accept them, or change the model or the prompt.")


def endpoint_params(base_url: str | None, model: str, api_key) -> int | None:
    """``meta.n_params`` of ``model`` from the endpoint's ``/models`` list (llama.cpp servers report it);
    None where the endpoint does not say (or has no such route)."""
    if not base_url:
        return None
    try:
        req = urllib.request.Request(base_url.rstrip("/") + "/models",
                                     headers={"authorization": f"Bearer {api_key()}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            data = json.loads(r.read()).get("data") or []
    except Exception:  # noqa: BLE001 - optional metadata: a missing route is no failure
        return None
    for m in data:
        meta = m.get("meta") or {}
        if "n_params" in meta and (m.get("id") == model or len(data) == 1):
            return int(meta["n_params"])
    return None

