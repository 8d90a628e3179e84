"""``make data``: download the pinned release into ``data.local_dir`` when that directory does not exist.

    python -m tinyhelen.data.fetch [--params params.yaml]

Downloads the files of the configured tier (corpus files of its folders, their ``statistics.txt``),
Leaner-GLUE and Leaner-Eval from ``data.release_url`` at ``data.release_commit``, verifies every file whose
sha256 the release index knows, and writes the directory's own ``MANIFEST.sha256`` (the checksums seen) and
``ABSENT_FILES.txt`` (inferred files the release turned out not to have). Files are collected in a staging
folder beside the target (``.<name>.download``, kept across interrupted runs so a rerun resumes) and the
folder is renamed into place only when complete: ``prepare`` never sees a half-downloaded copy.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from tinyhelen.data.config import DataConfig
from tinyhelen.data.release import DownloadError, ReleaseIndex, corpus_file, download, sha256_file
from tinyhelen.io import InputError, atomic_open

log = logging.getLogger(__name__)


def release_files(cfg: DataConfig, index: ReleaseIndex) -> list[str]:
    """The files ``make data`` downloads: the tier folders' corpus files and statistics (all genres, so a
    later change of ``data.genres`` needs no new download), Leaner-GLUE and Leaner-Eval."""
    out = []
    for rel in sorted(index.files):
        c = corpus_file(rel)
        parts = rel.split("/")
        if c is not None and c.tier in cfg.tier_dirs:
            out.append(rel)
        elif len(parts) == 4 and parts[0] == "ori" and parts[1] in cfg.tier_dirs and parts[3] == "statistics.txt":
            out.append(rel)
        elif rel.startswith(("leaner/glue/", "leaner/eval/")):
            out.append(rel)
    return out


def fetch_release(cfg: DataConfig, index: ReleaseIndex | None = None, *, quiet: bool = False) -> Path:
    """Download the pinned release into ``cfg.local_dir`` unless that directory exists. Returns it."""
    index = index or ReleaseIndex.load()
    root = Path(cfg.local_dir)
    if root.is_dir():
        print(f"data: using the existing release copy in {root} (data.local_dir)")
        return root
    stage = root.parent / f".{root.name}.download"
    stage.mkdir(parents=True, exist_ok=True)
    files = release_files(cfg, index)
    print(f"data: downloading {len(files)} files of the TinyHelen release @ {cfg.release_commit} (tier {cfg.tier}) "
          f"from {cfg.release_url.split('{')[0]}... into {root.resolve()}")
    manifest: dict[str, str] = {}
    absent: list[str] = []
    for rel in tqdm(files, desc="data", unit="file", disable=quiet or None):
        target = stage / rel
        want = index.files.get(rel)
        if target.exists() and (want is None or sha256_file(target) == want):
            manifest[rel] = sha256_file(target)  # kept from an interrupted run
            continue
        try:
            download(cfg.release_url.format(commit=cfg.release_commit, path=rel), target,
                     timeout=cfg.download_timeout_s, retries=cfg.download_retries, backoff=cfg.download_backoff_s)
        except DownloadError as exc:
            if exc.status == 404 and rel in index.notes:  # an inferred file the release does not have
                log.warning("%s: not in the release (%s); recorded in ABSENT_FILES.txt", rel, index.notes[rel])
                absent.append(rel)
                continue
            raise
        got = sha256_file(target)
        if want is not None and got != want:
            target.unlink()
            raise InputError(target, f"checksum mismatch after download: sha256 {got[:16]}... expected "
                                     f"{want[:16]}... (the release changed, or the download is corrupt)")
        manifest[rel] = got
    with atomic_open(stage / "MANIFEST.sha256") as fh:
        fh.writelines(f"{manifest[rel]}  ./{rel}\n" for rel in sorted(manifest))
    with atomic_open(stage / "ABSENT_FILES.txt") as fh:
        fh.writelines(f"data/{rel}\n" for rel in sorted(absent))
    with atomic_open(stage / "README.md") as fh:
        fh.write(f"# TinyHelen release, tier {cfg.tier}\n\nDownloaded by `make data` (tinyhelen.data.fetch) from "
                 f"{cfg.release_url} at commit {cfg.release_commit}. `MANIFEST.sha256` lists the checksums "
                 "seen, `ABSENT_FILES.txt` the inferred files that the release does not have.\n")
    if root.exists():  # appeared meanwhile: never overwrite a copy
        raise InputError(root, "appeared while downloading; the download stays in " + str(stage))
    os.replace(stage, root)
    print(f"data: {len(manifest)} files written to {root.resolve()}")
    return root


def main(argv: list[str] | None = None) -> int:
    from tinyhelen.cli import setup_logging
    from tinyhelen.config import ParamsError, load_section

    setup_logging()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    try:
        fetch_release(load_section("data", DataConfig, args.params))
    except (ParamsError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
