"""Seeds derived from names, and the random-number state a checkpoint restores."""
from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any parts (stable across runs and platforms)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def rng_state() -> dict[str, Any]:
    """The global random states of Python, NumPy and torch (and CUDA when present) of this process."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
