"""Shared fixtures. The regular tests use the small fixture release in ``tests/fixtures/release`` (the
release's layout, cut from the real files by ``tests/fixtures/make_release.py``), so the suite needs no
data beside the repository and no network.

Tests marked ``full_data`` need the full released 10M tier (``full_data_dir``: ``$TINYHELEN_DATA``, else
``../shared/tinyhelen-data``). They run whenever it is found; otherwise they are deselected and one line of
the terminal summary says how many and where the data was looked for. ``TINYHELEN_DATA`` is read once
and removed from the environment of the tests, so that stage commands run by the tests (``dvc repro`` in a
temporary copy of the repository) read their ``data.local_dir`` only.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_RELEASE = REPO / "tests" / "fixtures" / "release"
_FULL: dict[str, object] = {}


def stage_argv(stage: str, **item: object) -> list[str]:
    """The command of a stage of ``dvc.yaml`` as argv, run by this interpreter: tests run a stage with the
    paths the pipeline gives it. A matrix stage takes its item's values (``stage_argv("glue", arch="llama",
    init="scratch")`` fills in ``${item.arch}`` and ``${item.init}``)."""
    import shlex
    import sys

    import yaml

    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    for key, value in item.items():
        cmd = cmd.replace("${item.%s}" % key, str(value))
    assert "${" not in cmd, f"{stage}: fill in {cmd[cmd.index('${'):].split('}')[0]}}}"
    argv = shlex.split(cmd)
    assert argv[0] == "python" and argv[1].startswith("stages/"), cmd
    return [sys.executable, str(REPO / argv[1]), *argv[2:]]


def _full_data_dir() -> Path:
    env = os.environ.get("TINYHELEN_DATA")
    return Path(env).resolve() if env else (REPO / ".." / "shared" / "tinyhelen-data").resolve()


def pytest_configure(config):
    _FULL["dir"] = _full_data_dir()
    _FULL["found"] = (_FULL["dir"] / "MANIFEST.sha256").is_file() and (_FULL["dir"] / "ori" / "10M").is_dir()
    _FULL["skipped"] = 0
    os.environ.pop("TINYHELEN_DATA", None)


def pytest_collection_modifyitems(config, items):
    if _FULL["found"]:
        return
    skipped = [it for it in items if it.get_closest_marker("full_data")]
    if skipped:
        _FULL["skipped"] = len(skipped)
        config.hook.pytest_deselected(items=skipped)
        items[:] = [it for it in items if not it.get_closest_marker("full_data")]


def pytest_terminal_summary(terminalreporter):
    if _FULL["skipped"]:
        terminalreporter.write_line(
            f"{_FULL['skipped']} full-data tests skipped: the full TinyHelen data was not found at {_FULL['dir']} "
            "(set TINYHELEN_DATA to a copy of the release, or place it at ../shared/tinyhelen-data)", yellow=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The fixture release (small, always there)."""
    return FIXTURE_RELEASE


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    """The full released data; only for tests marked ``full_data`` (deselected when it is not found)."""
    if not _FULL["found"]:
        pytest.fail(f"full TinyHelen data not found at {_FULL['dir']}: mark the test full_data")
    return Path(_FULL["dir"])


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """CI has 2 cores: keep torch to one thread per test process (deterministic and fair)."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def small_data_cfg(data_dir):
    from tinyhelen.data import DataConfig

    return DataConfig(local_dir=str(data_dir), max_words_per_genre={"train": 4000, "validation": 1500})


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, small_data_cfg) -> Path:
    """A small prepared tree (same layout as data/prepared): corpus/<side>/<split>.jsonl, glue/, eval/."""
    from tinyhelen.data import prepare

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(small_data_cfg, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tokenizers(tmp_path_factory, prepared) -> dict[str, Path]:
    """Byte-level BPE tokenizers (vocab 2000) trained on the small prepared train shards."""
    from tinyhelen.tokenizer import TokenizerConfig, build

    root = tmp_path_factory.mktemp("tok")
    out = {}
    for side in ("leaner", "ori"):
        out[side] = root / side
        build(prepared / "corpus" / side / "train.jsonl", [out[side]], TokenizerConfig())
    return out


# ------------------------------------------------------------------------------------ fake LLM endpoint
@pytest.fixture(scope="module")
def server():
    """A loopback OpenAI-compatible fake server (tinyhelen.llm.fake_server) that answers slowly enough for
    the timeout tests; test modules that need other behaviour define their own ``server``."""
    from tinyhelen.llm.fake_server import FakeServer

    srv = FakeServer(0, slow_s=0.6).start()
    yield srv
    srv.stop()


def fake_llm_calls(srv) -> int:
    """Chat completions the fake server has answered so far."""
    import json
    import urllib.request

    with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read()).get("chat_calls", 0)


def fake_llm_config(srv, tmp_path):
    """An ``openai``-backend LLMConfig pointing at the fake server, with short timeouts and its own cache."""
    from tinyhelen.llm import LLMConfig

    return LLMConfig(backend="openai", base_url=srv.base_url, timeout_s=0.3, backoff_base_s=0.01, max_reasks=1,
                     progress=False, cache_dir=str(tmp_path / "cache"))
