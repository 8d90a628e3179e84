"""Small I/O helpers shared by every stage: atomic writes, JSONL with line-numbered errors, zstd streams.

Rules (DEVELOPERS.md): bad input fails with the file and line named; outputs are written to a temporary
file next to the target and renamed into place, so an interrupted stage never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
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
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def remove_stale_temps(target: Path | str) -> list[Path]:
    """Remove the temp siblings of ``target`` that ``atomic_path`` left behind in a process that died
    (killed, out of memory): ``.<name>.<host>-pid<PID>.<random>.tmp`` whose PID is no longer running on
    this host. Temps of live processes and of other hosts are kept. Temps without an owner (written
    before owners were recorded) are removed too. Returns what was removed."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:(?P<host>[A-Za-z0-9-]+)-pid(?P<pid>\d+)\.)?"
                         r"[a-z0-9_]{8}\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for e in entries:
        m = pattern.match(e.name)
        if not m:
            continue
        if m.group("pid") is not None and (m.group("host") != _HOST or _pid_alive(int(m.group("pid")))):
            continue
        path = Path(e.path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.warning("removed %s: left behind by a run that did not finish", path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temp path beside ``target``; rename it over ``target`` only if the block succeeds.

    Works for files and directories (a directory target is replaced as a whole). Until the block succeeds
    the previous ``target`` stays as it was; then a file is replaced in one rename, and a directory is first
    renamed out of the way (into the temp folder, deleted afterwards), so that a process killed at any
    moment leaves the previous or the new version, not a half-deleted one. The temp folder is named after
    this process (``.<name>.<host>-pid<PID>.<random>.tmp``, ignored by git and DVC), so that a later call
    removes what a killed run left behind (``remove_stale_temps``) and never touches a live run's temp."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_HOST}-pid{os.getpid()}.", suffix=".tmp",
                                dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if target.is_dir() and not target.is_symlink():
            os.replace(target, tmp / f"{target.name}.previous")
        elif tmp_target.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()  # a file (or link) replaced by a directory: os.replace cannot do that in one go
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
_FEED = 1 << 16  # compressed bytes fed to the zstd decoder at a time


class StreamDamaged(Exception):
    """A ``.zst`` stream that ends inside a frame or holds corrupt data. Raised by ``zst_blocks`` only
    after every byte that could be decoded before the damage was yielded."""


class _Frames:
    """A zstd decoder over consecutive frames (``decompressobj`` stops at the end of a frame)."""

    def __init__(self) -> None:
        import zstandard

        self.dctx = zstandard.ZstdDecompressor()
        self.d, self.fed = self.dctx.decompressobj(), False

    def feed(self, block: bytes) -> bytes:
        out = []
        while block:
            self.fed = True
            out.append(self.d.decompress(block))
            if self.d.eof:
                block = self.d.unused_data
                self.d, self.fed = self.dctx.decompressobj(), False
            else:
                block = b""
        return b"".join(out)


def zst_blocks(path: Path | str, feed: int = _FEED) -> Iterator[bytes]:
    """Decompressed blocks of a (possibly multi-frame) ``.zst`` file, decoded incrementally.

    On damage (a truncated last frame, corrupt data) it first yields everything decodable before the
    damage, then raises ``StreamDamaged``: when the decoder rejects a piece of input, the file is decoded
    again up to that piece and the piece is fed one byte at a time, so that no complete block before the
    damage is lost with the output of the rejected call."""
    import zstandard

    frames, done = _Frames(), 0
    with open(path, "rb") as fh:
        while block := fh.read(feed):
            try:
                out = frames.feed(block)
            except zstandard.ZstdError as exc:
                yield from _salvage(path, done, block, feed)
                raise StreamDamaged(f"zstd: {exc}") from None
            done += len(block)
            if out:
                yield out
    if frames.fed and not frames.d.eof:
        raise StreamDamaged("zstd stream ends inside a frame")


def _salvage(path: Path | str, done: int, block: bytes, feed: int) -> Iterator[bytes]:
    """Replay the first ``done`` compressed bytes (output already yielded), then yield what ``block``
    decodes to, one input byte at a time, up to the byte the decoder rejects."""
    import zstandard

    frames = _Frames()
    with open(path, "rb") as fh:
        while done > 0:
            piece = fh.read(min(feed, done))
            frames.feed(piece)
            done -= len(piece)
    for i in range(len(block)):
        try:
            out = frames.feed(block[i:i + 1])
        except zstandard.ZstdError:
            return
        if out:
            yield out


def _lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a plain or ``.zst`` file. A damaged ``.zst`` raises ``StreamDamaged`` after its last
    complete line; the exception's ``partial`` holds the incomplete line that follows (may be empty)."""
    if path.suffix != ".zst":
        with open(path, "rb") as fh:
            yield from fh
        return
    buf = b""
    try:
        for block in zst_blocks(path):
            buf += block
            if b"\n" in block:
                *full, buf = buf.split(b"\n")
                for line in full:
                    yield line + b"\n"
    except StreamDamaged as exc:
        exc.partial = buf  # type: ignore[attr-defined]
        raise
    if buf:
        yield buf


def read_bytes(path: Path | str) -> bytes:
    """Whole file (``.zst`` decompressed). Missing, truncated or corrupt files raise InputError."""
    data, damage = read_prefix(path)
    if damage:
        raise InputError(path, f"cannot decompress past byte {len(data)} ({damage}); file truncated or corrupt?")
    return data


def read_prefix(path: Path | str) -> tuple[bytes, str | None]:
    """``(content, damage)``: the whole file (``.zst`` decompressed) and None, or for a damaged ``.zst``
    everything decodable before the damage and what the damage is. A missing file raises InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.suffix != ".zst":
        return path.read_bytes(), None
    out: list[bytes] = []
    try:
        for block in zst_blocks(path):
            out.append(block)
    except StreamDamaged as exc:
        return b"".join(out), str(exc)
    return b"".join(out), None


def _count(stats: dict[str, int] | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


def iter_jsonl(path: Path | str, *, skip_bad: bool = False, stats: dict[str, int] | None = None
               ) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` for every non-blank line of a ``.jsonl`` or ``.jsonl.zst`` file.

    A malformed line raises InputError with file and line; with ``skip_bad`` it is logged, counted in
    ``stats['skipped_lines']`` and skipped instead. A truncated/corrupt ``.zst`` raises InputError naming
    the first line that could not be read whole; with ``skip_bad`` every complete line before the damage is
    yielded, and ``stats`` gets ``truncated_files`` (1), ``stopped_at_line`` (that line number) and
    ``partial_records`` (1 if the damage cut a record short). ``stats['records']`` counts the records
    yielded, ``stats['lines']`` the lines read.
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
                _count(stats, "skipped_lines")
                continue
            _count(stats, "records")
            yield lineno, rec
    except StreamDamaged as exc:
        partial = bool(getattr(exc, "partial", b"").strip())
        stop = lineno + 1
        if not skip_bad:
            raise InputError(path, f"cannot read line {stop}: {exc} after {lineno} complete lines; "
                                   "file truncated or corrupt?", stop) from None
        log.warning("%s:%d: stream broken (%s); keeping the %d complete lines before it%s", path, stop, exc,
                    lineno, " (one partial record lost)" if partial else "")
        _count(stats, "truncated_files")
        _count(stats, "partial_records", int(partial))
        if stats is not None:
            stats["stopped_at_line"] = stop
    finally:
        if stats is not None:
            stats["lines"] = lineno


def iter_json_array(path: Path | str, *, skip_bad: bool = False, stats: dict[str, int] | None = None
                    ) -> Iterator[tuple[int, Any]]:
    """Yield ``(element_number, element)`` of a file holding one JSON array (``.json`` or ``.json.zst``).

    A damaged array (truncated or corrupt ``.zst``, malformed JSON) raises InputError naming the first
    element that could not be read; with ``skip_bad`` every complete element before the damage is yielded
    and ``stats`` gets ``truncated_files``, ``stopped_at_element`` and ``partial_records`` (as
    ``iter_jsonl``). ``stats['records']`` counts the elements yielded."""
    path = Path(path)
    raw, damage = read_prefix(path)
    if damage is None:
        try:
            arr = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            damage = f"malformed JSON array: {exc}"
        else:
            if not isinstance(arr, list):
                raise InputError(path, f"expected a JSON array, got {type(arr).__name__}")
            _count(stats, "records", len(arr))
            yield from enumerate(arr, 1)
            return
    elements, partial = _array_prefix(raw.decode("utf-8", errors="replace"))
    stop = len(elements) + 1
    if not skip_bad:
        raise InputError(path, f"cannot read element {stop} of the JSON array ({damage}) after {len(elements)} "
                               "complete elements; file truncated or corrupt?")
    log.warning("%s: element %d: %s; keeping the %d complete elements before it", path, stop, damage,
                len(elements))
    _count(stats, "truncated_files")
    _count(stats, "partial_records", int(partial))
    if stats is not None:
        stats["stopped_at_element"] = stop
    _count(stats, "records", len(elements))
    yield from enumerate(elements, 1)


def _array_prefix(text: str) -> tuple[list[Any], bool]:
    """The complete elements at the start of a (damaged) JSON array, and whether a partial element follows."""
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    i = ws.match(text, 0).end()
    if not text.startswith("[", i):
        return [], bool(text.strip())
    out: list[Any] = []
    i += 1
    while True:
        i = ws.match(text, i).end()
        if i >= len(text) or text[i] == "]":
            return out, False
        try:
            val, j = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return out, True
        j = ws.match(text, j).end()
        if j >= len(text):  # the text ends right after it: complete only if it closes itself
            return (out + [val], False) if isinstance(val, (str, list, dict)) else (out, True)
        if text[j] not in ",]":
            return out, True  # followed by garbage: not known to be complete
        out.append(val)
        if text[j] == "]":
            return out, False
        i = j + 1


def read_jsonl(path: Path | str) -> list[Any]:
    return [rec for _, rec in iter_jsonl(path)]
