"""Small I/O helpers shared by every stage: atomic writes, JSONL with line-numbered errors, zstd streams.

Rules (DEVELOPERS.md): bad input fails with the file and line named; outputs are written to a temporary
file next to the target and renamed into place, so an interrupted stage never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)


class InputError(ValueError):
    """Bad input data. The message always names the file (and line, where there is one)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temp path beside ``target``; rename it over ``target`` only if the block succeeds.

    Works for files and directories (a directory target is replaced as a whole)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(target: Path | str, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    with atomic_path(target) as tmp:
        enc = {} if "b" in mode else {"encoding": "utf-8"}
        with open(tmp, mode, **enc, **kw) as fh:
            yield fh


def write_json(target: Path | str, obj: Any, indent: int = 2) -> None:
    with atomic_open(target) as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False, ensure_ascii=False)
        fh.write("\n")


def write_jsonl(target: Path | str, records: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(target, "wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec))
            fh.write(b"\n")
            n += 1
    return n


def write_tsv(target: Path | str, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    with atomic_open(target) as fh:
        fh.write("\t".join(columns) + "\n")
        for row in rows:
            fh.write("\t".join(_tsv_cell(row.get(c)) for c in columns) + "\n")


def _tsv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


# ----------------------------------------------------------------------------------------- reading
class _Truncated(Exception):
    pass


def _zst_chunks(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed blocks of a (possibly multi-frame) ``.zst`` file; raises _Truncated if the last frame
    is incomplete (``stream_reader`` would silently return the partial data)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    d, fed = dctx.decompressobj(), False
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            while block:
                fed = True
                out = d.decompress(block)
                if out:
                    yield out
                if d.eof:
                    block = d.unused_data
                    d, fed = dctx.decompressobj(), False
                else:
                    block = b""
    if fed and not d.eof:
        raise _Truncated("zstd stream ends inside a frame")


def _lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a plain or ``.zst`` file (a partial last line of a truncated ``.zst`` is not yielded)."""
    if path.suffix != ".zst":
        with open(path, "rb") as fh:
            yield from fh
        return
    buf = b""
    for block in _zst_chunks(path):
        buf += block
        *full, buf = buf.split(b"\n")
        for line in full:
            yield line + b"\n"
    if buf:
        yield buf


def read_bytes(path: Path | str) -> bytes:
    """Whole file (``.zst`` decompressed). Missing, truncated or corrupt files raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.suffix != ".zst":
        return path.read_bytes()
    try:
        return b"".join(_zst_chunks(path))
    except Exception as exc:  # _Truncated, zstandard.ZstdError
        raise InputError(path, f"cannot decompress ({exc}); file truncated or corrupt?") from None


def iter_jsonl(path: Path | str, *, skip_bad: bool = False, stats: dict[str, int] | None = None
               ) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` for every non-blank line of a ``.jsonl`` or ``.jsonl.zst`` file.

    A malformed line raises InputError with file and line; with ``skip_bad`` it is logged, counted in
    ``stats['skipped_lines']`` and skipped instead. A truncated/corrupt ``.zst`` raises (or, with
    ``skip_bad``, yields the complete records before the damage and counts ``stats['truncated_files']``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    lineno = 0
    try:
        for lineno, line in enumerate(_lines(path), 1):  # noqa: B007
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not skip_bad:
                    raise InputError(path, f"malformed JSON line: {exc}", lineno) from None
                log.warning("%s:%d: skipping malformed JSON line (%s)", path, lineno, exc)
                if stats is not None:
                    stats["skipped_lines"] = stats.get("skipped_lines", 0) + 1
                continue
            yield lineno, rec
    except InputError:
        raise
    except Exception as exc:  # _Truncated, zstandard.ZstdError, OSError
        if not skip_bad:
            raise InputError(path, f"cannot read past line {lineno} ({exc}); file truncated or corrupt?",
                             lineno + 1) from None
        log.warning("%s: stream broken after line %d (%s); keeping the complete records", path, lineno, exc)
        if stats is not None:
            stats["truncated_files"] = stats.get("truncated_files", 0) + 1


def read_jsonl(path: Path | str) -> list[Any]:
    return [rec for _, rec in iter_jsonl(path)]
