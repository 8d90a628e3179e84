"""OpenAI Batch API mode (``llm.batch_api: true``) for large jobs: half the price, 24 h turnaround.

Path: build a JSONL request file (one line per uncached request; ``custom_id`` = the request's id, e.g.
``<document hash>-<chunk index>``) -> upload it (``files.create(purpose="batch")``) -> ``batches.create`` ->
poll ``batches.retrieve`` every ``llm.batch_poll_s`` -> download the output (and error) file -> parse each
line back (``fetch_batch``); the client then runs the strict parser and caches. The request file and a state
file holding the batch id live in ``llm.batch_dir`` (named by the hash of the request file), so an interrupted stage resumes
polling the same batch instead of paying twice. Replies that fail the parser are re-asked through the live
path (bounded by ``max_reasks``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tinyhelen.io import atomic_open, write_json
from tinyhelen.llm.core import ChatRequest, LLMFailure, http_error
from tinyhelen.llm.retry import classify, short

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def build_batch_lines(requests: list[ChatRequest], model: str,
                      decoding: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch API input lines; ``decoding``: one dict for all requests, or one per request (the client's
    ``decoding(req)``, with the request's reply cap and ``response_format``). Raises ValueError on duplicate
    custom_ids (the API requires unique ids)."""
    per = [decoding] * len(requests) if isinstance(decoding, dict) else list(decoding)
    seen: set[str] = set()
    lines = []
    for r, dec in zip(requests, per, strict=True):
        if r.custom_id in seen:
            raise ValueError(f"duplicate custom_id {r.custom_id!r} in batch")
        seen.add(r.custom_id)
        lines.append({"custom_id": r.custom_id, "method": "POST", "url": ENDPOINT,
                      "body": {"model": model, "messages": r.messages, **dec}})
    return lines


def write_request_file(lines: list[dict[str, Any]], batch_dir: Path | str) -> Path:
    """Write lines to ``<batch_dir>/<sha256[:16]>.requests.jsonl`` (content-named, atomic)."""
    blob = b"".join(orjson.dumps(x, option=orjson.OPT_SORT_KEYS) + b"\n" for x in lines)
    path = Path(batch_dir) / f"{hashlib.sha256(blob).hexdigest()[:16]}.requests.jsonl"
    if not path.exists():
        with atomic_open(path, "wb") as fh:
            fh.write(blob)
    return path


def parse_batch_output(text: str) -> dict[str, dict[str, Any]]:
    """Batch output (or error) file -> custom_id -> {"text", "usage", "error", "model"} (error None on success)."""
    out: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            cid = rec["custom_id"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"batch output line {lineno}: not a batch result ({exc})") from None
        resp, err = rec.get("response") or {}, rec.get("error")
        item: dict[str, Any] = {"text": None, "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "error": None,
                                "model": None}
        status = resp.get("status_code")
        body = resp.get("body") or {}
        if err:
            item["error"] = f"server_error: batch error {err.get('code', '')} {err.get('message', '')}".strip()
        elif status == 429:
            item["error"] = f"rate_limited: HTTP 429 {str(body)[:160]}"
        elif (status or 0) >= 500:
            item["error"] = f"server_error: HTTP {status} {str(body)[:160]}"
        elif status != 200:
            item["error"] = http_error(int(status or 0), str(body)[:160])
        else:
            try:
                content = body["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not a string")
                item["text"] = content
                item["model"] = body.get("model")
                u = body.get("usage") or {}
                item["usage"] = {"prompt_tokens": int(u.get("prompt_tokens", 0)),
                                 "completion_tokens": int(u.get("completion_tokens", 0))}
            except (KeyError, IndexError, TypeError) as exc:
                item["error"] = f"malformed_response: {type(exc).__name__}: {exc}"
        out[cid] = item
    return out


def _sync_client(cfg):
    from openai import OpenAI

    return OpenAI(api_key=cfg.api_key(), base_url=cfg.base_url, timeout=cfg.timeout_s, max_retries=3)


def submit_and_wait(cfg, request_file: Path) -> dict[str, dict[str, Any]]:
    """Upload, create the batch (or resume it from the state file), poll to the end, collect results."""
    import time

    client = _sync_client(cfg)
    state_path = request_file.with_suffix(".state.json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    batch_id = state.get("batch_id")
    if batch_id:
        batch = client.batches.retrieve(batch_id)
        if batch.status in {"failed", "expired", "cancelled"}:
            log.warning("batch %s ended %s; submitting a new one", batch_id, batch.status)
            batch_id = None
    if not batch_id:
        with open(request_file, "rb") as fh:
            up = client.files.create(file=fh, purpose="batch")
        batch = client.batches.create(input_file_id=up.id, endpoint=ENDPOINT, completion_window="24h",
                                      metadata={"request_file": request_file.name})
        batch_id = batch.id
        write_json(state_path, {"batch_id": batch_id, "input_file_id": up.id})
        log.info("submitted batch %s (%s)", batch_id, request_file.name)
    while batch.status not in TERMINAL:
        time.sleep(cfg.batch_poll_s)
        batch = client.batches.retrieve(batch_id)
        counts = getattr(batch, "request_counts", None)
        log.info("batch %s: %s %s", batch_id, batch.status, counts)
    results: dict[str, dict[str, Any]] = {}
    for fid in (getattr(batch, "error_file_id", None), getattr(batch, "output_file_id", None)):
        if fid:
            results.update(parse_batch_output(client.files.content(fid).text))
    write_json(state_path, {**state, "batch_id": batch_id, "status": batch.status})
    return results


async def fetch_batch(cfg, requests: list[ChatRequest], decoding: Sequence[dict[str, Any]]
                      ) -> dict[str, dict[str, Any]]:
    """Write the request file, submit (or resume) the batch, wait for it: ``custom_id -> {text, usage,
    error, model}``. Parsing, re-asks and caching are the client's (``ChatClient``)."""
    import openai

    path = write_request_file(build_batch_lines(requests, cfg.model, decoding), cfg.batch_dir)
    try:
        return await asyncio.to_thread(submit_and_wait, cfg, path)
    except openai.APIError as exc:  # upload, create or poll failed: an outage or a configuration error
        failure = classify(exc, cfg.timeout_s)
        raise LLMFailure(f"llm.batch_api: the Batch API at {cfg.base_url or 'api.openai.com'} failed: "
                         f"{failure.error if failure else short(exc)}; nothing was written. Rerun the stage to "
                         f"resume (the request file {path.name} stays in {cfg.batch_dir}, with the id of a batch "
                         "already submitted).") from None
