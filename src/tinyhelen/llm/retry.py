"""What went wrong with one HTTP call, whether to try again and when, and whether the endpoint is there at all.

``classify`` turns an exception of the ``openai`` client into the ``error`` of a ``ChatResult``
(``"<reason>: <detail>"``, reasons as in ``tinyhelen.llm.core``) and says whether a retry can help:

* a **dead endpoint**, ``unreachable``: no connection could be opened (connection refused, a host name
  that does not resolve, a TLS handshake or certificate failure, no route to the host). Nothing is
  listening there, or the URL is wrong: waiting does not help. ``EndpointHealth`` declares the endpoint
  down once connections have failed for ``llm.unreachable_s`` seconds with no reply in between, and from
  then on every request of the run fails at once (within seconds, not after each request has waited out its
  own retries); until then a connection failure is retried at the normal backoff, capped so that the
  retry lands by the deadline (a server that restarts within ``unreachable_s`` is waited for).
* a **busy endpoint**: ``rate_limited`` (429), ``server_error`` (5xx, 408, 409), ``timeout``,
  ``connection`` (a connection that was opened broke: reset, closed mid-reply), ``malformed_response`` (a
  2xx whose body is not a chat completion): retried up to ``llm.max_retries`` times with jittered
  exponential backoff (``RetryPolicy``, honouring ``Retry-After``).
* any other status (400, 401, 403, 404, 413, 422): final at once (``http_error``: ``too_large`` or
  ``http_<status>``).
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyhelen.llm.core import RateLimiter, http_error

log = logging.getLogger(__name__)
_MALFORMED = (ValueError, TypeError, AttributeError, IndexError, KeyError)


class MalformedResponse(ValueError):
    """The endpoint answered 2xx but the body is not a usable chat completion."""


@dataclass(frozen=True)
class Failure:
    """One failed HTTP call: its ``error`` string, whether another attempt may help, the server's
    ``Retry-After`` (seconds) where it sent one, and whether no connection could be opened at all."""

    error: str
    retry: bool = True
    retry_after: float | None = None
    unreachable: bool = False


def short(exc: BaseException, n: int = 160) -> str:
    s = " ".join(str(exc).split())
    return s[:n]


def _retry_after(exc: Any) -> float | None:
    try:
        v = exc.response.headers.get("retry-after")
        return float(v) if v is not None else None
    except (AttributeError, ValueError):
        return None


def unreachable_cause(exc: BaseException) -> str | None:
    """Why no connection could be opened (refused, unknown host, TLS), from the exception's chain; None
    when a connection was opened (or the failure is something else)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    connect_error = None
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return f"connection refused ({short(e, 120)})"
        if isinstance(e, socket.gaierror):
            return f"host name not resolved ({short(e, 120)})"
        if isinstance(e, ssl.SSLError):
            return f"TLS failure ({short(e, 120)})"
        if type(e).__name__ == "ConnectError" and connect_error is None:  # httpx / httpcore: connect failed
            connect_error = f"cannot connect ({short(e, 120)})"
        e = e.__cause__ or e.__context__
    return connect_error


def classify(exc: BaseException, timeout_s: float) -> Failure | None:
    """The failure of one call to ``chat.completions.create`` (None: not a transport or response failure,
    i.e. a bug to raise)."""
    import openai

    if isinstance(exc, openai.RateLimitError):
        return Failure(f"rate_limited: HTTP 429 {short(exc)}", retry_after=_retry_after(exc))
    if isinstance(exc, openai.APITimeoutError):
        return Failure(f"timeout: no reply within {timeout_s}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = unreachable_cause(exc)
        if cause is not None:
            return Failure(f"unreachable: {cause}", unreachable=True)
        return Failure(f"connection: {short(exc)}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return Failure(f"server_error: HTTP {exc.status_code} {short(exc)}")
        return Failure(http_error(exc.status_code, short(exc)), retry=False)  # 400, 401, 403, 404, 413, 422
    if isinstance(exc, (MalformedResponse, openai.APIResponseValidationError, *_MALFORMED)):
        return Failure(f"malformed_response: {type(exc).__name__}: {short(exc)}")
    return None


def extract(resp: Any) -> tuple[str, dict[str, int]]:
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


class RetryPolicy:
    """Delay before retry ``k``: ``backoff_base_s * 2**k * U(0.5, 1.5)``, capped at ``backoff_max_s``; a
    server's ``Retry-After`` replaces it (capped too). Seeded: the same config gives the same delays."""

    def __init__(self, base_s: float, max_s: float, seed: int | None):
        self.base_s, self.max_s = base_s, max_s
        self.rng = random.Random(seed or 0)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_s)
        return min(self.base_s * (2 ** attempt) * self.rng.uniform(0.5, 1.5), self.max_s)


class EndpointHealth:
    """Whether the endpoint can be reached at all. Connection failures (``unreachable``) with no reply in
    between, for ``give_up_s`` seconds, mean it is down: ``down`` then holds the error every request that
    has not been answered yet fails with (for the rest of the run)."""

    def __init__(self, give_up_s: float, clock: Callable[[], float] = time.monotonic):
        self.give_up_s, self.clock = give_up_s, clock
        self.since: float | None = None  # first connection failure of the current streak
        self.down: str | None = None

    def reset(self) -> None:
        """A new run tries the endpoint again."""
        self.since, self.down = None, None

    def reached(self) -> None:
        """The endpoint answered (whatever the status): a streak of connection failures ends."""
        if self.down is None:
            self.since = None

    def unreachable(self, error: str) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
        if self.down is None and now - self.since >= self.give_up_s:
            self.down = f"{error}; down: no connection for {now - self.since:.0f}s (llm.unreachable_s={self.give_up_s:g})"

    def wait_s(self, backoff_s: float) -> float:
        """The delay before retrying a connection failure: the backoff, but no later than the moment the
        endpoint would be declared down (so a dead endpoint fails within ``give_up_s`` and a bit)."""
        if self.since is None:
            return backoff_s
        return max(0.0, min(backoff_s, self.since + self.give_up_s - self.clock()))


class Transport:
    """One chat completion with the retries above, against one endpoint: counts HTTP calls, retries and
    tokens into ``stats`` (the client's counters) and keeps the endpoint's ``health`` across requests."""

    def __init__(self, cfg: Any, stats: Counter, timeout_s: float):
        self.max_retries, self.stats, self.timeout_s = cfg.max_retries, stats, timeout_s
        self.policy = RetryPolicy(cfg.backoff_base_s, cfg.backoff_max_s, cfg.seed)
        self.health = EndpointHealth(cfg.unreachable_s)

    async def call(self, client: Any, limiter: RateLimiter, model: str, messages: list[dict[str, str]],
                   decoding: dict[str, Any]) -> tuple[str | None, dict[str, int], str | None, int, str | None]:
        """-> (text, usage, error or None, HTTP calls made, the model that answered)."""
        err, tries = "exception: no attempt made", self.max_retries + 1
        for attempt in range(tries):
            if self.health.down:  # the endpoint cannot be reached: fail now, send nothing
                return None, {}, self.health.down, attempt, None
            await limiter.wait()
            self.stats["http_calls"] += 1
            try:
                resp = await client.chat.completions.create(model=model, messages=messages, **decoding)
                self.health.reached()
                text, usage = extract(resp)
                self.stats["prompt_tokens"] += usage["prompt_tokens"]
                self.stats["completion_tokens"] += usage["completion_tokens"]
                return text, usage, None, attempt + 1, getattr(resp, "model", None) or model
            except Exception as exc:  # noqa: BLE001 - classify says which are transport failures
                failure = classify(exc, self.timeout_s)
                if failure is None:
                    raise
            err = failure.error
            if failure.unreachable:
                self.health.unreachable(err)
            elif not err.startswith("timeout"):  # an answer (whatever its status): the endpoint is there
                self.health.reached()
            if not failure.retry:
                return None, {}, err, attempt + 1, None
            if attempt + 1 < tries and not self.health.down:
                self.stats["retries"] += 1
                delay = self.policy.delay(attempt, failure.retry_after)
                if failure.unreachable:
                    delay = self.health.wait_s(delay)
                log.debug("retry %d/%d in %.2fs after %s", attempt + 1, self.max_retries, delay, err)
                await asyncio.sleep(delay)
        if self.health.down:
            return None, {}, self.health.down, tries, None
        return None, {}, f"{err} (gave up after {tries} attempts)", tries, None
