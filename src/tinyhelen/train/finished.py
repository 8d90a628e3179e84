"""Finished pieces of a stage's work (one fine-tuning run of GLUE, ...), one JSON file each in a work directory
that is not a DVC output, so that a killed stage reruns only the pieces that did not finish.

A piece is stored under its name and the key of everything that determines its result (``identity``: the
initial weights, the data, the config, the seed); a stored piece is used only when the key matches, so a
changed input or param recomputes it. The main process writes (atomically); every process reads (the work
directory is on a file system all processes share, as the checkpoints are). The stage deletes the directory
once its outputs are written: it resumes a killed run, it is no cache across runs (the code is not part of the
key).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tinyhelen.io import write_json
from tinyhelen.train import dist
from tinyhelen.train.checkpoint import run_key


def digest_dir(directory: Path | str) -> str:
    """The key of every file under ``directory`` (relative names and contents)."""
    from tinyhelen.data.release import sha256_file

    root = Path(directory)
    return run_key({f.relative_to(root).as_posix(): sha256_file(f) for f in sorted(root.rglob("*")) if f.is_file()})


class Finished:
    """The finished pieces in ``directory`` (None: nothing is stored, every piece runs)."""

    def __init__(self, directory: Path | str | None):
        self.directory = Path(directory) if directory is not None else None

    def _path(self, name: str, identity: dict[str, Any]) -> Path:
        return self.directory / f"{name}-{run_key(identity)}.json"

    def get(self, name: str, identity: dict[str, Any]) -> Any | None:
        """The stored result of piece ``name`` with this ``identity``, or None."""
        if self.directory is None:
            return None
        path = self._path(name, identity)
        if not path.exists():
            return None
        stored = json.loads(path.read_text(encoding="utf-8"))
        return stored["result"] if stored.get("key") == run_key(identity) else None

    def put(self, name: str, identity: dict[str, Any], result: Any) -> None:
        if self.directory is not None and dist.is_main():
            write_json(self._path(name, identity), {"key": run_key(identity), "result": result})

    def clear(self) -> None:
        """Delete the work directory (the stage's outputs are written)."""
        if self.directory is not None and dist.is_main():
            shutil.rmtree(self.directory, ignore_errors=True)
