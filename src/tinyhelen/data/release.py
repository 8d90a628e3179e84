"""The released files: the release index, a local copy of the release, checksums, downloads.

* ``ReleaseIndex``: every file of the public release we know of (``resources/release_index.tsv``: path,
  sha256 where known, and a note where a file is inferred rather than listed).
* ``LocalRelease``: a directory with the release's layout (``data.local_dir``). What is there is
  discovered from the directory itself (``files_under``: symlinked files and folders are followed, so a copy
  can be assembled from links to another disk); the index only says what else the release has (so a
  missing or an unknown file can be reported), and ``MANIFEST.sha256`` / ``ABSENT_FILES.txt`` of the
  directory say what the copy promises and what it declares absent.
* ``download``: one URL to a file, atomically, with retries (used by ``tinyhelen.data.fetch``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tinyhelen.data.config import RESOURCES
from tinyhelen.io import InputError, atomic_path

log = logging.getLogger(__name__)

CORPUS_FILE_RE = re.compile(
    r"^(?P<side>leaner|ori)/(?P<tier>[^/]+)/(?P<split>train|validation|test)/"
    r"(?P<genre>[a-z]+)(?P<num>\d{4})\.(?:jsonl|json)(?:\.zst)?$")
META_FILES = ("MANIFEST.sha256", "ABSENT_FILES.txt", "README.md")  # a copy's own files, not the release's


@dataclass(frozen=True)
class CorpusFile:
    """A corpus file's place in the release, parsed from its path (``ori/10M/train/web0000.jsonl.zst``)."""

    rel: str
    side: str
    tier: str
    split: str
    genre: str


def corpus_file(rel: str) -> CorpusFile | None:
    m = CORPUS_FILE_RE.match(rel)
    if not m:
        return None
    return CorpusFile(rel, m["side"], m["tier"], m["split"], m["genre"])


@dataclass
class ReleaseIndex:
    """The files of the public release (path relative to its ``data/`` folder): sha256 (None where not
    known) and a note for files that are inferred rather than seen (e.g. a twin of an identical file)."""

    files: dict[str, str | None]
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = RESOURCES / "release_index.tsv") -> "ReleaseIndex":
        files: dict[str, str | None] = {}
        notes: dict[str, str] = {}
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) not in (2, 3) or not cols[0]:
                raise InputError(path, "expected 'path<TAB>sha256' or 'path<TAB>sha256<TAB>note'", i)
            files[cols[0]] = None if cols[1] == "-" else cols[1]
            if len(cols) == 3 and cols[2]:
                notes[cols[0]] = cols[2]
        return cls(files, notes)

    def corpus_files(self, side: str, tier: str, split: str, genre: str) -> list[str]:
        out = []
        for rel in self.files:
            c = corpus_file(rel)
            if c and (c.side, c.tier, c.split, c.genre) == (side, tier, split, genre):
                out.append(rel)
        return sorted(out)

    def under(self, prefix: str) -> list[str]:
        return sorted(r for r in self.files if r.startswith(prefix))


def parse_manifest(path: Path) -> dict[str, str]:
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise InputError(path, "expected '<sha256>  <path>'", i)
        out[parts[1].strip().removeprefix("./")] = parts[0]
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_under(root: Path) -> set[str]:
    """Paths (relative to ``root``, ``/``-separated) of the files under ``root``, following symlinked files
    and folders. Hidden entries (``.name``) are skipped, and so is a link back to a folder it is inside (a
    loop: its files are listed once, through the folder itself); a broken link is no file."""
    found: set[str] = set()

    def walk(folder: Path, rel: str, inside: frozenset[tuple[int, int]]) -> None:
        st = folder.stat()
        here = (st.st_dev, st.st_ino)
        if here in inside:
            log.warning("%s: a symlink back to a folder it is in (a loop); not followed", folder)
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(folder, f"cannot list the folder ({exc.strerror})") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():  # follows symlinks
                walk(Path(e.path), f"{rel}{e.name}/", inside | {here})
            elif e.is_file():
                found.add(f"{rel}{e.name}")

    walk(root, "", frozenset())
    return found


class LocalRelease:
    """A local directory with the release's layout: what is there, what it declares absent, checksums."""

    def __init__(self, root: Path | str, index: ReleaseIndex, *, verify_checksums: bool = True):
        self.root, self.index, self.verify = Path(root), index, verify_checksums
        if not self.root.is_dir():
            raise InputError(self.root, "data directory not found (data.local_dir). Run `make data` to download "
                                        "the pinned release there, or point the pipeline at a copy: "
                                        "dvc exp run -S data.local_dir=/path/to/tinyhelen-data")
        self.present = files_under(self.root) - set(META_FILES)
        self.absent: set[str] = set()
        if (self.root / "ABSENT_FILES.txt").exists():
            self.absent = {ln.strip().removeprefix("data/")
                           for ln in (self.root / "ABSENT_FILES.txt").read_text().splitlines() if ln.strip()}
        self.manifest: dict[str, str] = {}
        self.has_manifest = (self.root / "MANIFEST.sha256").exists()
        if self.has_manifest:
            self.manifest = parse_manifest(self.root / "MANIFEST.sha256")
        else:
            log.warning("%s: no MANIFEST.sha256: the input files cannot be verified (reports/prepare.json: "
                        "verified_input: false)", self.root)
        self.verified: set[str] = set()
        self.unverified: set[str] = set()

    def unknown(self) -> list[str]:
        """Files of the directory that the release index does not know."""
        return sorted(self.present - set(self.index.files))

    def status(self, rel: str) -> str:
        """``present``, ``absent`` (declared in ABSENT_FILES.txt) or ``missing`` (neither)."""
        if rel in self.present:
            return "present"
        return "absent" if rel in self.absent else "missing"

    def path(self, rel: str) -> Path:
        """The file, verified against MANIFEST.sha256 where it is listed there."""
        p = self.root / rel
        if rel not in self.present:
            why = "listed in MANIFEST.sha256" if rel in self.manifest else "required"
            there = (f"{p.absolute()} is a broken symlink (to {os.readlink(p)})" if p.is_symlink()
                     else f"no file at {p.absolute()}")
            raise InputError(p, f"file missing from the data directory: {there} ({why}; not declared in "
                                "ABSENT_FILES.txt)")
        if self.verify and rel in self.manifest:
            got = sha256_file(p)
            if got != self.manifest[rel]:
                raise InputError(p, f"checksum mismatch: sha256 {got[:16]}... expected {self.manifest[rel][:16]}..."
                                    " (file corrupt or changed; re-download or set data.verify_checksums: false)")
            self.verified.add(rel)
        else:
            self.unverified.add(rel)
        return p


def download(url: str, target: Path, *, timeout: float = 60.0, retries: int = 3, backoff: float = 1.0) -> None:
    """Download ``url`` to ``target`` atomically, retrying transient errors (5xx, 429, timeouts, resets)
    with exponential backoff; other HTTP errors fail at once naming the URL."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=timeout) as resp:
                with open(tmp, "wb") as fh:
                    while block := resp.read(1 << 20):
                        fh.write(block)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise DownloadError(url, exc.code, f"download failed: HTTP {exc.code} {exc.reason}") from None
            err: Exception = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            err = exc
        if attempt < retries:
            log.warning("download %s failed (%s); retry %d/%d in %.1fs", url, err, attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise DownloadError(url, None, f"download failed after {retries + 1} attempts: {err}")


class DownloadError(InputError):
    """A download that failed (``status``: the HTTP status of a permanent failure, else None)."""

    def __init__(self, url: str, status: int | None, message: str):
        self.status = status
        super().__init__(url, message)
