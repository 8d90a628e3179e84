"""What a GGUF model file is: its metadata (architecture, training context, name) and parameter count,
read from the file header without loading the model, and its sha256 (memoised by path, size and mtime).

The parameter count is the sum of the element counts of all tensors (what llama.cpp reports as
``n_params``); it decides whether a result is a pipeline check (``tinyhelen.llm.provenance``).
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tinyhelen.io import write_json

# value type -> struct format of a scalar (8: string, 9: array are handled apart)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_WANTED = ("general.architecture", "general.name", "general.size_label", "general.basename")


@dataclass(frozen=True)
class GGUFInfo:
    file: str                  # the file name (not the path: provenance must not depend on where it lives)
    architecture: str | None
    name: str | None
    size_label: str | None
    context_length: int | None  # the model's training context (<arch>.context_length)
    n_params: int
    n_tensors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _u(fh: BinaryIO, fmt: str) -> Any:
    n = struct.calcsize(fmt)
    data = fh.read(n)
    if len(data) != n:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(fh: BinaryIO) -> str:
    return fh.read(_u(fh, "<Q")).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _u(fh, _SCALARS[vtype])
    if vtype == 8:
        return _string(fh)
    if vtype == 9:  # arrays (vocabularies, merges) are skipped, not kept
        etype, n = _u(fh, "<I"), _u(fh, "<Q")
        if etype in _SCALARS:
            fh.seek(n * struct.calcsize(_SCALARS[etype]), 1)
        else:
            for _ in range(n):
                _value(fh, etype)
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")


def read_info(path: Path | str) -> GGUFInfo:
    """Header metadata and parameter count of a GGUF file (ValueError if it is not one)."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = _u(fh, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported (need 2 or later)")
        n_tensors, n_kv = _u(fh, "<Q"), _u(fh, "<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(fh)
            val = _value(fh, _u(fh, "<I"))
            if key in _WANTED or key.endswith(".context_length"):
                meta[key] = val
        n_params = 0
        for _ in range(n_tensors):
            _string(fh)
            dims = [_u(fh, "<Q") for _ in range(_u(fh, "<I"))]
            _u(fh, "<I"), _u(fh, "<Q")  # type, offset
            n_params += math.prod(dims)
    arch = meta.get("general.architecture")
    ctx = meta.get(f"{arch}.context_length") if arch else None
    return GGUFInfo(file=path.name, architecture=arch, name=meta.get("general.name"),
                    size_label=meta.get("general.size_label"), context_length=int(ctx) if ctx else None,
                    n_params=int(n_params), n_tensors=int(n_tensors))


def file_sha256(path: Path | str, memo: Path | str | None = None) -> str:
    """sha256 of a (large) file; ``memo``: a JSON file remembering digests by path, size and mtime."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    known: dict[str, Any] = {}
    if memo and Path(memo).exists():
        try:
            known = json.loads(Path(memo).read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        hit = known.get(str(path))
        if hit and {k: hit.get(k) for k in stamp} == stamp:
            return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo:
        write_json(memo, {**known, str(path): {**stamp, "sha256": digest}}, indent=1)
    return digest
