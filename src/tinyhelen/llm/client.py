"""One chat client over the ``openai`` package for every LLM stage.

``ChatClient(cfg).run(requests)`` returns one ``ChatResult`` per ``ChatRequest``, in input order. A request
whose *content* fails (``format``: the reply failed the parser after all re-asks; ``too_large``: the
endpoint rejected this request as larger than its context) comes back with ``ok=False`` for the stage to
quarantine. Any other failure (an unreachable endpoint, timeout, 429/5xx after all retries, a malformed
body, 401/403/404) is an outage or a configuration error, not a result: after every request was tried (so
that what succeeded is cached), ``run`` raises ``LLMFailure`` with a one-screen summary
(``fail_on_outage=False`` returns the sentinels instead). See ``tinyhelen.llm.core``.

Per request: cache lookup first (content-addressed, see ``cache.py``); identical requests in one run are
sent once; then the live call under a concurrency bound and a client-side rate limit, with transport retries
(``tinyhelen.llm.retry``: jittered exponential backoff, honouring ``Retry-After``, on 429/5xx/timeouts/broken
connections/malformed bodies; an endpoint that cannot be connected to at all for ``llm.unreachable_s`` is
down, and every request not yet answered fails at once); then the strict parser (``ChatRequest.parse``); on
``ValueError`` the model is re-asked (the reply and a correction message are appended) at most
``max_reasks`` times. Final successes and (with
``llm.cache_failures``) final content failures are cached with the model that answered; transport failures
are not, so a rerun retries them.

Backends: ``openai`` talks to ``llm.base_url``; ``local`` starts a llama.cpp server for a GGUF file
(``tinyhelen.llm.local``) when the first uncached request needs it, sized to the prompts, and stops it at
the end of ``run`` (or of the ``with ChatClient(...)`` block); ``replay`` makes no calls at all.

Deterministic counts (requests, cache hits, tokens, reasons) go to ``metrics()``; wall-clock figures
(seconds, requests/s, generated tokens/s, HTTP calls and retries) to ``tinyhelen.timing.record``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyhelen import timing
from tinyhelen.io import write_json
from tinyhelen.llm import batch, local
from tinyhelen.llm.cache import ReplyCache, cache_key
from tinyhelen.llm.config import LLMConfig
from tinyhelen.llm.core import ChatRequest, ChatResult, LLMFailure, RateLimiter, estimate_tokens, failure_summary
from tinyhelen.llm.prompts import load_template
from tinyhelen.llm.provenance import endpoint_params
from tinyhelen.llm.retry import Transport

log = logging.getLogger(__name__)
for _name in ("httpx", "httpx2", "openai"):  # one line per HTTP call is noise at INFO level
    logging.getLogger(_name).setLevel(logging.WARNING)

REASK_ROOM = 200  # tokens of the re-ask message, for sizing a local context


class ChatClient:
    """Sync facade over an asyncio worker pool talking to an OpenAI-compatible endpoint."""

    def __init__(self, cfg: LLMConfig, metrics_path: Path | str | None = None, *, cache_dir: str | None = None,
                 timing_key: str = "llm"):
        """``cache_dir``: override of ``cfg.cache_dir`` ("" disables the cache); ``timing_key``: where this
        client's wall-clock figures go in the stage's timing record."""
        self.cfg = cfg
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.cache = ReplyCache(cache_dir if cache_dir is not None else cfg.cache_dir)
        self.reask = load_template("reask")
        self.stats: Counter = Counter()
        self.errors: Counter = Counter()
        self.seconds = 0.0
        self.timing_key = timing_key
        self.transport = Transport(cfg, self.stats, self.timeout_s())
        self._server: local.LocalServer | None = None
        self._in_block = False
        self._served: dict[str, Any] | None = None
        self._model_file = local.model_file(cfg.local) if cfg.backend == "local" else None
        self._sha256: str | None = None

    # ------------------------------------------------------------------------------------ public
    def decoding(self, req: ChatRequest | None = None) -> dict[str, Any]:
        """Decoding parameters sent with (and hashed into the cache key of) a request."""
        d: dict[str, Any] = {"temperature": self.cfg.temperature, "max_tokens": self.max_tokens(req)}
        if self.cfg.seed is not None:
            d["seed"] = self.cfg.seed
        if req is not None and req.response_format:
            d["response_format"] = req.response_format
        return d

    def max_tokens(self, req: ChatRequest | None = None) -> int:
        if req is not None and req.max_tokens:
            return min(self.cfg.max_tokens, req.max_tokens)
        return self.cfg.max_tokens

    def model_id(self) -> str:
        """The model as the cache key sees it: the configured name, or the GGUF file's sha256 for ``local``."""
        if self._model_file is not None:
            return f"gguf:{self.model_sha256()}"
        return self.cfg.model

    def model_sha256(self) -> str | None:
        """sha256 of the local GGUF file (memoised in the cache folder by path, size and mtime)."""
        from tinyhelen.llm.gguf import file_sha256

        if self._model_file is None:
            return None
        if self._sha256 is None:
            memo = Path(self.cache.root) / "gguf_sha256.json" if self.cache.root else None
            self._sha256 = file_sha256(self._model_file, memo)
        return self._sha256

    def served_model(self) -> str:
        """The model name sent with each request (``local``: the GGUF file name, the server's alias)."""
        return self._model_file.name if self._model_file is not None else self.cfg.model

    def context_limit(self) -> int | None:
        """Tokens per request the endpoint can take (prompt + reply), where known (``local``), else None."""
        if self._model_file is None:
            return None
        return local.context_limit(self.cfg.local, local.model_info(self._model_file))

    def key_of(self, req: ChatRequest) -> str:
        return cache_key(self.model_id(), req.template_id, req.messages, self.decoding(req))

    def run(self, requests: Sequence[ChatRequest], *, fail_on_outage: bool = True) -> list[ChatResult]:
        """Serve ``requests``; results in input order. Writes metrics (if a path was given). Raises
        ``LLMFailure`` when a request failed for a reason other than its content (``fail_on_outage``)."""
        t0 = time.monotonic()
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                results = asyncio.run(self._run(list(requests)))
            else:  # called from inside an event loop (notebooks): run in a helper thread
                box: dict[str, Any] = {}
                th = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(self._run(list(requests)))))
                th.start()
                th.join()
                results = box["r"]
        finally:
            if not self._in_block:
                self.close()
        self.seconds += time.monotonic() - t0
        self.write_metrics()
        self.record_timing()
        if fail_on_outage and any(r.is_failure for r in results):
            raise LLMFailure(failure_summary(results, self.timing_key, self.endpoint()),
                             [r for r in results if r.is_failure])
        return results

    def endpoint(self) -> str:
        if self.cfg.backend == "local":
            return f"local llama.cpp server ({self._model_file.name if self._model_file else '?'})"
        return self.cfg.base_url or "api.openai.com"

    def close(self) -> None:
        """Stop the local server, if one runs (idempotent)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "ChatClient":
        self._in_block = True
        return self

    def __exit__(self, *exc) -> None:
        self._in_block = False
        self.close()

    def metrics(self) -> dict[str, Any]:
        """Deterministic counts of this client's runs (no wall-clock figures)."""
        s = self.stats
        pin, pout = s["prompt_tokens"], s["completion_tokens"]
        cost = 0.0 if self.cfg.backend == "local" else (pin / 1000 * self.cfg.price_per_1k_input
                                                        + pout / 1000 * self.cfg.price_per_1k_output)
        live = s["requests"] - s["cache_hits"] - s["deduplicated"]
        return {
            "backend": self.cfg.backend, "batch_api": self.cfg.batch_api,
            "requests": s["requests"], "ok": s["ok"], "failed": s["requests"] - s["ok"],
            "cache_hits": s["cache_hits"], "deduplicated": s["deduplicated"], "live_requests": live,
            "cache_hit_rate": round(s["cache_hits"] / s["requests"], 4) if s["requests"] else 0.0,
            "reasks": s["reasks"], "errors": dict(sorted(self.errors.items())),
            "prompt_tokens": pin, "completion_tokens": pout,
            "cached_prompt_tokens": s["cached_prompt_tokens"],
            "cached_completion_tokens": s["cached_completion_tokens"],
            "cost_usd": round(cost, 6),
        }

    def timing(self) -> dict[str, Any]:
        """Wall-clock figures of this client's runs (they go to the stage's timing record, not to metrics)."""
        s, secs = self.stats, self.seconds
        live = s["requests"] - s["cache_hits"] - s["deduplicated"]
        out = {"seconds": round(secs, 3), "live_requests": live, "http_calls": s["http_calls"],
               "retries": s["retries"], "completion_tokens": s["completion_tokens"],
               "requests_per_s": round(live / secs, 3) if secs and live else 0.0,
               "generated_tokens_per_s": round(s["completion_tokens"] / secs, 2) if secs else 0.0}
        if s["server_start_ms"]:
            out["server_start_s"] = round(s["server_start_ms"] / 1000, 2)
        return out

    def write_metrics(self) -> None:
        if self.metrics_path:
            write_json(self.metrics_path, self.metrics())

    def record_timing(self) -> None:
        timing.record(**{self.timing_key: self.timing()})

    # ------------------------------------------------------------------------------------ internals
    def _base_url(self, todo: list[ChatRequest]) -> str | None:
        """Where live calls go; for ``local`` start (or grow) the server so the longest prompt fits."""
        if self.cfg.backend != "local":
            return self.cfg.base_url
        limit = self.context_limit() or 2048
        if self.cfg.local.n_ctx:
            need = self.cfg.local.n_ctx
        else:
            reasks = self.cfg.max_reasks
            need = max(estimate_tokens(r.messages) + (reasks + 1) * self.max_tokens(r) + reasks * REASK_ROOM
                       for r in todo)
            need = min(limit, -(-need // 256) * 256)
        if self._server is None:
            assert self._model_file is not None
            self._server = local.LocalServer(self.cfg.local, self._model_file)
        url = self._server.start(need)
        self.stats["server_start_ms"] += int(self._server.started_s * 1000)
        return url

    def served_by(self, base_url: str | None) -> dict[str, Any]:
        """What is known about the model behind the endpoint: backend, GGUF file and sha256 (``local``),
        parameter count (GGUF header; else the endpoint's ``/models`` metadata, as llama.cpp's
        ``llama-server`` reports it; else ``llm.model_params``)."""
        if self._served is not None:
            return self._served
        info: dict[str, Any] = {"backend": self.cfg.backend}
        if self._model_file is not None:
            gi = local.model_info(self._model_file)
            info.update({"model_file": gi.file, "model_sha256": self.model_sha256(), "n_params": gi.n_params})
        else:
            n = endpoint_params(base_url, self.cfg.model, self.cfg.api_key)
            info["n_params"] = self.cfg.model_params if n is None else n
        self._served = info
        return info

    def _client(self, base_url: str | None):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self.cfg.api_key(), base_url=base_url, timeout=self.timeout_s(), max_retries=0)

    def timeout_s(self) -> float:
        """Seconds to wait for one reply: ``llm.local.timeout_s`` for the local server (a reply takes as long
        as its generation; a retry after a timeout would only queue the same work again), else ``llm.timeout_s``."""
        return self.cfg.local.timeout_s if self.cfg.backend == "local" else self.cfg.timeout_s

    def _concurrency(self) -> int:
        if self.cfg.backend == "local":  # more requests than slots would queue in the server and time out
            return min(self.cfg.concurrency, self.cfg.local.parallel)
        return self.cfg.concurrency

    async def _run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        from tqdm import tqdm

        n = len(requests)
        self.stats["requests"] += n
        results: list[ChatResult | None] = [None] * n
        keys = [self.key_of(r) for r in requests]
        first: dict[str, int] = {}
        todo: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys)):
            hit = self._from_cache(req, key)
            if hit is not None:
                results[i] = hit
                self.stats["cache_hits"] += 1
            elif key in first:
                self.stats["deduplicated"] += 1
            else:
                first[key] = i
                todo.append(i)
        if todo and self.cfg.backend == "replay":
            raise LLMFailure(f"llm.backend=replay makes no calls, but {len(todo)} requests are not in the cache; "
                             "set llm.backend to openai or local")
        bar = tqdm(total=n, unit="req", desc=self.timing_key, disable=not self.cfg.progress or n == 0,
                   initial=n - len(todo), mininterval=0.5)
        if todo:
            self.transport.health.reset()
            try:
                base_url = await asyncio.to_thread(self._base_url, [requests[i] for i in todo])
            except asyncio.CancelledError:  # Ctrl-C while a local server loads: stop it, so that the loading
                self.close()                # thread ends now (asyncio.run waits for it before re-raising)
                raise
            served = await asyncio.to_thread(self.served_by, base_url)
            client = self._client(base_url)
            try:
                if self.cfg.batch_api:
                    got = await batch.fetch_batch(self.cfg, [requests[i] for i in todo],
                                                  [self.decoding(requests[i]) for i in todo])
                    for i in todo:
                        results[i] = await self._from_batch(client, requests[i], keys[i], got, served)
                    bar.update(len(todo))
                else:
                    sem = asyncio.Semaphore(self._concurrency())
                    limiter = RateLimiter(self.cfg.requests_per_second)

                    async def one(i: int) -> None:
                        async with sem:
                            results[i] = await self._serve(client, limiter, requests[i], keys[i], served)
                        bar.update(1)

                    await asyncio.gather(*(one(i) for i in todo))
            finally:
                await client.close()
        bar.close()
        for i, key in enumerate(keys):  # duplicates share the first request's result
            if results[i] is None:
                src = results[first[key]]
                assert src is not None
                results[i] = ChatResult(requests[i].custom_id, src.ok, src.text, src.parsed, src.error,
                                        src.cached, 0, dict(src.usage), key, src.model, src.served_by)
        out = [r for r in results if r is not None]
        for r in out:
            if r.ok:
                self.stats["ok"] += 1
            else:
                self.errors[r.reason or "unknown"] += 1
        return out

    def _from_cache(self, req: ChatRequest, key: str) -> ChatResult | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        usage = entry.get("usage") or {}
        reasks = self.cfg.max_reasks if req.max_reasks is None else req.max_reasks
        model, served = entry.get("model"), entry.get("served_by")
        if not entry.get("ok"):
            if entry.get("reasks", 0) < reasks:  # cached with fewer re-asks than allowed now: try again
                return None
            res = ChatResult(req.custom_id, False, entry.get("text"), None, entry.get("error"), True, 0, usage, key,
                             model, served)
        else:
            text = entry["text"]
            try:
                parsed = req.parse(text) if req.parse else text
            except ValueError:  # parser got stricter since the entry was written: not a hit
                return None
            res = ChatResult(req.custom_id, True, text, parsed, None, True, 0, usage, key, model, served)
        self.stats["cached_prompt_tokens"] += usage.get("prompt_tokens", 0)
        self.stats["cached_completion_tokens"] += usage.get("completion_tokens", 0)
        return res

    def store(self, req: ChatRequest, key: str, res: ChatResult, reasks: int) -> None:
        """Cache a final result: successes, and (``llm.cache_failures``) content failures; never outages."""
        if res.ok or (self.cfg.cache_failures and not res.is_failure):
            self.cache.put(key, {"key": key, "custom_id": req.custom_id, "model": res.model,
                                 "configured_model": self.cfg.model, "served_by": res.served_by,
                                 "template_id": req.template_id, "decoding": self.decoding(req),
                                 "messages": req.messages, "ok": res.ok, "text": res.text, "error": res.error,
                                 "reasks": reasks, "usage": res.usage, "created": time.time()})

    def reask_messages(self, messages: list[dict[str, str]], reply: str, err: str) -> list[dict[str, str]]:
        return [*messages, {"role": "assistant", "content": reply}, *self.reask.render(error=err)]

    async def _serve(self, client, limiter: RateLimiter, req: ChatRequest, key: str, served: dict[str, Any],
                     first_reply: tuple[str, dict[str, int], str | None] | None = None) -> ChatResult:
        """Ask (or start from ``first_reply`` = (text, usage, model) already received), parse, re-ask."""
        max_reasks = self.cfg.max_reasks if req.max_reasks is None else req.max_reasks
        messages = list(req.messages)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        attempts = 0
        parse_error = ""
        for ask in range(max_reasks + 1):
            if ask == 0 and first_reply is not None:
                text, u, model = first_reply
                err, n = None, 0
            else:
                text, u, err, n, model = await self.transport.call(client, limiter, self.served_model(), messages,
                                                                   self.decoding(req))
            attempts += n
            for k in usage:
                usage[k] += u.get(k, 0)
            if err is not None:
                if ask and err.startswith("too_large"):  # the re-ask no longer fits: the reply's format failed
                    err = f"format: {parse_error} (no room left in the context to re-ask)"
                    res = ChatResult(req.custom_id, False, None, None, err, False, attempts, usage, key, None, served)
                    self.store(req, key, res, max_reasks)
                    return res
                res = ChatResult(req.custom_id, False, None, None, err, False, attempts, usage, key, None, served)
                if not res.is_failure:
                    self.store(req, key, res, max_reasks)
                return res
            assert text is not None
            try:
                parsed = req.parse(text) if req.parse else text
            except ValueError as exc:
                parse_error = str(exc)
                if ask < max_reasks:
                    self.stats["reasks"] += 1
                    messages = self.reask_messages(messages, text, parse_error)
                    continue
                res = ChatResult(req.custom_id, False, text, None, f"format: {exc}", False, attempts, usage, key,
                                 model, served)
                self.store(req, key, res, max_reasks)
                return res
            res = ChatResult(req.custom_id, True, text, parsed, None, False, attempts, usage, key, model, served)
            self.store(req, key, res, max_reasks)
            return res
        raise AssertionError("unreachable")

    async def _from_batch(self, client, req: ChatRequest, key: str, got: dict[str, dict[str, Any]],
                          served: dict[str, Any]) -> ChatResult:
        """One Batch API result -> ChatResult: parsed like a live reply, parse failures re-asked live."""
        item = got.get(req.custom_id) or {"text": None, "usage": {}, "error": "server_error: missing from batch "
                                          "output", "model": None}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, **item["usage"]}
        self.stats["prompt_tokens"] += usage["prompt_tokens"]
        self.stats["completion_tokens"] += usage["completion_tokens"]
        self.stats["http_calls"] += 1
        if item["error"]:
            return ChatResult(req.custom_id, False, None, None, item["error"], False, 1, usage, key, None, served)
        res = await self._serve(client, RateLimiter(self.cfg.requests_per_second), req, key, served,
                                first_reply=(item["text"], usage, item.get("model")))
        res.attempts += 1
        return res
