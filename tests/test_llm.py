"""The LLM client against a real HTTP server on loopback (tinyhelen.llm.fake_server), with injected faults."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tinyhelen.config import ParamsError, validate_section
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, load_template
from tinyhelen.llm.batch import build_batch_lines, parse_batch_output
from tinyhelen.llm.cache import cache_key
from tinyhelen.llm.fake_server import FakeServer
from tinyhelen.llm.prompts import END_MARK, strip_end_marker


@pytest.fixture(scope="module")
def server():
    srv = FakeServer(0, slow_s=0.6).start()
    yield srv
    srv.stop()


def calls(srv: FakeServer) -> int:
    with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read()).get("chat_calls", 0)


def cfg_for(srv: FakeServer, **kw) -> LLMConfig:
    base = dict(backend="openai", base_url=srv.base_url, timeout_s=0.3, backoff_base_s=0.01, backoff_max_s=0.05,
                max_retries=3, max_reasks=2, concurrency=8, progress=False)
    return LLMConfig(**{**base, **kw})


def reqs(texts: list[str], tag: str = "") -> list[ChatRequest]:
    t = load_template("simplify_wiki")
    return [ChatRequest(f"{tag}r{i}", t.render(names="A: Anna", text=x), t.template_id, strip_end_marker)
            for i, x in enumerate(texts)]


def test_faults_retries_reasks_then_cache(server, tmp_path):
    texts = ["The municipality established an extraordinary commission.",
             "FAULT_429 The committee convened.", "FAULT_500 The committee adjourned.",
             "FAULT_TIMEOUT Precipitation occurred.", "FAULT_BADJSON Photosynthesis happens.",
             "FAULT_NOEND Never finishes.", "FAULT_NOEND_ONCE Finishes when asked again."]
    cfg = cfg_for(server)
    before = calls(server)
    client = ChatClient(cfg, metrics_path=tmp_path / "m.json", cache_dir=str(tmp_path / "cache"))
    res = client.run(reqs(texts, "a"))
    assert [r.custom_id for r in res] == [f"ar{i}" for i in range(len(texts))]  # input order
    by = {t.split()[0]: r for t, r in zip(texts, res)}
    assert by["The"].ok and by["The"].attempts == 1
    assert by["The"].parsed != texts[0] and by["The"].parsed.startswith("The ")  # rewritten, marker stripped
    assert by["FAULT_429"].ok and by["FAULT_429"].attempts == 3  # two 429s, then success
    assert by["FAULT_500"].ok and by["FAULT_500"].attempts == 3
    assert by["FAULT_TIMEOUT"].ok and by["FAULT_TIMEOUT"].attempts == 2
    assert by["FAULT_BADJSON"].ok and by["FAULT_BADJSON"].attempts == 2
    assert not by["FAULT_NOEND"].ok and by["FAULT_NOEND"].reason == "format"
    assert by["FAULT_NOEND"].attempts == 3  # first ask + 2 re-asks
    assert by["FAULT_NOEND_ONCE"].ok and by["FAULT_NOEND_ONCE"].attempts == 2
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["retries"] == 6 and m["reasks"] == 3 and m["errors"] == {"format": 1}
    assert m["http_calls"] == calls(server) - before == 1 + 3 + 3 + 2 + 2 + 3 + 2
    assert m["prompt_tokens"] > 0 and m["completion_tokens"] > 0

    # second run: everything (including the cached format failure) from the cache, zero calls
    before = calls(server)
    again = ChatClient(cfg, cache_dir=str(tmp_path / "cache")).run(reqs(texts, "a"))
    assert calls(server) == before
    assert all(r.cached and r.attempts == 0 for r in again)
    assert [(r.ok, r.text, r.parsed, r.error) for r in again] == [(r.ok, r.text, r.parsed, r.error) for r in res]


def test_gives_up_with_sentinel_and_does_not_cache_transport_errors(server, tmp_path):
    cfg = cfg_for(server, max_retries=1)
    r = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(["FAULT_429 give up now"], "b"))[0]
    assert not r.ok and r.reason == "rate_limited" and r.attempts == 2 and "gave up" in r.error
    before = calls(server)
    r2 = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(["FAULT_429 give up now"], "b"))[0]
    assert calls(server) > before and not r2.cached  # not cached: a rerun tries again (and now succeeds)
    assert r2.ok


def test_non_retryable_status_and_dedup(server, tmp_path):
    client = ChatClient(cfg_for(server), cache_dir=str(tmp_path))
    bad = ChatRequest("bad", [], "none@v0:0")  # the server answers 400 to an empty message list
    same = reqs(["Identical request text here."] * 3, "d")
    out = client.run([bad, *same])
    assert out[0].reason == "http_400" and out[0].attempts == 1
    assert all(r.ok for r in out[1:]) and len({r.text for r in out[1:]}) == 1
    assert client.metrics()["deduplicated"] == 2 and client.metrics()["http_calls"] == 2


def test_concurrency_speeds_up_and_rate_limit_spaces_requests(tmp_path):
    srv = FakeServer(0, latency_s=0.05).start()
    try:
        texts = [f"Document number {i} talks about astronomy." for i in range(24)]
        t0 = time.monotonic()
        out = ChatClient(cfg_for(srv, concurrency=8), cache_dir="").run(reqs(texts, "c"))
        fast = time.monotonic() - t0
        assert all(r.ok for r in out) and [r.custom_id for r in out] == [f"cr{i}" for i in range(24)]
        assert fast < 24 * 0.05 / 2  # at least 2x faster than serial
        t0 = time.monotonic()
        ChatClient(cfg_for(srv, requests_per_second=20), cache_dir="").run(reqs(texts[:8], "e"))
        assert time.monotonic() - t0 >= 7 / 20 * 0.9
    finally:
        srv.stop()


def test_replay_backend_never_calls(tmp_path):
    with pytest.raises(RuntimeError, match="makes no calls"):
        ChatClient(LLMConfig(), cache_dir=str(tmp_path)).run(reqs(["x"]))


def test_cache_key_covers_model_template_messages_decoding():
    m = [{"role": "user", "content": "hi"}]
    k = cache_key("m", "t@v1:abc", m, {"temperature": 0})
    assert k != cache_key("m2", "t@v1:abc", m, {"temperature": 0})
    assert k != cache_key("m", "t@v2:abd", m, {"temperature": 0})
    assert k != cache_key("m", "t@v1:abc", [{"role": "user", "content": "hi!"}], {"temperature": 0})
    assert k != cache_key("m", "t@v1:abc", m, {"temperature": 0.7})
    assert k == cache_key("m", "t@v1:abc", [dict(m[0])], {"temperature": 0})


def test_templates_render_and_hash(tmp_path):
    t = load_template("simplify_code")
    assert t.variables() == {"names", "text"} and t.template_id.startswith("simplify_code@v1:")
    msgs = t.render(names="A: Anna", text="print('{{x}}')")
    assert msgs[0]["role"] == "system" and "RUNNABLE" in msgs[0]["content"]
    assert "print('{{x}}')" in msgs[1]["content"] and "{{" not in msgs[1]["content"].replace("{{x}}", "")
    with pytest.raises(ValueError, match="missing"):
        t.render(text="x")
    d = tmp_path / "demo"
    d.mkdir()
    (d / "v1.txt").write_text("[user]\nSay {{w}}.\n")
    a = load_template("demo", root=tmp_path)
    (d / "v2.txt").write_text("[user]\nSay {{w}} now.\n")
    b = load_template("demo", root=tmp_path)
    assert b.version == 2 and a.sha256 != b.sha256


def test_strict_parser():
    assert strip_end_marker(f"hello\n{END_MARK}\n") == "hello"
    for bad in ("hello", f"\n{END_MARK}"):
        with pytest.raises(ValueError):
            strip_end_marker(bad)


def test_config_rejects_keys_in_files():
    with pytest.raises(ParamsError, match="llm.api_key_env"):
        validate_section("llm", {"api_key_env": "sk-abc123"}, LLMConfig)
    with pytest.raises(ParamsError, match="llm.concurency"):
        validate_section("llm", {"concurency": 4}, LLMConfig)


def test_batch_request_file_and_result_parsing():
    rs = reqs(["one.", "two."], "doc-")
    lines = build_batch_lines(rs, "m", {"temperature": 0})
    assert [ln["custom_id"] for ln in lines] == ["doc-r0", "doc-r1"]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["model"] == "m"
    with pytest.raises(ValueError, match="duplicate"):
        build_batch_lines([rs[0], rs[0]], "m", {})
    out = "\n".join(json.dumps(x) for x in [
        {"custom_id": "doc-r0", "response": {"status_code": 200, "body": {
            "choices": [{"message": {"content": f"ok\n{END_MARK}"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}}},
        {"custom_id": "doc-r1", "response": {"status_code": 429, "body": {"error": "slow down"}}},
        {"custom_id": "doc-r2", "error": {"code": "server_error", "message": "boom"}, "response": None},
        {"custom_id": "doc-r3", "response": {"status_code": 200, "body": {"choices": []}}}])
    got = parse_batch_output(out)
    assert got["doc-r0"] == {"text": f"ok\n{END_MARK}", "usage": {"prompt_tokens": 5, "completion_tokens": 2}, "error": None}
    assert got["doc-r1"]["error"].startswith("http_429")
    assert got["doc-r2"]["error"].startswith("server_error")
    assert got["doc-r3"]["error"].startswith("malformed_response")


def test_batch_mode_end_to_end(server, tmp_path):
    cfg = cfg_for(server, batch_api=True, batch_dir=str(tmp_path / "batches"), batch_poll_s=0.01)
    texts = ["The expedition traversed mountainous terrain.", "FAULT_NOEND_ONCE Needs a second ask."]
    out = ChatClient(cfg, cache_dir=str(tmp_path / "c")).run(reqs(texts, "bt"))
    assert all(r.ok for r in out), [r.error for r in out]
    assert list((tmp_path / "batches").glob("*.requests.jsonl")) and list((tmp_path / "batches").glob("*.state.json"))
    before = calls(server)
    again = ChatClient(cfg, cache_dir=str(tmp_path / "c")).run(reqs(texts, "bt"))
    assert all(r.cached for r in again) and calls(server) == before
