"""A small deterministic OpenAI-compatible server for tests and offline demos (loopback only).

    python -m tinyhelen.llm.fake_server --port 8765 [--fault-rate 0.1] [--latency-ms 5]

Speaks ``POST /v1/chat/completions`` (plus ``GET /v1/models`` and the Batch API subset ``POST /v1/files``,
``GET /v1/files/<id>/content``, ``POST /v1/batches``, ``GET /v1/batches/<id>``). ``GET /stats`` returns call
counters; ``POST /stats/reset`` clears them. The "model" is a deterministic rule system that understands
the project's prompt templates (the ``TASK: <name>`` line): ``simplify`` maps every word outside the
2,000-word list to a list word with the same initial (fenced code untouched), ``glue_rewrite`` does the same
per item line, ``glue_verify`` answers from a hash of the item, ``eval_generate`` composes questions from the
examples and fixed word pools. It is NOT a language model; it exercises the client path end to end.

Faults (for tests) are switched on by tokens in the prompt text, per distinct request body:
``FAULT_429`` / ``FAULT_500``: the first 2 attempts fail with that status; ``FAULT_TIMEOUT``: the first
attempt answers after ``--slow-s`` seconds; ``FAULT_BADJSON``: the first attempt returns a non-JSON body;
``FAULT_NOEND``: replies never carry the end marker; ``FAULT_NOEND_ONCE``: only the first ask lacks it;
``FAULT_MARKER``: the reply keeps a template delimiter; ``FAULT_LONG``: the reply repeats the text 3 times;
``FAULT_EMPTY``: an empty reply; ``FAULT_TOOLARGE``: HTTP 400, the request exceeds the context.
``--fault-rate r`` additionally gives a pseudo-random share r of request
bodies one transient fault (429, 500, timeout or bad JSON) on their first attempt. ``--fail-share s`` (or
``POST /faults {"fail_share": s}``) is a lasting partial outage: a pseudo-random share s of the prompts
(by their text) get HTTP 503 on every attempt, until it is set back to 0.

A request with a JSON ``response_format`` gets the judge's JSON without the end marker (as a server that
constrains decoding to the schema would). Replies name the model ``fake`` whatever was asked for, and
``GET /v1/models`` reports ``meta.n_params: 0`` (it is not a model).
"""
from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
BEGIN, END_TEXT, END = "<<<BEGIN TEXT>>>", "<<<END TEXT>>>", "<<<END>>>"
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)


def _h(*parts: Any) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12], 16)


class FakeModel:
    """Deterministic replies for the project's templates."""

    def __init__(self) -> None:
        words = [w.strip() for w in (RESOURCES / "common_words_2000.txt").read_text().splitlines()
                 if w.strip() and not w.startswith("#")]
        self.common = set(words)
        self.by_initial: dict[str, list[str]] = {}
        for w in words:
            if w.isalpha() and len(w) > 2:
                self.by_initial.setdefault(w[0], []).append(w)

    def simple_word(self, w: str) -> str:
        lw = w.lower()
        if lw in self.common or len(w) <= 2 or "'" in w or w.isupper():  # acronyms and FAULT_ tokens stay
            return w
        pool = self.by_initial.get(lw[0]) or ["thing"]
        new = pool[_h(lw) % len(pool)]
        return new.capitalize() if w[0].isupper() else new

    def simplify(self, text: str) -> str:
        out, pos = [], 0
        for m in list(_FENCE_RE.finditer(text)) + [None]:
            end = m.start() if m else len(text)
            out.append(_WORD_RE.sub(lambda x: self.simple_word(x.group(0)), text[pos:end]))
            if m:
                out.append(m.group(0))
                pos = m.end()
        return "".join(out)

    def reply(self, messages: list[dict[str, str]]) -> str:
        user = next((m["content"] for m in messages if m.get("role") == "user"), "")
        task = re.search(r"^TASK: (\w+)", user, re.M)
        task_name = task.group(1) if task else ""
        block = user.split(BEGIN, 1)[1].split(END_TEXT, 1)[0].strip("\n") if BEGIN in user else user
        if task_name == "simplify":
            body = self.simplify(block)
            if "FAULT_LONG" in block:
                body = "\n".join([body] * 3)
            if "FAULT_MARKER" in block:
                body = body + "\n" + BEGIN
            if "FAULT_EMPTY" in block:
                body = ""
            return f"{body}\n{END}"
        if task_name == "glue_rewrite":
            lines = [ln for ln in block.splitlines() if ln.strip()]
            return "\n".join(f"{ln[:2]}{self.simplify(ln[2:])}" for ln in lines) + f"\n{END}"
        if task_name == "glue_verify":
            choices = re.search(r"^Possible answers: (.*)$", user, re.M)
            opts = [c.strip() for c in (choices.group(1) if choices else "yes | no").split("|")]
            if any("number" in o for o in opts):  # regression (stsb): word overlap as a similarity 0-5
                a, b = (block.split("\nB: ") + [""])[:2]
                sa, sb = set(_WORD_RE.findall(a.lower())), set(_WORD_RE.findall(b.lower()))
                score = 5 * len(sa & sb) / max(1, len(sa | sb))
                return f"ANSWER: {score:.1f}\n{END}"
            return f"ANSWER: {opts[_h(block) % len(opts)]}\n{END}"
        if task_name == "eval_generate":
            n = int(m.group(1)) if (m := re.search(r"Write (\d+) new questions", user)) else 5
            seeds = [re.sub(r"^[-*\d.\s]+", "", ln).strip() for ln in block.splitlines() if ln.strip()]
            return "\n".join(f"{i + 1}. {self.question(seeds, i)}" for i in range(n)) + f"\n{END}"
        if task_name == "judge":  # EXP2 judge: scores depend on the answer text only (order-independent)
            answers = re.findall(rf"Answer ([A-Z]):\n{re.escape(BEGIN)}\n(.*?)\n{re.escape(END_TEXT)}", user, re.S)
            return json.dumps({lab: self.grade(text) for lab, text in answers}) + f"\n{END}"
        return f"I can only do the project's tasks.\n{END}"

    @staticmethod
    def grade(text: str) -> dict[str, int]:
        """Deterministic 0-5 grades for the judge task (longer answers score higher; not a real judge)."""
        if text.startswith("(empty answer"):  # the note asks for the worst score
            return {"grammar": 0, "coherence": 0, "specificity": 0}
        n = len(text.split())
        return {"grammar": min(5, n), "coherence": min(5, n // 2), "specificity": len(text) % 6}

    _ANIMALS = ["cat", "dog", "duck", "frog", "bear", "fish", "bird", "cow", "pig", "horse", "mouse", "lion"]
    _THINGS = ["ball", "tree", "boat", "hat", "cake", "book", "car", "box", "kite", "shoe", "cup", "bed"]
    _FORMS = ["Tell a short story about a {a} who finds a {t}.", "Why does a {a} like to play with a {t}?",
              "What can you do with a {t} on a rainy day?", "How is a {a} different from a {t}?",
              "Describe a {t} to a friend who has never seen one.", "Give three tips for a {a} who is lost."]

    def question(self, seeds: list[str], i: int) -> str:
        key = _h("|".join(seeds), i)
        if i % 5 == 4 and seeds:  # every fifth: a copy of an example (the dedup step must drop it)
            return seeds[key % len(seeds)]
        if i % 5 == 3 and i > 0:  # a near-duplicate of the question before
            return self.question(seeds, i - 1).rstrip("?.") + " please?"
        form = self._FORMS[key % len(self._FORMS)]
        return form.format(a=self._ANIMALS[(key >> 8) % len(self._ANIMALS)],
                           t=self._THINGS[(key >> 16) % len(self._THINGS)])


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once (default backlog 5 resets connections)

    def __init__(self, port: int = 0, *, fault_rate: float = 0.0, slow_s: float = 2.0, latency_s: float = 0.0,
                 retry_after: float | None = None, host: str = "127.0.0.1", fail_share: float = 0.0):
        super().__init__((host, port), _Handler)
        self.model = FakeModel()
        self.fault_rate, self.slow_s, self.latency_s, self.retry_after = fault_rate, slow_s, latency_s, retry_after
        self.fail_share = fail_share
        self.in_flight = 0  # chat requests being answered now (stats["max_in_flight"]: the most at once)
        self.lock = threading.Lock()
        self.stats: Counter = Counter()
        self.attempts: Counter = Counter()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    @property
    def base_url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/v1"

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def start(self) -> "FakeServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # ------------------------------------------------------------------ chat completions
    def completion(self, body: dict[str, Any], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        """-> (status, JSON-able body or raw bytes, headers); applies the fault plan."""
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            return 400, {"error": {"message": "messages must be a non-empty list", "type": "invalid_request_error"}}, {}
        text = "\n".join(str(m.get("content", "")) for m in messages)
        rkey = hashlib.sha256(raw).hexdigest()
        with self.lock:
            self.attempts[rkey] += 1
            attempt = self.attempts[rkey]
        hdr = {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}
        if self.fail_share and (_h(text, "outage") % 10_000) / 10_000 < self.fail_share:
            return 503, {"error": {"message": "service unavailable (lasting outage)", "type": "server_error"}}, {}
        if "FAULT_TOOLARGE" in text:
            return 400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                   "message": "request (9031 tokens) exceeds the available context size (4096 tokens)"}}, {}
        if "FAULT_429" in text and attempt <= 2:
            return 429, {"error": {"message": "rate limited (injected)", "type": "rate_limit_error"}}, hdr
        if "FAULT_500" in text and attempt <= 2:
            return 500, {"error": {"message": "server error (injected)", "type": "server_error"}}, {}
        if "FAULT_TIMEOUT" in text and attempt == 1:
            time.sleep(self.slow_s)
        if "FAULT_BADJSON" in text and attempt == 1:
            return 200, b'{"id": "chatcmpl-broken", "choices": [', {}
        if self.fault_rate and attempt == 1 and (_h(rkey) % 10_000) / 10_000 < self.fault_rate:
            kind = _h(rkey, "kind") % 4
            if kind == 0:
                return 429, {"error": {"message": "rate limited (random)", "type": "rate_limit_error"}}, hdr
            if kind == 1:
                return 503, {"error": {"message": "overloaded (random)", "type": "server_error"}}, {}
            if kind == 2:
                time.sleep(self.slow_s)
            else:
                return 200, b"<html>bad gateway</html>", {}
        if self.latency_s:
            time.sleep(self.latency_s)
        reply = self.model.reply(messages)
        if "FAULT_NOEND" in text and ("FAULT_NOEND_ONCE" not in text or len(messages) <= 2):
            reply = reply.replace(END, "").rstrip()
        if (body.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
            reply = reply.replace(END, "").rstrip()
        ptoks = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        ctoks = len(reply) // 4 + 1
        return 200, {
            "id": f"chatcmpl-{rkey[:24]}", "object": "chat.completion", "created": 0,
            "model": "fake", "system_fingerprint": "fake-deterministic",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks, "total_tokens": ptoks + ctoks},
        }, {}

    # ------------------------------------------------------------------ batch API subset
    def run_batch(self, input_file_id: str) -> dict[str, Any]:
        out_lines = []
        for ln in self.files[input_file_id].decode().splitlines():
            if not ln.strip():
                continue
            req = json.loads(ln)
            body = req["body"]
            status, resp, _ = self.completion(body, json.dumps(body, sort_keys=True).encode())
            if isinstance(resp, bytes):
                status, resp = 500, {"error": {"message": "malformed"}}
            out_lines.append(json.dumps({"id": f"batch_req_{len(out_lines)}", "custom_id": req["custom_id"],
                                         "response": {"status_code": status, "body": resp}, "error": None}))
        fid = f"file-out-{len(self.files)}"
        self.files[fid] = ("\n".join(out_lines) + "\n").encode()
        bid = f"batch_{len(self.batches)}"
        n = len(out_lines)
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                             "input_file_id": input_file_id, "completion_window": "24h", "status": "completed",
                             "output_file_id": fid, "error_file_id": None, "created_at": 0,
                             "request_counts": {"total": n, "completed": n, "failed": 0}}
        return self.batches[bid]


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid 40 ms delayed-ACK stalls

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:  # noqa: N802
        s = self.server
        if self.path == "/stats":
            with s.lock:
                return self._send(200, dict(s.stats))
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "tinyhelen",
                                                                "meta": {"n_params": 0}}]})
        m = re.fullmatch(r"/v1/batches/([\w-]+)", self.path)
        if m and m.group(1) in s.batches:
            return self._send(200, s.batches[m.group(1)])
        m = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
        if m and m.group(1) in s.files:
            return self._send(200, s.files[m.group(1)], {"content-type": "application/octet-stream"})
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, s: FakeServer, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(400, {"error": {"message": "body is not JSON"}})
        status, resp, hdr = s.completion(body, raw)
        s.count(f"status_{status}")
        return self._send(status, resp, hdr)

    def do_POST(self) -> None:  # noqa: N802
        s = self.server
        raw = self._body()
        if self.path == "/stats/reset":
            with s.lock:
                s.stats.clear()
                s.attempts.clear()
            return self._send(200, {})
        if self.path == "/faults":
            s.fail_share = float(json.loads(raw or b"{}").get("fail_share", 0.0))
            return self._send(200, {"fail_share": s.fail_share})
        if self.path.rstrip("/") == "/v1/chat/completions":
            s.count("chat_calls")
            with s.lock:
                s.in_flight += 1
                s.stats["max_in_flight"] = max(s.stats["max_in_flight"], s.in_flight)
            try:
                self._chat(s, raw)
            finally:
                with s.lock:
                    s.in_flight -= 1
            return None
        if self.path.rstrip("/") == "/v1/files":
            msg = email.parser.BytesParser().parsebytes(
                b"content-type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + raw)
            content = b""
            for part in msg.walk():
                if part.get_param("name", header="content-disposition") == "file":
                    content = part.get_payload(decode=True) or b""
            fid = f"file-{len(s.files)}"
            s.files[fid] = content
            return self._send(200, {"id": fid, "object": "file", "bytes": len(content), "created_at": 0,
                                    "filename": "batch.jsonl", "purpose": "batch", "status": "processed"})
        if self.path.rstrip("/") == "/v1/batches":
            body = json.loads(raw)
            s.count("batches")
            return self._send(200, s.run_batch(body["input_file_id"]))
        self._send(404, {"error": {"message": f"no route {self.path}"}})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Deterministic OpenAI-compatible loopback server (tests, demos).")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--slow-s", type=float, default=2.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fail-share", type=float, default=0.0, help="share of prompts answered 503 on every attempt")
    a = p.parse_args(argv)
    srv = FakeServer(a.port, fault_rate=a.fault_rate, slow_s=a.slow_s, latency_s=a.latency_ms / 1000, host=a.host,
                     fail_share=a.fail_share)
    print(f"fake OpenAI server on {srv.base_url} (fault_rate={a.fault_rate})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
