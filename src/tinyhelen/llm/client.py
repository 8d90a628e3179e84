"""One chat client over the ``openai`` package for every LLM stage.

``ChatClient(cfg).run(requests)`` returns one ``ChatResult`` per ``ChatRequest``, in input order, and never
raises for a single bad request: a request that cannot be served becomes a sentinel result with ``ok=False``
and an ``error`` of the form ``"<reason>: <detail>"`` (reasons: ``format`` (reply failed the parser after all
re-asks), ``rate_limited``, ``server_error``, ``timeout``, ``connection``, ``malformed_response`` (the HTTP body
was not a chat completion), ``http_<status>`` (non-retryable, e.g. 400/401), ``exception``).

Per request: cache lookup first (content-addressed, see ``cache.py``); identical requests in one run are
sent once; then the live call under a concurrency bound and a client-side rate limit, with transport retries
(jittered exponential backoff, honouring ``Retry-After``) on 429/5xx/timeouts/connection errors/malformed
bodies; then the strict parser (``ChatRequest.parse``); on ``ValueError`` the model is re-asked (the reply and
a correction message are appended) at most ``max_reasks`` times. Final successes and (with
``llm.cache_failures``) final format failures are cached; transport failures are not, so a rerun retries them.
Token usage and cost are accumulated and written to ``metrics_path`` after every ``run``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyhelen.io import write_json
from tinyhelen.llm.cache import ReplyCache, cache_key
from tinyhelen.llm.config import LLMConfig
from tinyhelen.llm.prompts import load_template

log = logging.getLogger(__name__)
for _name in ("httpx", "httpx2", "openai"):  # one line per HTTP call is noise at INFO level
    logging.getLogger(_name).setLevel(logging.WARNING)

RETRYABLE = ("rate_limited", "server_error", "timeout", "connection", "malformed_response")


@dataclass
class ChatRequest:
    """One chat completion to make. ``custom_id`` names it in results, batch files and logs
    (e.g. ``<doc hash>-<chunk index>``); ``template_id`` (name@version:hash) enters the cache key;
    ``parse(text) -> value`` raises ValueError on a badly formatted reply (-> re-ask)."""

    custom_id: str
    messages: list[dict[str, str]]
    template_id: str
    parse: Callable[[str], Any] | None = None
    max_reasks: int | None = None  # None: llm.max_reasks


@dataclass
class ChatResult:
    """Outcome of one request. ``ok=False`` results carry ``error`` = ``"<reason>: <detail>"``."""

    custom_id: str
    ok: bool
    text: str | None = None
    parsed: Any = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0  # HTTP calls made for this request in this run (0 on a cache hit)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    key: str = ""

    @property
    def reason(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None


class MalformedResponse(ValueError):
    """The endpoint answered 2xx but the body is not a usable chat completion."""


class _RateLimiter:
    """Spaces request starts at least ``1/rps`` seconds apart (rps <= 0: no limit)."""

    def __init__(self, rps: float):
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class ChatClient:
    """Sync facade over an asyncio worker pool talking to an OpenAI-compatible endpoint."""

    def __init__(self, cfg: LLMConfig, metrics_path: Path | str | None = None, *, cache_dir: str | None = None):
        """``cache_dir``: override of ``cfg.cache_dir`` ("" disables the cache)."""
        self.cfg = cfg
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.cache = ReplyCache(cache_dir if cache_dir is not None else cfg.cache_dir)
        self.reask = load_template("reask")
        self.stats: Counter = Counter()
        self.errors: Counter = Counter()
        self.seconds = 0.0
        self._rng = random.Random(cfg.seed or 0)

    # ------------------------------------------------------------------------------------ public
    def decoding(self) -> dict[str, Any]:
        d: dict[str, Any] = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        if self.cfg.seed is not None:
            d["seed"] = self.cfg.seed
        return d

    def key_of(self, req: ChatRequest) -> str:
        return cache_key(self.cfg.model, req.template_id, req.messages, self.decoding())

    def run(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Serve ``requests``; results in input order. Writes metrics (if a path was given)."""
        t0 = time.monotonic()
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
        self.seconds += time.monotonic() - t0
        self.write_metrics()
        return results

    def metrics(self) -> dict[str, Any]:
        s = self.stats
        pin, pout = s["prompt_tokens"], s["completion_tokens"]
        cost = pin / 1000 * self.cfg.price_per_1k_input + pout / 1000 * self.cfg.price_per_1k_output
        live = s["requests"] - s["cache_hits"] - s["deduplicated"]
        return {
            "backend": self.cfg.backend, "model": self.cfg.model, "batch_api": self.cfg.batch_api,
            "requests": s["requests"], "ok": s["ok"], "failed": s["requests"] - s["ok"],
            "cache_hits": s["cache_hits"], "deduplicated": s["deduplicated"], "live_requests": live,
            "cache_hit_rate": round(s["cache_hits"] / s["requests"], 4) if s["requests"] else 0.0,
            "http_calls": s["http_calls"], "retries": s["retries"], "reasks": s["reasks"],
            "errors": dict(sorted(self.errors.items())),
            "prompt_tokens": pin, "completion_tokens": pout,
            "cached_prompt_tokens": s["cached_prompt_tokens"],
            "cached_completion_tokens": s["cached_completion_tokens"],
            "cost_usd": round(cost, 6), "seconds": round(self.seconds, 3),
            "requests_per_s": round(live / self.seconds, 2) if self.seconds and live else 0.0,
        }

    def write_metrics(self) -> None:
        if self.metrics_path:
            write_json(self.metrics_path, self.metrics())

    # ------------------------------------------------------------------------------------ internals
    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self.cfg.api_key(), base_url=self.cfg.base_url, timeout=self.cfg.timeout_s,
                           max_retries=0)

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
        if todo and self.cfg.backend != "openai":
            raise RuntimeError(f"llm.backend={self.cfg.backend!r} makes no calls, but {len(todo)} requests "
                               "are not in the cache; set llm.backend: openai")
        bar = tqdm(total=n, unit="req", desc="llm", disable=not self.cfg.progress or n == 0,
                   initial=n - len(todo), mininterval=0.5)
        if todo:
            if self.cfg.batch_api:
                from tinyhelen.llm.batch import run_batch

                done = await run_batch(self, [requests[i] for i in todo], [keys[i] for i in todo])
                for i, res in zip(todo, done):
                    results[i] = res
                bar.update(len(todo))
            else:
                client = self._client()
                sem = asyncio.Semaphore(self.cfg.concurrency)
                limiter = _RateLimiter(self.cfg.requests_per_second)

                async def one(i: int) -> None:
                    async with sem:
                        results[i] = await self._serve(client, limiter, requests[i], keys[i])
                    bar.update(1)

                try:
                    await asyncio.gather(*(one(i) for i in todo))
                finally:
                    await client.close()
        bar.close()
        for i, key in enumerate(keys):  # duplicates share the first request's result
            if results[i] is None:
                src = results[first[key]]
                assert src is not None
                results[i] = ChatResult(requests[i].custom_id, src.ok, src.text, src.parsed, src.error,
                                        src.cached, 0, dict(src.usage), key)
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
        if not entry.get("ok"):
            if entry.get("reasks", 0) < reasks:  # cached with fewer re-asks than allowed now: try again
                return None
            res = ChatResult(req.custom_id, False, entry.get("text"), None, entry.get("error"), True, 0, usage, key)
        else:
            text = entry["text"]
            try:
                parsed = req.parse(text) if req.parse else text
            except ValueError:  # parser got stricter since the entry was written: not a hit
                return None
            res = ChatResult(req.custom_id, True, text, parsed, None, True, 0, usage, key)
        self.stats["cached_prompt_tokens"] += usage.get("prompt_tokens", 0)
        self.stats["cached_completion_tokens"] += usage.get("completion_tokens", 0)
        return res

    def store(self, req: ChatRequest, key: str, res: ChatResult, reasks: int) -> None:
        if res.ok or (self.cfg.cache_failures and res.reason == "format"):
            self.cache.put(key, {"key": key, "custom_id": req.custom_id, "model": self.cfg.model,
                                 "template_id": req.template_id, "decoding": self.decoding(),
                                 "messages": req.messages, "ok": res.ok, "text": res.text, "error": res.error,
                                 "reasks": reasks, "usage": res.usage, "created": time.time()})

    def reask_messages(self, messages: list[dict[str, str]], reply: str, err: str) -> list[dict[str, str]]:
        return [*messages, {"role": "assistant", "content": reply}, *self.reask.render(error=err)]

    async def _serve(self, client, limiter: _RateLimiter, req: ChatRequest, key: str) -> ChatResult:
        max_reasks = self.cfg.max_reasks if req.max_reasks is None else req.max_reasks
        messages = list(req.messages)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        attempts = 0
        text: str | None = None
        for ask in range(max_reasks + 1):
            text, u, err, n = await self._call(client, limiter, messages)
            attempts += n
            for k in usage:
                usage[k] += u.get(k, 0)
            if err is not None:
                return ChatResult(req.custom_id, False, None, None, err, False, attempts, usage, key)
            assert text is not None
            try:
                parsed = req.parse(text) if req.parse else text
            except ValueError as exc:
                if ask < max_reasks:
                    self.stats["reasks"] += 1
                    messages = self.reask_messages(messages, text, str(exc))
                    continue
                res = ChatResult(req.custom_id, False, text, None, f"format: {exc}", False, attempts, usage, key)
                self.store(req, key, res, max_reasks)
                return res
            res = ChatResult(req.custom_id, True, text, parsed, None, False, attempts, usage, key)
            self.store(req, key, res, max_reasks)
            return res
        raise AssertionError("unreachable")

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cfg.backoff_max_s)
        d = self.cfg.backoff_base_s * (2 ** attempt) * self._rng.uniform(0.5, 1.5)
        return min(d, self.cfg.backoff_max_s)

    async def _call(self, client, limiter: _RateLimiter, messages: list[dict[str, str]]
                    ) -> tuple[str | None, dict[str, int], str | None, int]:
        """One completion with transport retries -> (text, usage, error or None, HTTP calls made)."""
        import openai

        err = "exception: no attempt made"
        for attempt in range(self.cfg.max_retries + 1):
            await limiter.wait()
            self.stats["http_calls"] += 1
            retry_after = None
            try:
                resp = await client.chat.completions.create(model=self.cfg.model, messages=messages,
                                                            **self.decoding())
                text, usage = _extract(resp)
                self.stats["prompt_tokens"] += usage["prompt_tokens"]
                self.stats["completion_tokens"] += usage["completion_tokens"]
                return text, usage, None, attempt + 1
            except openai.RateLimitError as exc:
                err, retry_after = f"rate_limited: HTTP 429 {_short(exc)}", _retry_after(exc)
            except openai.APITimeoutError:
                err = f"timeout: no reply within {self.cfg.timeout_s}s"
            except openai.APIConnectionError as exc:
                err = f"connection: {_short(exc)}"
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code in (408, 409):
                    err = f"server_error: HTTP {exc.status_code} {_short(exc)}"
                else:  # 400, 401, 403, 404, 422: retrying will not help
                    return None, {}, f"http_{exc.status_code}: {_short(exc)}", attempt + 1
            except (MalformedResponse, openai.APIResponseValidationError, ValueError, TypeError,
                    AttributeError, IndexError, KeyError) as exc:
                err = f"malformed_response: {type(exc).__name__}: {_short(exc)}"
            if attempt < self.cfg.max_retries:
                self.stats["retries"] += 1
                delay = self.backoff(attempt, retry_after)
                log.debug("retry %d/%d in %.2fs after %s", attempt + 1, self.cfg.max_retries, delay, err)
                await asyncio.sleep(delay)
        return None, {}, f"{err} (gave up after {self.cfg.max_retries + 1} attempts)", self.cfg.max_retries + 1


def _short(exc: BaseException, n: int = 160) -> str:
    s = " ".join(str(exc).split())
    return s[:n]


def _retry_after(exc: Any) -> float | None:
    try:
        v = exc.response.headers.get("retry-after")
        return float(v) if v is not None else None
    except (AttributeError, ValueError):
        return None


def _extract(resp: Any) -> tuple[str, dict[str, int]]:
    """Reply text and token usage of a chat completion; MalformedResponse if the body is not one."""
    if isinstance(resp, (str, bytes)) or not getattr(resp, "choices", None):
        raise MalformedResponse("response has no choices")
    msg = resp.choices[0].message
    text = getattr(msg, "content", None)
    if not isinstance(text, str):
        raise MalformedResponse("choices[0].message.content is not a string")
    u = getattr(resp, "usage", None)
    usage = {"prompt_tokens": int(getattr(u, "prompt_tokens", 0) or 0),
             "completion_tokens": int(getattr(u, "completion_tokens", 0) or 0)}
    return text, usage
