"""Shared fixtures: real (small) data from the released TinyHelen copy, prepared once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("TINYHELEN_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "tinyhelen-data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not d.is_dir():
        pytest.fail(f"released TinyHelen data not found at {d}; set TINYHELEN_DATA")
    return d


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

    return DataConfig(source="local", local_dir=str(data_dir),
                      max_words_per_genre={"train": 4000, "validation": 1500})


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
        build(prepared / "corpus" / side / "train.jsonl", out[side], TokenizerConfig())
    return out
