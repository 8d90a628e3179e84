"""The LLM client against a real HTTP server on loopback (tinyhelen.llm.fake_server), with injected faults:
retries, re-asks, outages (a failure, never a result), the cache, the answered model and provenance."""
from __future__ import annotations

import ast
import json
import struct
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyhelen import timing
from tinyhelen.config import ParamsError, validate_section
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, LLMFailure, load_template
from tinyhelen.llm.batch import build_batch_lines, parse_batch_output
from tinyhelen.llm.cache import cache_key
from tinyhelen.llm.core import http_error
from tinyhelen.llm.fake_server import FakeServer
from tinyhelen.llm.gguf import read_info
from tinyhelen.llm.prompts import END_MARK, strip_end_marker
from tinyhelen.llm.provenance import result_status, stage_provenance

SRC = Path(__file__).resolve().parents[1] / "src" / "tinyhelen"


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
    assert m["reasks"] == 3 and m["errors"] == {"format": 1}
    assert m["prompt_tokens"] > 0 and m["completion_tokens"] > 0
    assert not {"seconds", "requests_per_s", "http_calls", "retries"} & set(m), "wall-clock figures stay out of metrics"
    t = timing.recorded()["llm"]  # ... and go to the stage's timing record
    assert t["retries"] == 6 and t["http_calls"] == calls(server) - before == 1 + 3 + 3 + 2 + 2 + 3 + 2
    assert t["seconds"] > 0 and t["requests_per_s"] > 0

    # second run: everything (including the cached format failure) from the cache, zero calls
    before = calls(server)
    again = ChatClient(cfg, cache_dir=str(tmp_path / "cache")).run(reqs(texts, "a"))
    assert calls(server) == before
    assert all(r.cached and r.attempts == 0 for r in again)
    assert [(r.ok, r.text, r.parsed, r.error) for r in again] == [(r.ok, r.text, r.parsed, r.error) for r in res]


def test_gives_up_with_sentinel_and_does_not_cache_transport_errors(server, tmp_path):
    cfg = cfg_for(server, max_retries=1)
    r = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(["FAULT_429 give up now"], "b"), fail_on_outage=False)[0]
    assert not r.ok and r.reason == "rate_limited" and r.attempts == 2 and "gave up" in r.error and r.is_failure
    before = calls(server)
    r2 = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(["FAULT_429 give up now"], "b"))[0]
    assert calls(server) > before and not r2.cached  # not cached: a rerun tries again (and now succeeds)
    assert r2.ok


def test_an_outage_is_a_failure_and_a_rerun_retries_exactly_the_failed_requests(tmp_path):
    srv = FakeServer(0, fail_share=0.5).start()  # half of the prompts get 503 on every attempt
    try:
        texts = [f"Document {i} is about the weather in town." for i in range(12)]
        cfg = cfg_for(srv, max_retries=1)
        with pytest.raises(LLMFailure) as exc:
            ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(texts, "o"))
        failed = {r.custom_id for r in exc.value.failed}
        assert 0 < len(failed) < len(texts) and all(r.reason == "server_error" for r in exc.value.failed)
        msg = str(exc.value)
        assert f"{len(failed)} of {len(texts)} LLM requests failed" in msg and "server_error" in msg
        assert "retry" in msg and len(msg.splitlines()) <= 10, "a one-screen summary"
        srv.fail_share = 0.0  # the endpoint is back
        before = calls(srv)
        out = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(texts, "o"))
        assert calls(srv) - before == len(failed), "only the failed requests are sent again"
        assert {r.custom_id for r in out if not r.cached} == failed and all(r.ok for r in out)
    finally:
        srv.stop()


def test_endpoint_down_and_auth_errors_are_failures_too_large_is_content(server, tmp_path):
    down = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_base_s=0.0,
                     timeout_s=2, progress=False)
    with pytest.raises(LLMFailure, match="connection"):
        ChatClient(down, cache_dir=str(tmp_path)).run(reqs(["Anything at all."]))
    assert http_error(401, "invalid api key").startswith("http_401")
    assert http_error(404, "model not found").startswith("http_404")
    assert http_error(400, "request (2108 tokens) exceeds the available context size (2048 tokens)"
                      ).startswith("too_large")
    assert http_error(400, "unknown parameter 'foo'").startswith("http_400")
    r = ChatClient(cfg_for(server), cache_dir=str(tmp_path)).run(reqs(["FAULT_TOOLARGE a huge chunk"]))[0]
    assert not r.ok and r.reason == "too_large" and not r.is_failure, "one oversized request is quarantined"


def test_non_retryable_status_and_dedup(server, tmp_path):
    client = ChatClient(cfg_for(server), cache_dir=str(tmp_path))
    bad = ChatRequest("bad", [], "none@v0:0")  # the server answers 400 to an empty message list
    same = reqs(["Identical request text here."] * 3, "d")
    out = client.run([bad, *same], fail_on_outage=False)
    assert out[0].reason == "http_400" and out[0].attempts == 1 and out[0].is_failure
    assert all(r.ok for r in out[1:]) and len({r.text for r in out[1:]}) == 1
    assert client.metrics()["deduplicated"] == 2 and client.timing()["http_calls"] == 2
    with pytest.raises(LLMFailure, match="http_400"):
        ChatClient(cfg_for(server), cache_dir=str(tmp_path)).run([bad])


def test_answered_model_and_provenance_are_recorded(server, tmp_path):
    cfg = cfg_for(server, model="gpt-4o-mini")
    client = ChatClient(cfg, cache_dir=str(tmp_path))
    res = client.run(reqs(["The cat sat on the mat."], "p"))
    entry = json.loads(next(tmp_path.glob("*/*.json")).read_text())
    assert entry["model"] == "fake" and entry["configured_model"] == "gpt-4o-mini"  # what answered, not the config
    assert entry["served_by"] == {"backend": "openai", "n_params": 0}  # the endpoint's /models metadata
    again = ChatClient(cfg, cache_dir=str(tmp_path)).run(reqs(["The cat sat on the mat."], "p"))
    prov = stage_provenance(cfg, res, [r.template_id for r in reqs(["x"])], client.decoding())
    assert prov == stage_provenance(cfg, again, [r.template_id for r in reqs(["x"])], client.decoding()), \
        "a cached rerun records the same provenance"
    assert prov["models"] == [{"model": "fake", "backend": "openai", "n_params": 0}] and prov["source"] == "llm"
    assert prov["templates"] == [load_template("simplify_wiki").template_id]
    assert prov["decoding"] == {"temperature": 0.0, "max_tokens": 2048, "seed": 1234}
    assert result_status(prov, 10**9)["label"] == "pipeline check, not a result"
    # what the report card reads from the stage's metrics: the model and the pipeline-check flag
    assert prov["model"] == "fake" and prov["pipeline_check"] and prov["status"] == "pipeline_check"
    from tinyhelen.report.provenance import llm_marks
    from tinyhelen.report.provenance import LLMStageMetrics

    metrics = LLMStageMetrics.model_validate({"backend": "openai", "provenance": prov})
    assert metrics.pipeline_check and metrics.provenance.model == "fake"
    assert llm_marks("EXP1", {"simplify": {"wiki": metrics}}) == ["pipeline check, not a result (simplify)"]
    big = {**prov, "models": [{"model": "m", "n_params": 7 * 10**9}]}
    assert result_status(big, 10**9)["status"] == "result"
    assert result_status(stage_provenance(LLMConfig()), 10**9)["label"] == "the study's released outputs"
    from tinyhelen.exp2.proxy_judge import PROXY_PROVENANCE
    assert result_status(PROXY_PROVENANCE, 10**9)["status"] == "proxy"


def test_concurrency_overlaps_requests_and_rate_limit_spaces_them(tmp_path):
    srv = FakeServer(0, latency_s=0.3).start()
    try:
        texts = [f"Document number {i} talks about astronomy." for i in range(16)]
        out = ChatClient(cfg_for(srv, concurrency=4, timeout_s=30), cache_dir="").run(reqs(texts, "c"))
        assert all(r.ok for r in out) and [r.custom_id for r in out] == [f"cr{i}" for i in range(16)]
        assert 2 <= srv.stats["max_in_flight"] <= 4, "requests overlap, never more than llm.concurrency"
        t0 = time.monotonic()
        ChatClient(cfg_for(srv, requests_per_second=20, timeout_s=30), cache_dir="").run(reqs(texts[:8], "e"))
        assert time.monotonic() - t0 >= 7 / 20 * 0.9  # 8 starts spaced 1/20 s apart (a lower bound only)
    finally:
        srv.stop()


def test_response_format_enters_the_request_and_the_cache_key(server, tmp_path):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {"type": "object"}}}
    plain, constrained = reqs(["Same text."], "f")[0], reqs(["Same text."], "f")[0]
    constrained.response_format = fmt
    client = ChatClient(cfg_for(server), cache_dir=str(tmp_path))
    assert client.key_of(plain) != client.key_of(constrained)
    line = build_batch_lines([constrained], "m", [client.decoding(constrained)])[0]["body"]
    assert line["response_format"] == fmt and line["max_tokens"] == 2048


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
    with pytest.raises(ParamsError, match="batch_api needs backend openai"):
        validate_section("llm", {"backend": "local", "batch_api": True}, LLMConfig)
    with pytest.raises(ParamsError, match="llm.local.threads"):
        validate_section("llm", {"backend": "local", "local": {"threads": 0}}, LLMConfig)


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
    assert got["doc-r0"] == {"text": f"ok\n{END_MARK}", "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                             "error": None, "model": None}
    assert got["doc-r1"]["error"].startswith("rate_limited")
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


def _gguf_string(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


def test_gguf_header_metadata_and_parameter_count(tmp_path):
    """A hand-made GGUF v3 header: 2 metadata keys (one an array of strings, skipped), 2 tensors."""
    blob = b"GGUF" + struct.pack("<IQQ", 3, 2, 3)
    blob += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    blob += _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + _gguf_string("a") + _gguf_string("bc")
    blob += _gguf_string("llama.context_length") + struct.pack("<II", 4, 4096)
    for name, dims in (("tok_embd.weight", (576, 100)), ("norm.weight", (576,))):
        blob += _gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        blob += struct.pack("<IQ", 0, 0)
    (tmp_path / "m.gguf").write_bytes(blob)
    info = read_info(tmp_path / "m.gguf")
    assert (info.architecture, info.context_length, info.n_params, info.file) == ("llama", 4096, 576 * 101, "m.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGML" + blob[4:])
    with pytest.raises(ValueError, match="not a GGUF"):
        read_info(tmp_path / "bad.gguf")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinyhelen"):
            base = SRC.parent.joinpath(*node.module.split("."))
            subs = [a.name for a in node.names if (base / f"{a.name}.py").exists()]  # from pkg import module
            out += [(f"{node.module}.{n}", []) for n in subs]
            rest = [a.name for a in node.names if a.name not in subs]
            if rest:
                out.append((node.module, rest))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("tinyhelen")]
    return out


def test_llm_layer_has_no_import_cycle_and_no_private_names_across_modules():
    files = [f for pkg in ("llm", "simplify", "benchmarks") for f in sorted((SRC / pkg).glob("*.py"))]
    files += [SRC / "exp2" / n for n in ("judge.py", "llm_judge.py", "proxy_judge.py")]
    graph = {}
    for f in files:
        mod = "tinyhelen." + ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        imps = _imports(f)
        assert not [(m, n) for m, names in imps for n in names if n.startswith("_")], f"{f.name} imports a private name"
        graph[mod] = {m for m, _ in imps if m != mod and m != "tinyhelen"}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2 or m not in graph:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    for f in files:  # no attribute access to another object's private members either (e.g. chat._serve)
        src = f.read_text()
        assert "chat._" not in src and "client._" not in src, f"{f.name} reaches a private name"


class _ToyEndpoint(BaseHTTPRequestHandler):
    """The least an OpenAI-compatible endpoint serves: ``POST /v1/chat/completions`` (a reply, its model and
    usage) and, optionally, ``GET /v1/models`` with the model's size. It answers the judge's JSON schema."""

    bodies: list[dict] = []

    def _send(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._send({"object": "list", "data": [{"id": "toy-7b", "object": "model", "meta": {"n_params": 7 * 10**9}}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        labels = body["response_format"]["json_schema"]["schema"]["required"]
        text = json.dumps({lab: {"grammar": 4, "coherence": 4, "specificity": 4} for lab in labels})
        self._send({"id": "c", "object": "chat.completion", "created": 0, "model": "toy-7b",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}})

    def log_message(self, *args):
        pass


def test_an_endpoint_started_here_is_params_only_through_the_judge(tmp_path):
    """A new OpenAI-compatible endpoint needs no code: a toy server started in this test and the ``llm`` keys
    that point at it run the LLM judge (``judge.judge_answers``, what the judge stage calls) with the cache,
    and the provenance records the model that answered with the size its ``/models`` reports
    (docs/extending.md, "An LLM endpoint")."""
    from tinyhelen.exp2 import judge

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ToyEndpoint)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _ToyEndpoint.bodies = []
    try:
        llm = validate_section("llm", {"backend": "openai", "base_url": f"http://127.0.0.1:{httpd.server_port}/v1",
                                       "model": "toy-7b", "cache_dir": str(tmp_path / "cache"), "max_retries": 0,
                                       "progress": False}, LLMConfig)
        gens = tmp_path / "gens.jsonl"
        gens.write_text("".join(json.dumps({"set": "all", "qid": f"q{q}", "question": f"Question {q}?", "bin": "0-7",
                                            "recipe": rec, "checkpoint": "final", "step": 10, "answer": f"Answer {q}."})
                                + "\n" for q in range(3) for rec in ("leaner-leaner", "ori-ori")))
        jcfg = judge.JudgeConfig(backend="llm")  # judge.llm keys null: the llm section's endpoint
        scores, summ = judge.judge_answers([gens], tmp_path / "judge", jcfg, llm, seed=0)
        assert len(_ToyEndpoint.bodies) == 3 and {b["model"] for b in _ToyEndpoint.bodies} == {"toy-7b"}
        assert {b["temperature"] for b in _ToyEndpoint.bodies} == {0.0}  # judge.llm.temperature
        assert [s["total"] for s in scores] == [12.0] * 6 and summ["quarantine_gate"]["status"] == "passed"
        prov = summ["provenance"]
        assert summ["model"] == "toy-7b" and prov["backend"] == "openai" and prov["source"] == "llm"
        assert prov["models"] == [{"model": "toy-7b", "backend": "openai", "n_params": 7 * 10**9}]
        assert result_status(prov, llm.pipeline_check_below_params)["status"] == "result"
        again, summ2 = judge.judge_answers([gens], tmp_path / "judge2", jcfg, llm, seed=0)
        assert len(_ToyEndpoint.bodies) == 3 and again == scores and summ2["provenance"] == prov  # from the cache
    finally:
        httpd.shutdown()
        httpd.server_close()
