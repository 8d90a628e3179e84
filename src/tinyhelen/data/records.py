"""Released records -> documents: one normaliser per genre and side, the pairing hash, per-file reading.

What is hashed / what ``text`` is, per genre (matches the release's hashes exactly)::

    web, book       hash(text);                          text = text
    conversation    hash(element of the JSON array);     text = element (ori) / text (leaner)
    wiki            hash(the single value of {id: text} with <...> tags removed, stripped);
                    text = that cleaned value; leaner text has literal backslash-n read as newline
    textbook        hash(ori "textbook" field);          text = textbook (ori) / text (leaner)
    code            hash(prompt + " " + response);       text = prompt + "\\n\\n" + response
    math            hash(problem + " " + " ".join(hints)); text = problem + "\\n" + "\\n".join(hints)
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from tinyhelen.io import InputError, iter_json_array, iter_jsonl

log = logging.getLogger(__name__)
T = TypeVar("T")

_TAG_RE = re.compile(r"<[^>]*>")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Doc:
    doc_id: str
    genre: str
    released_split: str
    side: str
    text: str
    parts: dict[str, str] | None = None
    source: str = ""  # file:line, for error messages and audits

    def n_words(self) -> int:
        return len(self.text.split())

    def record(self, split: str) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "genre": self.genre, "split": split, "side": self.side,
                "text": self.text, "parts": self.parts}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def need_field(rec: Any, key: str, path: Path, line: int, typ: type | tuple[type, ...] = str) -> Any:
    """``rec[key]`` of the expected type, or an InputError naming file, line and field."""
    if not isinstance(rec, dict):
        raise InputError(path, f"expected a JSON object, got {type(rec).__name__}", line)
    if key not in rec:
        raise InputError(path, f"missing field {key!r} (fields: {sorted(rec)[:8]})", line)
    val = rec[key]
    if not isinstance(val, typ):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise InputError(path, f"field {key!r} should be {name}, got {type(val).__name__}", line)
    return val


def normalise(genre: str, side: str, rec: Any, path: Path, line: int) -> tuple[str, str, dict | None]:
    """One released record -> (pairing hash, text, parts). Raises InputError naming file and line."""
    parts = None
    if genre == "code":
        prompt, response = need_field(rec, "prompt", path, line), need_field(rec, "response", path, line)
        original = prompt + " " + response
        text, parts = prompt + "\n\n" + response, {"prompt": prompt, "response": response}
    elif genre == "math":
        problem, hints = need_field(rec, "problem", path, line), need_field(rec, "hints", path, line, list)
        if not all(isinstance(h, str) for h in hints):
            raise InputError(path, "field 'hints' must be a list of strings", line)
        original, text = problem + " " + " ".join(hints), "\n".join([problem, *hints])
    elif side == "ori" and genre == "wiki":
        if not isinstance(rec, dict) or len(rec) != 1 or not isinstance(next(iter(rec.values())), str):
            raise InputError(path, "wiki (ori) record must be a single {id: text} pair", line)
        original = text = _TAG_RE.sub("", next(iter(rec.values()))).strip()
    elif side == "ori" and genre == "textbook":
        original = text = need_field(rec, "textbook", path, line)
    elif side == "ori" and genre == "conversation":
        if not isinstance(rec, str):
            raise InputError(path, f"conversation element must be a string, got {type(rec).__name__}", line)
        original = text = rec
    else:  # web, book; and leaner wiki/textbook/conversation
        original = text = need_field(rec, "text", path, line)
        if side == "leaner" and genre == "wiki":
            text = text.replace("\\n", "\n")
    if side == "leaner":
        doc_hash = need_field(rec, "hash", path, line)
        if not _HEX64.fullmatch(doc_hash):
            raise InputError(path, f"field 'hash' is not a sha256 hex digest: {doc_hash[:20]!r}", line)
    else:
        doc_hash = sha256_text(original)
    if not text.strip():
        raise InputError(path, "empty document text", line)
    return doc_hash, text, parts


@dataclass
class FileReport:
    """What reading one released file gave (``reports/prepare_detail.json``, ``files``)."""

    records: int = 0        # records parsed (JSON lines, or elements of a JSON array)
    kept: int = 0           # documents (records that normalised)
    skipped: int = 0        # records lost: malformed JSON lines and records that did not normalise
    partial: int = 0        # records lost: the one cut short where a damaged stream stops
    stopped_at: str | None = None  # "line N" / "element N": where a damaged stream stopped
    problem: str | None = None     # "truncated or corrupt: ...", "empty file"

    @property
    def lost(self) -> int:
        return self.skipped + self.partial

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def is_array_file(path: Path | str) -> bool:
    """The original conversation genre is one JSON array of strings per file (``.json`` / ``.json.zst``)."""
    name = Path(path).name
    return name.endswith(".json.zst") or name.endswith(".json")


def iter_records(path: Path, *, skip_bad: bool, report: FileReport) -> Iterator[tuple[int, Any]]:
    """``(line or element number, record)`` of one released file (``.jsonl``, ``.jsonl.zst``, ``.json.zst``).

    A file without any record is an InputError (with ``skip_bad``: a warning, recorded in ``report``)."""
    stats: dict[str, int] = {}
    reader = iter_json_array if is_array_file(path) else iter_jsonl
    yield from reader(path, skip_bad=skip_bad, stats=stats)
    report.records += stats.get("records", 0)
    report.skipped += stats.get("skipped_lines", 0)
    report.partial += stats.get("partial_records", 0)
    if "stopped_at_line" in stats:
        report.stopped_at, report.problem = f"line {stats['stopped_at_line']}", "truncated or corrupt"
    elif "stopped_at_element" in stats:
        report.stopped_at, report.problem = f"element {stats['stopped_at_element']}", "truncated or corrupt"
    elif not stats.get("records") and not stats.get("skipped_lines"):
        if not skip_bad:
            raise InputError(path, "empty file: no records (a released file always has some; re-download it, "
                                   "or set data.on_bad_record: skip to go on without it)")
        log.warning("%s: empty file (no records); skipped", path)
        report.problem = "empty file"


def read_items(path: Path, make: Callable[[int, Any], T], *, skip_bad: bool, report: FileReport) -> Iterator[T]:
    """The records of one released file turned into items by ``make(line, record)``. A record that ``make``
    rejects (InputError) is an error, or with ``skip_bad`` a logged warning counted in ``report.skipped``."""
    for line, rec in iter_records(path, skip_bad=skip_bad, report=report):
        try:
            item = make(line, rec)
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping bad record: %s", exc)
            report.skipped += 1
            continue
        report.kept += 1
        yield item


def iter_file(path: Path, side: str, genre: str, released_split: str, *, skip_bad: bool,
              report: FileReport | None = None) -> Iterator[Doc]:
    """Yield normalised documents of one released file; ``report`` gets what was kept and lost."""
    unit = "element" if is_array_file(path) else "line"

    def make(line: int, rec: Any) -> Doc:
        doc_hash, text, parts = normalise(genre, side, rec, path, line)
        return Doc(doc_hash, genre, released_split, side, text, parts, f"{path}:{unit} {line}")

    return read_items(path, make, skip_bad=skip_bad, report=FileReport() if report is None else report)


def read_docs(path: Path | str, genres: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stream documents of a prepared shard (optionally only some genres)."""
    for _, rec in iter_jsonl(path):
        if genres is None or rec["genre"] in genres:
            yield rec
