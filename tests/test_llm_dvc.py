"""An LLM outage at the DVC level, in a temporary copy of the repository with the loopback fake server:
endpoint down -> the stage fails (exit 3, one-screen summary, no outputs, not in dvc.lock); partly down ->
it fails again but keeps what succeeded in the reply cache; endpoint back -> a plain ``dvc repro simplify``
sends exactly the failed requests (the server's /stats counts them) and the stage is recorded. With the
default retries, a dead endpoint (nothing listening) fails the stage within seconds, not minutes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tinyhelen.llm.fake_server import FakeServer

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def _copy(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith(("data/", "reports/")) and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    return dst


def _repro(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "TINYHELEN_TIMINGS": "0"}
    return subprocess.run([DVC, "repro", *args], cwd=repo, capture_output=True, text=True, env=env)


def _stats(srv: FakeServer) -> dict[str, int]:
    with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read())


def _locked(repo: Path) -> set[str]:
    lock = repo / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()


def _repo_with_endpoint_down(tmp_path: Path, data_dir: Path, **llm) -> tuple[Path, int]:
    """A copy of the repository whose simplify stage (wiki, 10 documents) talks to a port nothing listens on
    (bound, then closed), with the ``llm`` keys given; returns (repo, port)."""
    repo = _copy(tmp_path / "repo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(local_dir=str(data_dir), genres=["wiki"],
                          max_words_per_genre={"train": 8000, "validation": 2000})
    params["llm"].update(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", progress=False, **llm)
    params["simplify"].update(max_docs_per_genre=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo, port


@pytest.mark.slow
def test_outage_fails_the_stage_and_a_plain_repro_retries_only_the_failed_requests(tmp_path, data_dir):
    repo, port = _repo_with_endpoint_down(tmp_path, data_dir, max_retries=0, timeout_s=5.0)
    outputs = [repo / "reports/simplify/wiki.json", repo / "data/leaner/genres/wiki.jsonl"]

    # 1. the endpoint is down: the stage fails, says why in one screen, writes nothing, is not recorded
    res = _repro(repo, "simplify")
    assert res.returncode != 0
    err = res.stderr[res.stderr.find("error: "):]
    assert "LLM requests failed" in err and "connection" in err and "nothing was written" in err
    assert len(err.strip().splitlines()) <= 12, err
    assert not any(p.exists() for p in outputs) and "simplify" not in _locked(repo)

    srv = FakeServer(port, fail_share=0.5).start()
    try:
        # 2. partly down (half of the prompts get 503 every time): fails again, what succeeded is cached
        res = _repro(repo, "simplify")
        assert res.returncode != 0 and "server_error" in res.stderr
        st = _stats(srv)
        failed, sent = st.get("status_503", 0), st["chat_calls"]
        assert 0 < failed < sent and not any(p.exists() for p in outputs)

        # 3. the endpoint is back: a plain `dvc repro` sends exactly the failed requests and records the stage
        srv.fail_share = 0.0
        urllib.request.urlopen(urllib.request.Request(srv.base_url.removesuffix("/v1") + "/stats/reset",
                                                      data=b"{}", method="POST")).read()
        res = _repro(repo, "simplify")
        assert res.returncode == 0, res.stderr[-2000:]
        assert _stats(srv)["chat_calls"] == failed, "only the failed requests are sent again"
        assert "simplify" in _locked(repo) and all(p.exists() for p in outputs)
        wiki = json.loads(outputs[0].read_text())
        assert wiki["llm"]["live_requests"] == failed and wiki["llm"]["cache_hits"] == sent - failed
        assert wiki["provenance"]["models"][0]["model"] == "fake" and "seconds" not in wiki
        # the fake model reports 0 parameters: its outputs are a pipeline check, and the metrics say so
        assert wiki["provenance"]["pipeline_check"] and wiki["provenance"]["model"] == "fake"
        res = _repro(repo, "simplify")  # 4. nothing changed: nothing runs, no calls
        assert res.returncode == 0 and "Running stage 'simplify'" not in res.stdout
        assert _stats(srv)["chat_calls"] == failed
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_dead_endpoint_fails_the_stage_in_seconds_and_records_nothing(tmp_path, data_dir):
    """Nothing listens at llm.base_url (a port bound, then closed) and the retries are the defaults (5, from
    1 s, doubling): ``dvc repro simplify`` fails within 30 s (it used to retry every request for ~31 s, two
    at a time here: minutes), with the one-screen summary, no outputs, no dvc.lock entry and an empty cache."""
    repo, _ = _repo_with_endpoint_down(tmp_path, data_dir, concurrency=2)
    assert _repro(repo, "prepare").returncode == 0  # upstream first: what is timed below is simplify alone

    t0 = time.monotonic()
    res = _repro(repo, "simplify")
    secs = time.monotonic() - t0
    assert res.returncode != 0 and secs < 30, f"{secs:.1f}s"
    err = res.stderr[res.stderr.find("error: "):]
    assert "LLM requests failed" in err and "unreachable: connection refused" in err, err
    assert "no connection could be opened" in err and len(err.strip().splitlines()) <= 12, err
    assert not (repo / "reports/simplify/wiki.json").exists() and not (repo / "data/leaner/genres/wiki.jsonl").exists()
    assert "simplify" not in _locked(repo) and "prepare" in _locked(repo)
    assert not list((repo / "data/llm_cache").rglob("*.json")), "no reply was cached"
