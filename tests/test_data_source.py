"""The data source: the 100M tier (the 10M/ and 100M/ folders together) read from a directory with the
public release's layout, what is missing from it reported by prepare and entropy, the TINYHELEN_DATA guard,
and DVC seeing a change of the data source (another directory, tier or file content)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import zstandard

from tinyhelen.config import ParamsError
from tinyhelen.data import DataConfig, ReleaseIndex, check_data_env, corpus_file, normalise, prepare
from tinyhelen.data.release import files_under
from tinyhelen.entropy.measure import EntropyConfig, run
from tinyhelen.io import iter_json_array, iter_jsonl

REPO = Path(__file__).resolve().parents[1]
TEXT_FIELD = {("ori", "wiki"): None, ("ori", "conversation"): None, ("ori", "textbook"): "textbook",
              ("leaner", "code"): "prompt", ("ori", "code"): "prompt", ("leaner", "math"): "problem",
              ("ori", "math"): "problem"}  # else "text"


def _retext(rec, side: str, genre: str, tag: str):
    """The record with ``tag`` put before its text (a new document with a new pairing hash)."""
    key = TEXT_FIELD.get((side, genre), "text")
    if isinstance(rec, str):
        return tag + rec
    if key is None:  # ori wiki: {id: text}
        (k, v), = rec.items()
        return {k: tag + v}
    return {**rec, key: tag + rec[key]}


def _read(path: Path) -> list:
    reader = iter_json_array if path.name.endswith(".json.zst") else iter_jsonl
    return [r for _, r in reader(path)]


def _write(path: Path, recs: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".json.zst"):
        data = json.dumps(recs).encode()
    else:
        data = "".join(json.dumps(r) + "\n" for r in recs).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if path.suffix == ".zst" else data)


def make_100m_copy(fixture: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """A directory with the public release's 100M layout: the fixture release (its 10M/ folder, GLUE, Eval)
    plus a 100M/ folder whose files carry the names the release index gives them, made from the fixture's
    10M documents with a changed text (so new documents, paired by new hashes). 100M files of the index
    that the 10M folder has no counterpart for, and files whose path contains one of ``skip``, are left
    out. Returns the number of documents written per side."""
    shutil.copytree(fixture, dst)
    (dst / "MANIFEST.sha256").unlink()
    index = ReleaseIndex.load()
    made = {"leaner": 0, "ori": 0}
    new_hash: dict[str, str] = {}  # 10M pairing hash -> the 100M document's
    for side_order in ("ori", "leaner"):  # ori first: the leaner twins need the new hashes
        for rel in sorted(index.files):
            c = corpus_file(rel)
            if not c or c.tier != "100M" or c.side != side_order or any(s in rel for s in skip):
                continue
            src = sorted((fixture / c.side / "10M" / c.split).glob(f"{c.genre}0*"))
            if not src:
                continue
            recs = []
            for i, rec in enumerate(_read(src[0])):
                new = _retext(rec, c.side, c.genre, "Hundred. ")
                if c.side == "ori":
                    old_h = normalise(c.genre, "ori", rec, src[0], i + 1)[0]
                    new_hash[old_h] = normalise(c.genre, "ori", new, Path(rel), i + 1)[0]
                elif rec["hash"] in new_hash:
                    new["hash"] = new_hash[rec["hash"]]
                else:
                    continue
                recs.append(new)
            _write(dst / rel, recs)
            made[c.side] += len(recs)
    return made


def test_tier_100m_is_the_union_of_both_folders_and_what_is_missing_is_reported(tmp_path, data_dir, caplog):
    root = tmp_path / "tinyhelen-data"
    made = make_100m_copy(data_dir, root, skip=("leaner/100M/train/web", "leaner/100M/validation/web",
                                                "leaner/100M/test/web", "conversation"))
    for p in root.rglob("conversation*"):  # the 10M conversation files too: one genre is absent entirely
        if p.parts[-4] == "leaner":
            p.unlink()
    (root / "ori/100M/test/web0099.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "x"}\n'))
    ten = prepare(DataConfig(local_dir=str(root)), out_dir=tmp_path / "p10").stats
    st = prepare(DataConfig(local_dir=str(root), tier="100M"), out_dir=tmp_path / "p100",
                 metrics_path=tmp_path / "prepare.json").stats
    assert st == json.loads((tmp_path / "prepare.json").read_text())
    assert ten["tier_dirs"] == ["10M"] and st["tier_dirs"] == ["10M", "100M"]
    assert made["ori"] > 0 and st["paired"] > ten["paired"]
    for side in ("leaner", "ori"):
        assert st["documents"][side]["train"]["docs"] > ten["documents"][side]["train"]["docs"]
    # reported: the unknown file, files of the index that are neither there nor declared absent, genres
    # missing from the 100M folder, and the genre present on one side only
    assert st["unknown_files"] == ["ori/100M/test/web0099.jsonl.zst"]
    assert "leaner/100M/validation/web0000.jsonl" not in st["missing_files"]  # declared in ABSENT_FILES.txt
    assert "leaner/100M/train/conversation0000.jsonl" in st["missing_files"]
    assert "10M/leaner/conversation" in st["genres_missing"] and "100M/leaner/conversation" in st["genres_missing"]
    assert "100M/leaner/web" in st["genres_missing"] and "100M/ori/web" not in st["genres_missing"]
    assert st["absent_files"] > ten["absent_files"]  # leaner/100M/*/web*: declared in ABSENT_FILES.txt
    assert st["genres_one_side"] == ["conversation: ori only"]
    assert "conversation: ori only" in caplog.text and "web0099" in caplog.text
    # the entropy stage runs on it and names the genre that drops out of the pooled figures
    cfg = EntropyConfig(max_n=2)
    res = run({s: [tmp_path / f"p100/corpus/{s}/{sp}.jsonl" for sp in cfg.splits] for s in ("leaner", "ori")},
              None, cfg)
    assert res.coverage == {"pooled_genres": ["book", "textbook", "web", "wiki"],
                            "dropped": {"conversation": "no documents on either side"}}
    pooled = res.results["paired"]["pooled"]
    assert pooled["leaner"]["tokens"] > 0 and pooled["leaner"]["vocab"] < pooled["ori"]["vocab"]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> its sha256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_data_directory_of_symlinks_prepares_like_the_real_one(tmp_path, data_dir, caplog):
    """Users keep large corpora on another disk and link them in: a data directory made of symlinked folders
    (``leaner/``, ``ori/10M/train``, ``ori/10M/test``), symlinked files (``MANIFEST.sha256`` and one corpus
    file) and a link back to a folder it is in (a loop), gives the same outputs and metrics as the real one."""
    linked = tmp_path / "linked"
    (linked / "ori/10M/validation").mkdir(parents=True)
    (linked / "leaner").symlink_to(data_dir / "leaner", target_is_directory=True)
    for split in ("train", "test"):
        (linked / "ori/10M" / split).symlink_to(data_dir / "ori/10M" / split, target_is_directory=True)
    validation = sorted((data_dir / "ori/10M/validation").iterdir())
    (linked / "ori/10M/validation" / validation[0].name).symlink_to(validation[0])
    for f in validation[1:]:
        shutil.copy(f, linked / "ori/10M/validation" / f.name)
    for f in sorted(data_dir.glob("ori/*.txt")) + sorted(data_dir.glob("ori/10M/*.txt")):
        shutil.copy(f, linked / f.relative_to(data_dir))
    (linked / "MANIFEST.sha256").symlink_to(data_dir / "MANIFEST.sha256")
    for name in ("ABSENT_FILES.txt", "README.md"):
        shutil.copy(data_dir / name, linked / name)
    (linked / "ori/10M/validation/loop").symlink_to(linked / "ori/10M", target_is_directory=True)
    assert files_under(linked) == {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()}

    real = prepare(DataConfig(local_dir=str(data_dir)), out_dir=tmp_path / "p_real",
                   metrics_path=tmp_path / "real.json", detail_path=tmp_path / "real_detail.json")
    got = prepare(DataConfig(local_dir=str(linked)), out_dir=tmp_path / "p_linked",
                  metrics_path=tmp_path / "linked.json", detail_path=tmp_path / "linked_detail.json")
    assert got.stats["verified_input"] and got.stats["files_read"] == real.stats["files_read"] == 70
    assert _tree(tmp_path / "p_linked") == _tree(tmp_path / "p_real") != {}
    for name in ("", "_detail"):
        assert (tmp_path / f"linked{name}.json").read_bytes() == (tmp_path / f"real{name}.json").read_bytes()
    assert "a loop" in caplog.text and "validation/loop" in caplog.text


def test_stage_refuses_a_tinyhelen_data_that_dvc_cannot_see(monkeypatch, tmp_path):
    cfg = DataConfig(local_dir=str(tmp_path / "a"))
    monkeypatch.setenv("TINYHELEN_DATA", str(tmp_path / "b"))
    with pytest.raises(ParamsError, match=r"DVC cannot see environment variables.*dvc exp run -S data\.local_dir="):
        check_data_env(cfg)
    monkeypatch.setenv("TINYHELEN_DATA", str(tmp_path / "x" / ".." / "a"))  # the same directory
    check_data_env(cfg)
    monkeypatch.delenv("TINYHELEN_DATA")
    check_data_env(cfg)


# ------------------------------------------------------------------ DVC sees the data source
def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("TINYHELEN_DATA", None)
    res = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, f"dvc {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _repo_with_prepare(dst: Path) -> Path:
    """A git + DVC repository with this repository's prepare stage, the code stage that writes the checksums
    prepare depends on, and their inputs (not the other stages)."""
    for rel in ("stages", "src", "params.yaml", ".dvc/config", ".dvcignore"):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / rel).is_dir() else shutil.copy)(REPO / rel, dst / rel)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (dst / "dvc.yaml").write_text(yaml.safe_dump({"stages": {k: stages[k] for k in ("code", "prepare")}},
                                                 sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    return dst


def _set(repo: Path, **data) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_changing_the_data_source_makes_prepare_stale(tmp_path, data_dir):
    release = tmp_path / "release"
    shutil.copytree(data_dir, release)
    repo = _repo_with_prepare(tmp_path / "repo")
    _set(repo, local_dir=str(release), genres=["wiki", "math"], glue_tasks=["wnli"])
    assert "Running stage 'prepare'" in _dvc(repo, "repro", "prepare")
    assert json.loads((repo / "reports/prepare.json").read_text())["verified_input"] is True
    assert "up to date" in _dvc(repo, "status", "prepare")

    f = release / "leaner/glue/wnli_test.jsonl"  # a file's content
    good = f.read_bytes()
    f.write_bytes(good.replace(b"The", b"A", 1))
    assert "changed deps" in _dvc(repo, "status", "prepare")
    f.write_bytes(good)
    assert "up to date" in _dvc(repo, "status", "prepare")

    other = tmp_path / "other"  # another directory, same content
    shutil.copytree(release, other)
    _set(repo, local_dir=str(other))
    assert "prepare" in _dvc(repo, "status", "prepare") and "up to date" not in _dvc(repo, "status", "prepare")
    _set(repo, local_dir=str(release))
    assert "up to date" in _dvc(repo, "status", "prepare")

    _set(repo, tier="100M")  # another tier
    assert "changed deps" in _dvc(repo, "status", "prepare")
