"""Benchmark the LLM client: requests/s by concurrency against the loopback fake server, or generated
tokens/s of the local llama.cpp backend; then the cache hit rate of a rerun.

    .venv/bin/python benchmarks/bench_llm.py [--requests 400] [--latency-ms 50] [--concurrency 1 4 16 64]
                                             [--fault-rate 0.0] [--out reports/bench_llm.json]
    .venv/bin/python benchmarks/bench_llm.py --backend local --requests 10 --threads 1 [--model-path X.gguf]

Starts ``python -m tinyhelen.llm.fake_server`` as a separate process (so server and client do not share a
GIL), sends the same simplify-shaped requests at each concurrency level with a fresh cache, then reruns the
last level on its warm cache (expect a 100% hit rate and zero HTTP calls). With ``--latency-ms`` the server
waits that long per reply, like a remote model; requests/s then scale with concurrency up to the client's or
the server's CPU limit. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from tinyhelen.io import write_json
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, load_template
from tinyhelen.llm.prompts import strip_end_marker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, timeout: float = 15.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"fake server at {url} did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--base-url", default=None, help="use a running endpoint instead of starting the fake server")
    p.add_argument("--backend", choices=["openai", "local"], default="openai",
                   help="local: start a llama.cpp server for the GGUF model (requirements-llm.txt)")
    p.add_argument("--threads", type=int, default=1, help="local: generation threads")
    p.add_argument("--model-path", default=None, help="local: GGUF file (default: the packaged SmolLM2-135M)")
    p.add_argument("--out", default="reports/bench_llm.json")
    a = p.parse_args(argv)

    proc = None
    url = a.base_url
    if a.backend == "local":
        a.concurrency, url = [1], "local"
    elif url is None:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tinyhelen.llm.fake_server", "--port", str(port),
                                 "--latency-ms", str(a.latency_ms), "--fault-rate", str(a.fault_rate),
                                 "--slow-s", "1.0"], stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
    try:
        if a.backend != "local":
            wait_up(url)
        t = load_template("simplify_web")
        texts = [f"Document {i}: The municipality inaugurated a comprehensive recycling initiative, and residents "
                 f"expressed considerable enthusiasm about environmental sustainability." for i in range(a.requests)]
        reqs = [ChatRequest(f"bench-{i:05d}", t.render(names="A: Anna", text=x), t.template_id, strip_end_marker)
                for i, x in enumerate(texts)]
        rows = []
        for conc in a.concurrency:
            cache = tempfile.mkdtemp(prefix="bench_llm_cache_")
            if a.backend == "local":
                cfg = LLMConfig(backend="local", local={"threads": a.threads, "model_path": a.model_path},
                                max_tokens=512, max_reasks=0, timeout_s=600.0, progress=False)
            else:
                cfg = LLMConfig(backend="openai", base_url=url, concurrency=conc, timeout_s=10.0,
                                backoff_base_s=0.05, progress=False)
            client = ChatClient(cfg, cache_dir=cache)
            t0 = time.perf_counter()
            res = client.run(reqs, fail_on_outage=False)
            secs = time.perf_counter() - t0
            tm = client.timing()
            rows.append({"concurrency": conc, "requests": len(reqs), "ok": sum(r.ok for r in res),
                         "seconds": round(secs, 3), "requests_per_s": round(len(reqs) / secs, 2),
                         "generated_tokens_per_s": tm["generated_tokens_per_s"],
                         "completion_tokens": tm["completion_tokens"], "server_start_s": tm.get("server_start_s"),
                         "http_calls": tm["http_calls"], "retries": tm["retries"]})
            print(f"concurrency {conc:4d}: {rows[-1]['requests_per_s']:8.2f} req/s, "
                  f"{tm['generated_tokens_per_s']:.1f} generated tokens/s "
                  f"({rows[-1]['ok']}/{len(reqs)} ok, {tm['retries']} retries, {secs:.2f}s)", flush=True)
        rerun = ChatClient(cfg, cache_dir=cache)
        t0 = time.perf_counter()
        rerun.run(reqs, fail_on_outage=False)
        secs = time.perf_counter() - t0
        rm, rt = rerun.metrics(), rerun.timing()
        cache_row = {"requests": len(reqs), "cache_hit_rate": rm["cache_hit_rate"], "http_calls": rt["http_calls"],
                     "seconds": round(secs, 3), "requests_per_s": round(len(reqs) / secs, 1)}
        print(f"rerun on warm cache: hit rate {rm['cache_hit_rate']:.0%}, {rt['http_calls']} HTTP calls, "
              f"{cache_row['requests_per_s']} req/s", flush=True)
        out = {"backend": a.backend, "latency_ms": a.latency_ms, "fault_rate": a.fault_rate, "threads": a.threads,
               "levels": rows, "rerun": cache_row}
        if a.out:
            write_json(a.out, out)
            print(f"wrote {a.out}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
