"""params.yaml validation: typed sections, bad values fail at once naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinyhelen import params
from tinyhelen.config import ParamsError, load_seed
from tinyhelen.params import validate_all

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_are_valid():
    sections = validate_all(REPO / "params.yaml")
    assert {"seed", "data", "tokenizer", "entropy"} <= set(sections)


def test_bad_value_names_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\nentropy:\n  max_n: 0\ntokenizer:\n  vocab_size: ten\n")
    with pytest.raises(ParamsError) as exc:
        validate_all(p)
    msg = str(exc.value)
    assert f"{p}: entropy.max_n: Input should be greater than or equal to 1 (got 0)" in msg
    assert "tokenizer.vocab_size: Input should be a valid integer" in msg


def test_unknown_keys_are_errors(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("entropy:\n  max_ngram: 3\nentropie: {}\n")
    with pytest.raises(ParamsError) as exc:
        validate_all(p)
    assert "entropy.max_ngram: Extra inputs are not permitted" in str(exc.value)
    assert "entropie: unknown top-level key" in str(exc.value)


def test_scalar_sections_and_defaults(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 7\n")
    assert load_seed(p) == 7
    assert params.load("entropy", p).max_n == 4  # missing section -> defaults
    p.write_text("seed: x\n")
    with pytest.raises(ParamsError, match=r"seed: Input should be a valid integer"):
        load_seed(p)


@pytest.mark.slow
def test_cli_exit_code(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("entropy:\n  top_k: -1\n")
    res = subprocess.run([sys.executable, "-m", "tinyhelen.params", str(p)], capture_output=True, text=True)
    assert res.returncode == 2 and "entropy.top_k" in res.stderr
    ok = subprocess.run([sys.executable, "-m", "tinyhelen.params", str(REPO / "params.yaml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
