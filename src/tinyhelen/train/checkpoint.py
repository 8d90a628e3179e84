"""Resumable checkpoints of the training loop: ``<dir>/step-NNNNNNN/``.

A checkpoint holds the model and optimizer state, the random state of every process (``rng_<rank>.pt``),
the state of the batch source and of the callbacks (``loop_state.pt``) and ``state.json`` (step, tokens
seen, the run's key, the history rows so far). It is written atomically; a run resumes from the newest
complete checkpoint whose run key matches its own (a different configuration starts afresh), and pruning keeps
the newest checkpoints of its own key only (``prune``). Checkpoints written by several processes resume with
any number of processes: the state is global (the data order depends on the step, not on the processes);
process ``r`` restores ``rng_<r>.pt`` if the checkpoint has it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from tinyhelen.io import atomic_path
from tinyhelen.train.rng import rng_state, set_rng_state

log = logging.getLogger(__name__)


def run_key(payload: dict[str, Any]) -> str:
    """The run key: a short stable hash of a run's identity (its config and inputs)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_dir(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step-{step:07d}"


def latest_checkpoint(ckpt_dir: Path | str, key: str | None = None) -> Path | None:
    """Newest complete checkpoint under ``ckpt_dir`` (optionally only one with the given run key)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    for d in sorted(ckpt_dir.glob("step-*"), reverse=True):
        state = d / "state.json"
        if not state.exists():
            continue
        if key and json.loads(state.read_text()).get("run_key") != key:
            log.warning("%s: checkpoint of a different configuration; not resuming from it", d)
            continue
        return d
    return None


def save(target: Path, *, model: torch.nn.Module, optimizer: Any, state: dict[str, Any],
         loop_state: dict[str, Any]) -> None:
    """Write one checkpoint directory atomically (main process; other ranks add ``rng_<rank>.pt`` after)."""
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        torch.save(model.state_dict(), tmp / "model.pt")  # tied tensors stay tied
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(loop_state, tmp / "loop_state.pt")
        torch.save(rng_state(), tmp / "rng_0.pt")
        (tmp / "state.json").write_text(json.dumps(state))


def save_rng(target: Path, rank: int) -> None:
    torch.save(rng_state(), target / f"rng_{rank}.pt")


def load(ckpt: Path, *, model: torch.nn.Module, optimizer: Any, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer and this process's random state; return ``(state.json, loop_state)``."""
    model.load_state_dict(torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
    rng_file = ckpt / f"rng_{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return (json.loads((ckpt / "state.json").read_text()),
            torch.load(ckpt / "loop_state.pt", weights_only=False))


def prune(ckpt_dir: Path, keep: int, key: str | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints of the run ``key`` (every checkpoint when None).

    Checkpoints of other run keys (another configuration written to the same directory) are left alone: they
    never count towards ``keep``, so they cannot push the current run's checkpoints out; they stay resumable
    when that configuration runs again (one at the same step as a checkpoint of this run is replaced by it)."""
    mine = [d for d in sorted(Path(ckpt_dir).glob("step-*")) if key is None or _key_of(d) == key]
    for d in mine[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def _key_of(ckpt: Path) -> str | None:
    try:
        return json.loads((ckpt / "state.json").read_text()).get("run_key")
    except (OSError, ValueError):
        return None  # incomplete
