"""A dead endpoint is told from a busy one: no connection (refused port, unknown host, TLS failure) fails the
run within ``llm.unreachable_s`` (the judge's endpoint too), while 429 and 5xx keep their jittered backoff; a
local llama.cpp server that exits or never listens fails its start at once. Nothing is cached after such a
failure, so a rerun retries exactly what failed. The stage-level case (DVC) is in tests/test_llm_dvc.py."""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, LLMFailure, load_template
from tinyhelen.llm import local
from tinyhelen.llm.fake_server import FakeServer
from tinyhelen.llm.prompts import strip_end_marker
from tinyhelen.llm.retry import EndpointHealth, classify


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reqs(n: int, tag: str = "") -> list[ChatRequest]:
    t = load_template("simplify_wiki")
    return [ChatRequest(f"{tag}r{i}", t.render(names="A: Anna", text=f"Document {tag}{i} is about rain."),
                        t.template_id, strip_end_marker) for i in range(n)]


def cached(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json")) if root.exists() else []


async def _error_of(base_url: str) -> BaseException:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0, timeout=30)
    try:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    except Exception as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    finally:
        await client.close()
    raise AssertionError(f"{base_url} answered")


class _Status(BaseHTTPRequestHandler):
    status = 503

    def do_POST(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_no_connection_is_unreachable_a_broken_or_refusing_answer_is_not():
    """What ``classify`` calls ``unreachable``: refused, unknown host, TLS. A connection that opens and then
    breaks, or an answer with any status, means the endpoint is there."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hangup = socket.socket()
    hangup.bind(("127.0.0.1", 0))
    hangup.listen()
    threading.Thread(target=lambda: [hangup.accept()[0].close() for _ in range(4)], daemon=True).start()
    try:
        http = f"127.0.0.1:{httpd.server_port}"
        cases = {"refused": f"http://127.0.0.1:{closed_port()}/v1", "dns": "http://no-such-host.invalid/v1",
                 "tls": f"https://{http}/v1", "hangup": f"http://127.0.0.1:{hangup.getsockname()[1]}/v1",
                 "503": f"http://{http}/v1"}
        got = {k: classify(asyncio.run(_error_of(url)), 5.0) for k, url in cases.items()}
    finally:
        httpd.shutdown()
        httpd.server_close()
        hangup.close()
    assert got["refused"].unreachable and got["refused"].error.startswith("unreachable: connection refused")
    assert got["dns"].unreachable and "host name not resolved" in got["dns"].error
    assert got["tls"].unreachable and "TLS failure" in got["tls"].error
    assert not got["hangup"].unreachable and got["hangup"].error.startswith("connection") and got["hangup"].retry
    assert not got["503"].unreachable and got["503"].error.startswith("server_error") and got["503"].retry


def test_endpoint_health_declares_down_only_after_unreachable_s_without_an_answer():
    now = [0.0]
    h = EndpointHealth(10.0, clock=lambda: now[0])
    h.unreachable("unreachable: connection refused")
    assert h.down is None and h.wait_s(8.0) == 8.0
    now[0] = 7.0
    assert h.wait_s(8.0) == pytest.approx(3.0), "a retry lands by the deadline, not after it"
    h.reached()  # an answer in between (a 503 counts): the streak starts again
    now[0] = 12.0
    h.unreachable("unreachable: connection refused")
    assert h.down is None
    now[0] = 22.0
    h.unreachable("unreachable: connection refused")
    assert h.down and h.down.startswith("unreachable: connection refused") and "llm.unreachable_s=10" in h.down


@pytest.mark.slow
def test_a_dead_endpoint_fails_the_run_within_unreachable_s_and_caches_nothing(tmp_path):
    """40 requests with the default retries and backoff (5 retries, 1 s doubling): before, each waited out
    its own ~31 s of backoff (about 3 min here); now the run fails when connections have been refused for
    ``unreachable_s`` (2 s here), with the one-screen summary."""
    cfg = LLMConfig(backend="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", unreachable_s=2.0,
                    progress=False, cache_dir=str(tmp_path / "cache"))
    t0 = time.monotonic()
    with pytest.raises(LLMFailure) as exc:
        ChatClient(cfg).run(reqs(40, "d"))
    secs = time.monotonic() - t0
    assert secs < 8, f"took {secs:.1f}s"
    failed = exc.value.failed
    assert len(failed) == 40 and {r.reason for r in failed} == {"unreachable"}
    assert sum(r.attempts for r in failed) < 40, "requests after the verdict are not sent"
    msg = str(exc.value)
    assert "40 of 40 LLM requests failed" in msg and "no connection could be opened" in msg
    assert "connection refused" in msg and len(msg.splitlines()) <= 12
    assert cached(tmp_path / "cache") == [], "a connection failure is never an answer"


def test_503_and_429_are_still_retried_with_jittered_backoff(tmp_path):
    """A busy endpoint (503 on every attempt, or 429 twice) is retried max_retries times with exponential
    jittered delays, even with llm.unreachable_s=0: an answer, whatever its status, is not a dead endpoint."""
    srv = FakeServer(0, fail_share=1.0).start()
    try:
        cfg = LLMConfig(backend="openai", base_url=srv.base_url, max_retries=3, backoff_base_s=0.05,
                        backoff_max_s=10, unreachable_s=0, concurrency=1, progress=False, cache_dir="")
        client = ChatClient(cfg)
        delays: list[tuple[int, float]] = []
        policy_delay = client.transport.policy.delay
        client.transport.policy.delay = lambda k, ra=None: delays.append((k, policy_delay(k, ra))) or delays[-1][1]
        t0 = time.monotonic()
        (r,) = client.run(reqs(1, "busy"), fail_on_outage=False)
        secs = time.monotonic() - t0
        assert r.reason == "server_error" and r.attempts == 4 and "gave up after 4 attempts" in r.error
        assert [k for k, _ in delays] == [0, 1, 2]
        for k, d in delays:
            assert 0.05 * 2 ** k * 0.5 <= d <= 0.05 * 2 ** k * 1.5
        assert secs >= sum(d for _, d in delays) and not client.transport.health.down
        assert srv.stats["status_503"] == 4

        srv.fail_share = 0.0
        t = load_template("simplify_wiki")
        rl = ChatRequest("rl", t.render(names="A: Anna", text="FAULT_429 The rain stopped."), t.template_id,
                         strip_end_marker)
        delays.clear()
        (ok,) = client.run([rl])
        assert ok.ok and ok.attempts == 3 and [k for k, _ in delays] == [0, 1]
    finally:
        srv.stop()


@pytest.mark.slow
def test_the_judge_fails_fast_on_a_dead_endpoint_and_writes_nothing(tmp_path):
    """The LLM judge's own endpoint (``judge.llm.base_url``) goes through the same client: with retries that
    used to take over 30 s per request (5 retries from 2 s), a refused port fails the judge in seconds."""
    from tinyhelen.exp2 import judge

    llm = LLMConfig(max_retries=5, backoff_base_s=2.0, unreachable_s=1.0, progress=False,
                    cache_dir=str(tmp_path / "cache"))
    jcfg = judge.JudgeConfig(backend="llm", llm={"base_url": f"http://127.0.0.1:{closed_port()}/v1",
                                                 "model": "judge-7b"})
    gens = tmp_path / "gens.jsonl"
    gens.write_text("".join(json.dumps({"set": "all", "qid": f"q{q}", "question": f"Question {q}?", "bin": "0-7",
                                        "recipe": rec, "checkpoint": "final", "step": 10, "answer": f"Answer {q}."})
                            + "\n" for q in range(3) for rec in ("leaner-leaner", "ori-ori")))
    t0 = time.monotonic()
    with pytest.raises(LLMFailure, match="unreachable") as exc:
        judge.judge_answers([gens], tmp_path / "judge", jcfg, llm, seed=0)
    assert time.monotonic() - t0 < 10
    assert "llm_judge" in str(exc.value) and "no connection could be opened" in str(exc.value)
    assert not (tmp_path / "judge").exists() and cached(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------ local server start
def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("code,says", [
    pytest.param("import sys; sys.stderr.write('error: cannot load the model file\\n'); sys.exit(3)",
                 ["exited before it was ready (exit code 3)", "cannot load the model file"], id="exits"),
    pytest.param("import sys; print('LISTENING http://127.0.0.1:{port}', flush=True); sys.stdin.read()",
                 ["announced http://127.0.0.1:{port}, but nothing accepts connections there"],
                 marks=pytest.mark.slow, id="never-listens"),
    pytest.param("import sys, time; print('LISTENING http://127.0.0.1:{port}', flush=True); "
                 "time.sleep(1); sys.stderr.write('out of memory\\n'); sys.exit(9)",
                 ["exited while loading (exit code 9)", "out of memory"], id="exits-while-loading"),
])
def test_a_local_server_that_exits_or_never_listens_fails_its_start_at_once(monkeypatch, tmp_path, code, says):
    """Not the whole ``start_timeout_s`` (600 s here): the start fails within seconds with what happened and
    the server's log, and no child process is left."""
    port = closed_port()
    monkeypatch.setattr(local.LocalServer, "command", lambda self, n_ctx: _child(code.format(port=port)))
    server = local.LocalServer(local.LocalConfig(start_timeout_s=600), tmp_path / "model.gguf")
    t0 = time.monotonic()
    with pytest.raises(LLMFailure) as exc:
        server.start(512)
    assert time.monotonic() - t0 < local.HEALTH_GRACE_S + 5
    for s in says:
        assert s.format(port=port) in str(exc.value), str(exc.value)
    assert server.proc is None and not server.running() and server.log_path is None
