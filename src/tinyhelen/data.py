"""Data acquisition and normalisation (the ``prepare`` stage).

Reads the released TinyHelen data (leaner and original corpora, Leaner-GLUE, Leaner-Eval) from a local
directory or downloads it from the public release at a pinned commit, normalises every genre's record
shape into one document schema, pairs leaner/original twins by the sha256 pairing hash, applies the
split map and the data budget, and writes a few large JSONL shards.

Document schema (one JSON object per line in ``data/prepared/corpus/<side>/<split>.jsonl``)::

    doc_id   sha256 of the ORIGINAL document text (the release's pairing hash; same on both sides)
    genre    book | code | conversation | math | textbook | web | wiki
    split    our split name (params: data.splits), e.g. train | validation
    side     leaner | ori
    text     the document text used for training and statistics
    parts    {"prompt": ..., "response": ...} for instruction-shaped genres (code), else null

What is hashed / what ``text`` is, per genre (matches the release's hashes exactly):

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
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from tinyhelen import timing
from tinyhelen.config import Section, check_subset
from tinyhelen.io import InputError, atomic_path, iter_jsonl, read_bytes, write_json, write_jsonl

log = logging.getLogger(__name__)

GENRES = ("book", "code", "conversation", "math", "textbook", "web", "wiki")
NATURAL_GENRES = ("book", "conversation", "textbook", "web", "wiki")  # not code, not math
SIDES = ("leaner", "ori")
RELEASED_SPLITS = ("train", "validation", "test")
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
GLUE_FIELDS = {  # task -> (first text field, second text field or None)
    "cola": ("sentence", None), "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "qnli": ("question", "sentence"),
    "mnli": ("premise", "hypothesis"),
}
EVAL_BINS = ("0-7", "7-8", "8-9", "9-10")
RESOURCES = Path(__file__).parent / "resources"
_TAG_RE = re.compile(r"<[^>]*>")
_FILE_RE = re.compile(r"^(leaner|ori)/([^/]+)/(train|validation|test)/([a-z]+)(\d{4})\.(jsonl|json)(\.zst)?$")


class DataConfig(Section):
    """``data:`` section of params.yaml."""

    source: Literal["auto", "local", "github"] = "auto"
    local_dir: str = "../shared/tinyhelen-data"
    release_url: str = "https://raw.githubusercontent.com/EmpathYang/TinyHelen/{commit}/data/{path}"
    release_commit: str = "1aa4c03"
    download_dir: str = "data/raw"
    tier: Literal["10M", "100M"] = "10M"
    genres: list[str] = Field(default_factory=lambda: list(GENRES))
    # our split -> released splits it is made of. Web train is absent from the release, hence the default
    splits: dict[str, list[str]] = Field(
        default_factory=lambda: {"train": ["train", "validation"], "validation": ["test"]})
    # data budget: max words (whitespace tokens of the ORIGINAL text) per genre and split; null = all
    max_words_per_genre: dict[str, int | None] = Field(
        default_factory=lambda: {"train": None, "validation": None})
    paired_only: bool = True
    on_bad_record: Literal["error", "skip"] = "error"
    verify_checksums: bool = True
    glue_tasks: list[str] = Field(default_factory=lambda: list(GLUE_TASKS))
    download_timeout_s: float = Field(60.0, gt=0)
    download_retries: int = Field(3, ge=0)
    download_backoff_s: float = Field(1.0, ge=0)

    @field_validator("genres")
    @classmethod
    def _genres(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must not be empty")
        return check_subset(v, GENRES, "genre")

    @field_validator("glue_tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return check_subset(v, GLUE_TASKS, "GLUE task")

    @model_validator(mode="after")
    def _split_map(self) -> "DataConfig":
        if "train" not in self.splits or "validation" not in self.splits:
            raise ValueError("splits must define 'train' and 'validation'")
        seen: dict[str, str] = {}
        for ours, released in self.splits.items():
            if not released:
                raise ValueError(f"splits.{ours} is empty")
            for r in released:
                if r not in RELEASED_SPLITS:
                    raise ValueError(f"splits.{ours}: {r!r} is not a released split {list(RELEASED_SPLITS)}")
                if r in seen:
                    raise ValueError(f"released split {r!r} is used by both splits.{seen[r]} and splits.{ours}")
                seen[r] = ours
        for k, v in self.max_words_per_genre.items():
            if k not in self.splits:
                raise ValueError(f"max_words_per_genre.{k}: no such split in splits {list(self.splits)}")
            if v is not None and v <= 0:
                raise ValueError(f"max_words_per_genre.{k} must be positive or null")
        return self


# ----------------------------------------------------------------------------------------- records
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


def _need(rec: Any, key: str, path: Path, line: int, typ: type = str) -> Any:
    if not isinstance(rec, dict):
        raise InputError(path, f"expected a JSON object, got {type(rec).__name__}", line)
    if key not in rec:
        raise InputError(path, f"missing field {key!r} (fields: {sorted(rec)[:8]})", line)
    val = rec[key]
    if not isinstance(val, typ):
        raise InputError(path, f"field {key!r} should be {typ.__name__}, got {type(val).__name__}", line)
    return val


def normalise(genre: str, side: str, rec: Any, path: Path, line: int) -> tuple[str, str, dict | None]:
    """One released record -> (pairing hash, text, parts). Raises InputError naming file and line."""
    parts = None
    if genre == "code":
        prompt, response = _need(rec, "prompt", path, line), _need(rec, "response", path, line)
        original = prompt + " " + response
        text, parts = prompt + "\n\n" + response, {"prompt": prompt, "response": response}
    elif genre == "math":
        problem, hints = _need(rec, "problem", path, line), _need(rec, "hints", path, line, list)
        if not all(isinstance(h, str) for h in hints):
            raise InputError(path, "field 'hints' must be a list of strings", line)
        original, text = problem + " " + " ".join(hints), "\n".join([problem, *hints])
    elif side == "ori" and genre == "wiki":
        if not isinstance(rec, dict) or len(rec) != 1 or not isinstance(next(iter(rec.values())), str):
            raise InputError(path, "wiki (ori) record must be a single {id: text} pair", line)
        original = text = _TAG_RE.sub("", next(iter(rec.values()))).strip()
    elif side == "ori" and genre == "textbook":
        original = text = _need(rec, "textbook", path, line)
    elif side == "ori" and genre == "conversation":
        if not isinstance(rec, str):
            raise InputError(path, f"conversation element must be a string, got {type(rec).__name__}", line)
        original = text = rec
    else:  # web, book; and leaner wiki/textbook/conversation
        original = text = _need(rec, "text", path, line)
        if side == "leaner" and genre == "wiki":
            text = text.replace("\\n", "\n")
    if side == "leaner":
        doc_hash = _need(rec, "hash", path, line)
        if not re.fullmatch(r"[0-9a-f]{64}", doc_hash):
            raise InputError(path, f"field 'hash' is not a sha256 hex digest: {doc_hash[:20]!r}", line)
    else:
        doc_hash = sha256_text(original)
    if not text.strip():
        raise InputError(path, "empty document text", line)
    return doc_hash, text, parts


def iter_file(path: Path, side: str, genre: str, released_split: str, *, skip_bad: bool,
              stats: Counter) -> Iterator[Doc]:
    """Yield normalised documents of one released file (``.jsonl``, ``.jsonl.zst`` or ``.json.zst``)."""
    if path.name.endswith(".json.zst") or path.name.endswith(".json"):
        # conversation (ori): one JSON array of strings
        try:
            arr = orjson.loads(read_bytes(path))
        except orjson.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON array: {exc}") from None
        if not isinstance(arr, list):
            raise InputError(path, f"expected a JSON array, got {type(arr).__name__}")
        records: Iterator[tuple[int, Any]] = enumerate(arr, 1)
        unit = "element"
    else:
        sub: dict[str, int] = {}
        records = iter_jsonl(path, skip_bad=skip_bad, stats=sub)
        unit = "line"
    for line, rec in records:
        try:
            doc_hash, text, parts = normalise(genre, side, rec, path, line)
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping bad record: %s", exc)
            stats["skipped_records"] += 1
            continue
        yield Doc(doc_hash, genre, released_split, side, text, parts, f"{path}:{unit} {line}")
    if unit == "line":
        stats["skipped_records"] += sub.get("skipped_lines", 0)
        stats["truncated_files"] += sub.get("truncated_files", 0)


# ----------------------------------------------------------------------------------------- sources
@dataclass
class ReleaseIndex:
    """The files of the public release we know of (path relative to ``data/``, sha256 or None)."""

    files: dict[str, str | None]

    @classmethod
    def load(cls, path: Path = RESOURCES / "release_index.tsv") -> "ReleaseIndex":
        files: dict[str, str | None] = {}
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                rel, digest = line.split("\t")
            except ValueError:
                raise InputError(path, "expected 'path<TAB>sha256'", i) from None
            files[rel] = None if digest == "-" else digest
        return cls(files)

    def corpus_files(self, side: str, tier: str, split: str, genre: str) -> list[str]:
        out = []
        for rel in self.files:
            m = _FILE_RE.match(rel)
            if m and m.group(1) == side and m.group(2) == tier and m.group(3) == split and m.group(4) == genre:
                out.append(rel)
        return sorted(out)


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


class Source:
    """Where the release files come from. ``path(rel)`` returns a local file (downloading if needed)."""

    def __init__(self, cfg: DataConfig, index: ReleaseIndex):
        self.cfg, self.index = cfg, index
        self.kind, self.root = resolve_source(cfg)
        self.absent: set[str] = set()
        self.manifest: dict[str, str] = {}
        self.verified = 0
        if self.kind == "local":
            if not self.root.is_dir():
                raise InputError(self.root, "data directory not found (set TINYHELEN_DATA or data.local_dir)")
            absent = self.root / "ABSENT_FILES.txt"
            if absent.exists():
                self.absent = {ln.strip().removeprefix("data/") for ln in absent.read_text().splitlines()
                               if ln.strip()}
            manifest = self.root / "MANIFEST.sha256"
            if manifest.exists():
                self.manifest = parse_manifest(manifest)
        else:
            self.manifest = {k: v for k, v in index.files.items() if v}

    def available(self, rel: str) -> bool:
        """False only for files the data directory declares absent (ABSENT_FILES.txt); any other
        missing file is an error raised by ``path``."""
        return rel not in self.absent

    def path(self, rel: str) -> Path:
        if self.kind == "local":
            p = self.root / rel
            if not p.exists():
                raise InputError(p, "file missing from the data directory (not listed in ABSENT_FILES.txt)")
        else:
            p = self.root / rel
            if not p.exists():
                download(self.cfg.release_url.format(commit=self.cfg.release_commit, path=rel), p,
                         timeout=self.cfg.download_timeout_s, retries=self.cfg.download_retries,
                         backoff=self.cfg.download_backoff_s)
        if self.cfg.verify_checksums and rel in self.manifest:
            got = sha256_file(p)
            if got != self.manifest[rel]:
                raise InputError(p, f"checksum mismatch: sha256 {got[:16]}... expected {self.manifest[rel][:16]}..."
                                    " (file corrupt or changed; re-download or set data.verify_checksums: false)")
            self.verified += 1
        return p


def resolve_source(cfg: DataConfig) -> tuple[str, Path]:
    """``auto``: $TINYHELEN_DATA if set, else data.local_dir if it exists, else download from GitHub."""
    env = os.environ.get("TINYHELEN_DATA")
    if cfg.source == "local" or (cfg.source == "auto" and (env or Path(cfg.local_dir).is_dir())):
        return "local", Path(env or cfg.local_dir)
    return "github", Path(cfg.download_dir) / cfg.release_commit


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
                raise InputError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
            err: Exception = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            err = exc
        if attempt < retries:
            log.warning("download %s failed (%s); retry %d/%d in %.1fs", url, err, attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise InputError(url, f"download failed after {retries + 1} attempts: {err}")


# ----------------------------------------------------------------------------------------- prepare
@dataclass
class PrepareResult:
    shards: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)   # compact: the DVC metrics
    detail: dict[str, Any] = field(default_factory=dict)  # per genre / file counts


def load_corpus(src: Source, cfg: DataConfig, stats: Counter) -> dict[str, dict[str, list[Doc]]]:
    """side -> released split -> documents, for the configured genres. Errors on missing files/genres."""
    out: dict[str, dict[str, list[Doc]]] = {s: defaultdict(list) for s in SIDES}
    used = [r for rs in cfg.splits.values() for r in rs]
    skip_bad = cfg.on_bad_record == "skip"
    for genre in cfg.genres:
        for side in SIDES:
            rels = [rel for rsplit in used for rel in src.index.corpus_files(side, cfg.tier, rsplit, genre)]
            wanted = [rel for rel in rels if src.available(rel)]
            stats["absent_files"] += len(rels) - len(wanted)
            if not wanted or (src.kind == "local" and not any((src.root / r).exists() for r in wanted)):
                raise InputError(src.root / side / cfg.tier,
                                 f"genre {genre!r}: no {side} files for released splits {used} "
                                 f"(expected {wanted or rels})")
            for rel in wanted:
                rsplit = _FILE_RE.match(rel).group(3)
                for doc in iter_file(src.path(rel), side, genre, rsplit, skip_bad=skip_bad, stats=stats):
                    out[side][rsplit].append(doc)
    return out


def pair_and_split(corpus: dict[str, dict[str, list[Doc]]], cfg: DataConfig, stats: Counter
                   ) -> dict[str, dict[str, list[Doc]]]:
    """Pair leaner/ori by hash, map released splits to ours, apply the budget. -> side -> split -> docs."""
    ours_of = {r: ours for ours, rs in cfg.splits.items() for r in rs}
    by_side: dict[str, dict[str, Doc]] = {}
    for side in SIDES:
        docs: dict[str, Doc] = {}
        for rsplit, lst in corpus[side].items():
            for d in lst:
                if d.doc_id in docs:
                    stats[f"duplicate_{side}"] += 1  # same document twice in the release: keep the first
                    continue
                docs[d.doc_id] = d
        by_side[side] = docs
    lean, ori = by_side["leaner"], by_side["ori"]
    paired = sorted(set(lean) & set(ori))
    stats["paired"] = len(paired)
    stats["unpaired_leaner"] = len(set(lean) - set(ori))
    stats["unpaired_ori"] = len(set(ori) - set(lean))
    for side, docs in by_side.items():
        other = by_side["ori" if side == "leaner" else "leaner"]
        for d in docs.values():
            if d.doc_id not in other:
                stats[f"unpaired_{side}.{d.genre}"] += 1
    # split of a pair: the ori document's released split (leaner twins agree on the 10M tier)
    ids = paired if cfg.paired_only else sorted(set(lean) | set(ori))
    chosen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for doc_id in ids:
        ref = ori.get(doc_id) or lean[doc_id]
        other = lean.get(doc_id)
        if other is not None and doc_id in ori and ours_of[other.released_split] != ours_of[ref.released_split]:
            stats["split_disagreement"] += 1
        chosen[ours_of[ref.released_split]][ref.genre].append(doc_id)
    out: dict[str, dict[str, list[Doc]]] = {s: {} for s in SIDES}
    for split in cfg.splits:
        budget = cfg.max_words_per_genre.get(split)
        keep: list[str] = []
        for genre in cfg.genres:
            taken, used_words = 0, 0
            for doc_id in chosen[split][genre]:  # sorted by hash: a fixed pseudo-random order
                ref = ori.get(doc_id) or lean[doc_id]
                n = ref.n_words()
                if budget is not None and taken and used_words + n > budget:
                    stats[f"over_budget.{split}"] += 1
                    continue
                keep.append(doc_id)
                taken += 1
                used_words += n
        for side in SIDES:
            out[side][split] = [by_side[side][i] for i in keep if i in by_side[side]]
    return out


def normalise_glue(src: Source, cfg: DataConfig, out_dir: Path, stats: Counter) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in cfg.glue_tasks:
        a, b = GLUE_FIELDS[task]
        for rel in sorted(r for r in src.index.files if r.startswith(f"leaner/glue/{task}_")):
            name = rel.rsplit("/", 1)[1].removesuffix(".jsonl")
            if not src.available(rel):
                stats["absent_files"] += 1
                continue
            path = src.path(rel)
            recs = []
            for line, r in iter_jsonl(path):
                label = _need(r, "label", path, line, (int, float))
                recs.append({"task": task, "split": name[len(task) + 1:], "idx": r.get("idx", line - 1),
                             "text_a": _need(r, a, path, line), "text_b": _need(r, b, path, line) if b else None,
                             "label": label})
            counts[name] = write_jsonl(out_dir / f"{name}.jsonl", recs)
    return counts


def normalise_eval(src: Source, out_dir: Path) -> dict[str, int]:
    def load(rel: str) -> list[dict]:
        path = src.path(rel)
        return [{"qid": _need(r, "hash", path, ln), "question": _need(r, "question", path, ln),
                 "source": r.get("source", "")} for ln, r in iter_jsonl(path)]

    bins = {}
    for b in EVAL_BINS:
        for q in load(f"leaner/eval/split-{b}.jsonl"):
            bins[q["qid"]] = b
    allq = load("leaner/eval/all.jsonl")
    for q in allq:
        q["bin"] = bins.get(q["qid"])
    return {"all": write_jsonl(out_dir / "all.jsonl", allq),
            "inner_comparison": write_jsonl(out_dir / "inner_comparison.jsonl",
                                            load("leaner/eval/inner_comparison.jsonl"))}


def prepare(cfg: DataConfig, out_dir: Path | str = "data/prepared", metrics_path: Path | str | None = None,
            index: ReleaseIndex | None = None, detail_path: Path | str | None = None) -> PrepareResult:
    """Run the whole prepare stage: writes ``out_dir/{corpus,glue,eval}`` atomically (all or nothing)."""
    t0 = time.time()
    out_dir = Path(out_dir)
    src = Source(cfg, index or ReleaseIndex.load())
    stats: Counter = Counter()
    corpus = load_corpus(src, cfg, stats)
    splits = pair_and_split(corpus, cfg, stats)
    result = PrepareResult()

    with atomic_path(out_dir) as tmp:
        for side in SIDES:
            for split, docs in splits[side].items():
                result.shards[f"{side}/{split}"] = write_jsonl(
                    tmp / "corpus" / side / f"{split}.jsonl", (d.record(split) for d in docs))
        glue = normalise_glue(src, cfg, tmp / "glue", stats)
        ev = normalise_eval(src, tmp / "eval")
    table: dict[str, Any] = {}
    for side in SIDES:
        for split, docs in splits[side].items():
            for d in docs:
                t = table.setdefault(side, {}).setdefault(split, {}).setdefault(d.genre, {"docs": 0, "words": 0})
                t["docs"] += 1
                t["words"] += d.n_words()
    totals = {side: {split: {"docs": sum(g["docs"] for g in t.values()),
                             "words": sum(g["words"] for g in t.values())} for split, t in splits_t.items()}
              for side, splits_t in table.items()}
    result.stats = {
        "source": src.kind, "checksums_verified": src.verified,
        "paired": stats.get("paired", 0), "unpaired_leaner": stats.get("unpaired_leaner", 0),
        "unpaired_ori": stats.get("unpaired_ori", 0), "skipped_records": stats.get("skipped_records", 0),
        "truncated_files": stats.get("truncated_files", 0), "absent_files": stats.get("absent_files", 0),
        "documents": totals, "glue_items": sum(glue.values()), "eval_questions": ev.get("all", 0),
    }
    timing.record(seconds=round(time.time() - t0, 2))
    result.detail = {"documents": table, "glue_items": glue, "eval_questions": ev,
                     "counts": dict(sorted(stats.items()))}
    if metrics_path:
        write_json(metrics_path, result.stats)
    if detail_path:
        write_json(detail_path, result.detail)
    log.info("prepare: %s", {k: v for k, v in result.shards.items()})
    return result


def read_docs(path: Path | str, genres: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stream documents of a prepared shard (optionally only some genres)."""
    for _, rec in iter_jsonl(path):
        if genres is None or rec["genre"] in genres:
            yield rec
