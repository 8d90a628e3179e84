"""The value types of the LLM layer and what a failed request means.

A request that cannot be served comes back as a ``ChatResult`` with ``ok=False`` and ``error`` =
``"<reason>: <detail>"``. Two kinds of reasons, handled differently by every LLM stage:

* **content** (``CONTENT_REASONS``): the endpoint works, this one request's content does not:
  ``format`` (the reply failed the strict parser after all re-asks) and ``too_large`` (the endpoint
  rejected this one request as larger than its context, HTTP 400/413/422). The stage quarantines the
  document or item with that reason and goes on.
* **failure** (everything else): ``unreachable`` (no connection could be opened: refused, unknown host,
  TLS; the endpoint is down or the URL wrong, so the run gives up within ``llm.unreachable_s``),
  ``connection``, ``timeout``, ``rate_limited``, ``server_error``, ``malformed_response`` (after all
  retries), ``http_<status>`` (401/403/404: auth or configuration, and any other non-retryable status),
  ``exception``. Which are retried and how: ``tinyhelen.llm.retry``. An outage is not a result: ``ChatClient.run`` raises
  ``LLMFailure`` (after every other request was served and cached), the stage exits non-zero and writes
  nothing, and a rerun retries exactly the failed requests (failures are never cached).
"""
from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinyhelen.cli import StageFailure

CONTENT_REASONS = ("format", "too_large")
# HTTP 400/413/422 bodies that say the request is larger than the endpoint's context (llama.cpp:
# exceed_context_size_error; OpenAI: context_length_exceeded; vLLM: maximum context length)
_TOO_LARGE_RE = re.compile(r"context|too (large|long)|exceed|maximum.{0,20}(length|tokens)|payload", re.I)


@dataclass
class ChatRequest:
    """One chat completion to make. ``custom_id`` names it in results, batch files and logs
    (e.g. ``<doc hash>-<chunk index>``); ``template_id`` (name@version:hash) enters the cache key;
    ``parse(text) -> value`` raises ValueError on a badly formatted reply (-> re-ask);
    ``response_format`` (an OpenAI ``response_format`` object, e.g. a JSON schema) constrains the reply
    on endpoints that support it and enters the cache key; ``max_tokens`` caps this reply below
    ``llm.max_tokens`` (e.g. a rewrite need not be longer than validation accepts)."""

    custom_id: str
    messages: list[dict[str, str]]
    template_id: str
    parse: Callable[[str], Any] | None = None
    max_reasks: int | None = None  # None: llm.max_reasks
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None  # None: llm.max_tokens


@dataclass
class ChatResult:
    """Outcome of one request. ``ok=False`` results carry ``error`` = ``"<reason>: <detail>"``;
    ``model`` is the model that answered (the response's ``model`` field), ``served_by`` what is known
    about it (backend, GGUF file, sha256, parameter count)."""

    custom_id: str
    ok: bool
    text: str | None = None
    parsed: Any = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0  # HTTP calls made for this request in this run (0 on a cache hit)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    key: str = ""
    model: str | None = None
    served_by: dict[str, Any] | None = None

    @property
    def reason(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None

    @property
    def is_failure(self) -> bool:
        """True for an outage or configuration error (not for content that failed validation)."""
        return not self.ok and self.reason not in CONTENT_REASONS


def http_error(status: int, message: str) -> str:
    """``error`` string of a non-retryable HTTP status: ``too_large`` when the body says the request
    exceeds the context, else ``http_<status>``."""
    if status in (400, 413, 422) and _TOO_LARGE_RE.search(message):
        return f"too_large: HTTP {status} {message}"
    return f"http_{status}: {message}"


class LLMFailure(StageFailure):
    """Requests failed for reasons that are not their content (an outage, auth, configuration), or a
    stage quarantined more than it accepts. The message is a one-screen summary."""

    def __init__(self, summary: str, failed: Sequence[ChatResult] = ()):
        super().__init__(summary)
        self.failed = list(failed)


def failure_summary(results: Sequence[ChatResult], where: str, endpoint: str | None, examples: int = 5) -> str:
    """One screen: how many requests failed, why, a few examples, and what a rerun does."""
    failed = [r for r in results if r.is_failure]
    ok = sum(r.ok for r in results)
    reasons = Counter(r.reason for r in failed)
    lines = [f"{where}: {len(failed)} of {len(results)} LLM requests failed after all retries "
             f"(endpoint {endpoint or 'default'}); nothing was written.",
             "  reasons: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common())]
    if reasons.get("unreachable"):
        lines.append(f"  no connection could be opened to {endpoint or 'the endpoint'}: is the server running, "
                     "and is the configured base_url right?")
    lines += [f"  {r.custom_id}: {(r.error or '')[:150]}" for r in failed[:examples]]
    if len(failed) > examples:
        lines.append(f"  ... and {len(failed) - examples} more")
    lines.append(f"  {ok} replies that succeeded are in the reply cache; rerun the stage (`dvc repro`) to retry "
                 f"exactly the {len(failed)} failed requests.")
    return "\n".join(lines)


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A deliberately high estimate of a chat prompt's token count (UTF-8 bytes / 3, plus the chat
    template's few tokens per message): used to size a local server's context so prompts fit."""
    return sum(-(-len(str(m.get("content", "")).encode("utf-8")) // 3) + 8 for m in messages) + 16


class RateLimiter:
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
