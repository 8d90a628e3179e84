"""The ``prepare`` stage: released files -> paired, split, budgeted shards of the document schema.

Reads the corpus files of the configured tier that are present in ``data.local_dir`` (``tinyhelen.data
.release``), normalises every record (``tinyhelen.data.records``), pairs leaner/original twins by the
pairing hash, applies the split map and the data budget, normalises Leaner-GLUE and Leaner-Eval, and
writes everything atomically. ``reports/prepare.json`` (DVC metrics, deterministic) says what was read and
what is wrong with the input; ``reports/prepare_detail.json`` has the per-genre and per-file detail.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tinyhelen import timing
from tinyhelen.config import ParamsError
from tinyhelen.data.config import EVAL_BINS, GLUE_FIELDS, SIDES, DataConfig
from tinyhelen.data.records import Doc, FileReport, iter_file, need_field, read_items
from tinyhelen.data.release import LocalRelease, ReleaseIndex, corpus_file
from tinyhelen.io import InputError, atomic_path, write_json, write_jsonl

log = logging.getLogger(__name__)


def check_data_env(cfg: DataConfig) -> None:
    """``TINYHELEN_DATA`` is the test suite's variable. A stage run with it set to another directory than
    ``data.local_dir`` fails: DVC cannot see environment variables, so it would neither read that directory
    nor rerun ``prepare`` when the variable changes."""
    env = os.environ.get("TINYHELEN_DATA")
    if env and Path(env).resolve() != Path(cfg.local_dir).resolve():
        raise ParamsError(
            f"TINYHELEN_DATA={env} names another directory than data.local_dir={cfg.local_dir}. DVC cannot see "
            "environment variables, so the pipeline reads data.local_dir only (a DVC dependency of prepare). "
            f"Point the pipeline there with `dvc exp run -S data.local_dir={env}` (or edit params.yaml), "
            "or unset TINYHELEN_DATA (it only tells the test suite where the full data is).")


@dataclass
class Inventory:
    """What the data directory gave for the configured scope (tier folders, splits, genres, tasks)."""

    files: dict[str, FileReport] = field(default_factory=dict)  # every file read
    absent: set[str] = field(default_factory=set)    # in the index, declared absent (ABSENT_FILES.txt)
    missing: set[str] = field(default_factory=set)   # in the index, neither there nor declared absent
    genres_missing: list[str] = field(default_factory=list)   # "<tier>/<side>/<genre>": no file there
    genres_one_side: list[str] = field(default_factory=list)  # "<genre>: <side> only"

    def account(self, src: LocalRelease, rel: str) -> bool:
        """True if ``rel`` is there to read; otherwise records it as absent or missing."""
        status = src.status(rel)
        if status == "absent":
            self.absent.add(rel)
        elif status == "missing":
            if rel in src.manifest:
                src.path(rel)  # raises: the copy's own manifest promises it
            self.missing.add(rel)
        return status == "present"

    def read(self, src: LocalRelease, rel: str) -> tuple[Path, FileReport]:
        """``(path, report)`` of a present file (checksum verified where the manifest lists it)."""
        self.files[rel] = FileReport()
        return src.path(rel), self.files[rel]

    def lost(self, key: str) -> int:
        return sum(getattr(r, key) for r in self.files.values())


def _known(src: LocalRelease, side: str, tier: str, split: str, genre: str) -> list[str]:
    """Files of one (side, tier folder, released split, genre): present, indexed or in the manifest."""
    out = set(src.index.corpus_files(side, tier, split, genre))
    for rel in src.present | set(src.manifest):
        c = corpus_file(rel)
        if c and (c.side, c.tier, c.split, c.genre) == (side, tier, split, genre):
            out.add(rel)
    return sorted(out)


def load_corpus(src: LocalRelease, cfg: DataConfig, inv: Inventory) -> dict[str, dict[str, list[Doc]]]:
    """side -> released split -> documents, for the configured genres and tier folders."""
    out: dict[str, dict[str, list[Doc]]] = {s: defaultdict(list) for s in SIDES}
    skip_bad = cfg.on_bad_record == "skip"
    for genre in cfg.genres:
        files_of: dict[str, int] = Counter()
        docs_of: dict[str, int] = Counter()
        for side in SIDES:
            for rsplit in cfg.released_splits:
                for tier in cfg.tier_dirs:
                    for rel in _known(src, side, tier, rsplit, genre):
                        if not inv.account(src, rel):
                            continue
                        files_of[f"{tier}/{side}"] += 1
                        path, rep = inv.read(src, rel)
                        for doc in iter_file(path, side, genre, rsplit, skip_bad=skip_bad, report=rep):
                            out[side][rsplit].append(doc)
                            docs_of[side] += 1
        if not files_of:
            raise InputError(src.root, f"genre {genre!r}: no file on either side in {list(cfg.tier_dirs)} for "
                                       f"released splits {cfg.released_splits} (remove it from data.genres?)")
        inv.genres_missing += [f"{tier}/{side}/{genre}" for tier in cfg.tier_dirs for side in SIDES
                               if not files_of[f"{tier}/{side}"]]
        sides = [s for s in SIDES if docs_of[s]]
        if len(sides) == 1:
            inv.genres_one_side.append(f"{genre}: {sides[0]} only")
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


def _glue_item(task: str, split: str, a: str, b: str | None, path: Path, line: int, r: Any) -> dict[str, Any]:
    label = need_field(r, "label", path, line, (int, float))
    return {"task": task, "split": split, "idx": r.get("idx", line - 1), "text_a": need_field(r, a, path, line),
            "text_b": need_field(r, b, path, line) if b else None, "label": label}


def normalise_glue(src: LocalRelease, cfg: DataConfig, out_dir: Path, inv: Inventory) -> dict[str, int]:
    """``leaner/glue/<task>_<split>.jsonl`` -> ``<out_dir>/<task>_<split>.jsonl`` (task, split, idx, text_a,
    text_b, label), for every file of the configured tasks that is there."""
    counts: dict[str, int] = {}
    skip_bad = cfg.on_bad_record == "skip"
    for task in cfg.glue_tasks:
        a, b = GLUE_FIELDS[task]
        prefix = f"leaner/glue/{task}_"
        rels = sorted({r for r in [*src.index.under(prefix), *src.present, *src.manifest]
                       if r.startswith(prefix) and r.endswith(".jsonl")})
        for rel in rels:
            if not inv.account(src, rel):
                continue
            name = rel.rsplit("/", 1)[1].removesuffix(".jsonl")
            path, rep = inv.read(src, rel)
            item = partial(_glue_item, task, name[len(task) + 1:], a, b, path)
            counts[name] = write_jsonl(out_dir / f"{name}.jsonl",
                                       list(read_items(path, item, skip_bad=skip_bad, report=rep)))
    return counts


def normalise_eval(src: LocalRelease, cfg: DataConfig, out_dir: Path, inv: Inventory) -> dict[str, int]:
    """Leaner-Eval: ``all.jsonl`` with each question's similarity bin, and ``inner_comparison.jsonl``."""
    skip_bad = cfg.on_bad_record == "skip"

    def load(rel: str) -> list[dict]:
        inv.account(src, rel)
        path, rep = inv.read(src, rel)

        def question(ln: int, r: Any) -> dict:
            return {"qid": need_field(r, "hash", path, ln), "question": need_field(r, "question", path, ln),
                    "source": r.get("source", "")}

        return list(read_items(path, question, skip_bad=skip_bad, report=rep))

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


@dataclass
class PrepareResult:
    shards: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)   # compact and deterministic: the DVC metrics
    detail: dict[str, Any] = field(default_factory=dict)  # per genre / file counts


def prepare(cfg: DataConfig, out_dir: Path | str = "data/prepared", metrics_path: Path | str | None = None,
            index: ReleaseIndex | None = None, detail_path: Path | str | None = None) -> PrepareResult:
    """Run the whole prepare stage: writes ``out_dir/{corpus,glue,eval}`` atomically (all or nothing)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    src = LocalRelease(cfg.local_dir, index or ReleaseIndex.load(), verify_checksums=cfg.verify_checksums)
    stats: Counter = Counter()
    inv = Inventory()
    corpus = load_corpus(src, cfg, inv)
    splits = pair_and_split(corpus, cfg, stats)
    result = PrepareResult()

    with atomic_path(out_dir) as tmp:
        for side in SIDES:
            for split, docs in splits[side].items():
                result.shards[f"{side}/{split}"] = write_jsonl(
                    tmp / "corpus" / side / f"{split}.jsonl", (d.record(split) for d in docs))
        glue = normalise_glue(src, cfg, tmp / "glue", inv)
        ev = normalise_eval(src, cfg, tmp / "eval", inv)
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
    unknown = src.unknown()
    result.stats = {
        "tier": cfg.tier, "tier_dirs": list(cfg.tier_dirs),
        "verified_input": bool(src.has_manifest and cfg.verify_checksums and not src.unverified),
        "checksums_verified": len(src.verified), "files_read": len(inv.files),
        "paired": stats.get("paired", 0), "unpaired_leaner": stats.get("unpaired_leaner", 0),
        "unpaired_ori": stats.get("unpaired_ori", 0),
        "records_lost": inv.lost("lost"), "skipped_records": inv.lost("skipped"),
        "partial_records": inv.lost("partial"),
        "truncated_files": sum(r.stopped_at is not None for r in inv.files.values()),
        "empty_files": sum(r.problem == "empty file" for r in inv.files.values()),
        "absent_files": len(inv.absent), "missing_files": sorted(inv.missing), "unknown_files": unknown,
        "genres_missing": inv.genres_missing, "genres_one_side": inv.genres_one_side,
        "documents": totals, "glue_items": sum(glue.values()), "eval_questions": ev.get("all", 0),
    }
    result.detail = {"documents": table, "glue_items": glue, "eval_questions": ev,
                     "counts": dict(sorted(stats.items())),
                     "files": {rel: inv.files[rel].as_dict() for rel in sorted(inv.files)},
                     "absent_files": sorted(inv.absent), "unverified_files": sorted(src.unverified)}
    _warn(result.stats, src)
    if metrics_path:
        write_json(metrics_path, result.stats)
    if detail_path:
        write_json(detail_path, result.detail)
    secs = time.perf_counter() - t0
    words = sum(s["words"] for t in totals.values() for s in t.values())
    timing.record(seconds=round(secs, 2), words_per_s=round(words / max(secs, 1e-9)))
    log.info("prepare: %s in %.2fs", dict(result.shards), secs)
    return result


def _warn(st: dict[str, Any], src: LocalRelease) -> None:
    """One warning per kind of input problem (they are all in reports/prepare.json too)."""
    if not st["verified_input"]:
        why = "no MANIFEST.sha256" if not src.has_manifest else f"{len(src.unverified)} file(s) not in MANIFEST.sha256"
        log.warning("unverified input in %s: %s (verified_input: false)", src.root, why)
    for key, what in (("unknown_files", "files unknown to the release index (read where they are corpus files)"),
                      ("missing_files", "release files neither there nor declared in ABSENT_FILES.txt"),
                      ("genres_missing", "genres without any file in a tier folder (<tier>/<side>/<genre>)"),
                      ("genres_one_side", "genres on one side only (their documents cannot pair)")):
        if st[key]:
            log.warning("%s: %s", what, ", ".join(st[key]))
    if st["records_lost"] or st["empty_files"]:
        log.warning("input damage skipped (data.on_bad_record: skip): %d records lost (%d malformed or invalid, "
                    "%d cut short), %d truncated and %d empty files; see reports/prepare_detail.json",
                    st["records_lost"], st["skipped_records"], st["partial_records"], st["truncated_files"],
                    st["empty_files"])
