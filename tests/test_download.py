"""``make data``: downloading the pinned release into data.local_dir from a release URL (a real HTTP server on
loopback serving the fixture release), with retries, checksum verification, resumption and clear errors."""
from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyhelen.data import DataConfig, ReleaseIndex, download, parse_manifest, prepare
from tinyhelen.data.fetch import fetch_release, main, release_files
from tinyhelen.io import InputError

INFERRED = "ori/10M/test/web0099.jsonl.zst"  # an inferred file the release turns out not to have


class _Handler(SimpleHTTPRequestHandler):
    faults: dict[str, list[int]] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        codes = self.faults.get(self.path)
        if codes:
            self.send_error(codes.pop(0))
            return
        super().do_GET()

    def log_message(self, *a):  # keep test output quiet
        pass


@pytest.fixture()
def release_server(tmp_path, data_dir):
    """Serves a copy of the fixture release as <root>/<commit>/data/<path>, like raw GitHub URLs, and an
    index of it (the fixture's checksums, one file without a checksum, one inferred file that is not there)."""
    root = tmp_path / "www"
    dst = root / "1aa4c03" / "data"
    shutil.copytree(data_dir, dst)
    files: dict[str, str | None] = {k: v for k, v in parse_manifest(data_dir / "MANIFEST.sha256").items()
                                    if k.startswith(("leaner/", "ori/"))}
    files["ori/10M/test/statistics.txt"] = None
    files[INFERRED] = None
    index = ReleaseIndex(files, {INFERRED: "inferred: test"})
    _Handler.faults, _Handler.hits = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", dst, index
    srv.shutdown()
    srv.server_close()


def _cfg(url: str, local_dir: Path, **kw) -> DataConfig:
    return DataConfig(release_url=url + "/{commit}/data/{path}", local_dir=str(local_dir), download_backoff_s=0.01,
                      **kw)


def test_fetch_downloads_verifies_and_prepares_like_the_source(tmp_path, release_server, data_dir, capsys):
    url, _, index = release_server
    _Handler.faults = {"/1aa4c03/data/ori/10M/train/wiki0000.jsonl.zst": [503, 500]}
    local = tmp_path / "copy" / "tinyhelen-data"
    fetch_release(_cfg(url, local), index, quiet=True)
    out = capsys.readouterr().out
    assert f"into {local.resolve()}" in out and f"written to {local.resolve()}" in out
    assert _Handler.hits.count("/1aa4c03/data/ori/10M/train/wiki0000.jsonl.zst") == 3  # 2 faults + success
    manifest = parse_manifest(local / "MANIFEST.sha256")
    assert set(manifest) == set(index.files) - {INFERRED}
    assert (local / "ABSENT_FILES.txt").read_text() == f"data/{INFERRED}\n"
    assert not (tmp_path / "copy" / ".tinyhelen-data.download").exists()
    a = prepare(DataConfig(local_dir=str(local)), out_dir=tmp_path / "a")
    prepare(DataConfig(local_dir=str(data_dir)), out_dir=tmp_path / "b")
    assert a.stats["verified_input"] is True
    for f in ("corpus/ori/train.jsonl", "corpus/leaner/validation.jsonl", "glue/wnli_train.jsonl", "eval/all.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # an existing directory is used as it is: no request
    n = len(_Handler.hits)
    fetch_release(_cfg(url, local), index, quiet=True)
    assert len(_Handler.hits) == n and "using the existing release copy" in capsys.readouterr().out


def test_fetch_only_the_files_of_the_tier():
    files = release_files(DataConfig(), ReleaseIndex.load())
    assert files and not any("/100M/" in f for f in files) and "leaner/eval/all.jsonl" in files
    assert "ori/10M/train/statistics.txt" in files and not any(f.startswith("curriculum") for f in files)
    big = release_files(DataConfig(tier="100M"), ReleaseIndex.load())
    assert set(files) < set(big) and "ori/100M/train/web0008.jsonl.zst" in big


def test_corrupted_download_fails_and_a_rerun_resumes(tmp_path, release_server):
    url, dst, index = release_server
    f = dst / "leaner/10M/train/math0000.jsonl"
    good = f.read_bytes()
    f.write_text(f.read_text().replace("Evaluate", "Evaluatf", 1))
    local = tmp_path / "tinyhelen-data"
    with pytest.raises(InputError, match=r"math0000\.jsonl: checksum mismatch after download"):
        fetch_release(_cfg(url, local), index, quiet=True)
    assert not local.exists()  # never a half-downloaded copy
    f.write_bytes(good)
    before = set(_Handler.hits)
    fetch_release(_cfg(url, local), index, quiet=True)
    again = [h for h in _Handler.hits[len(before):] if h in before and not h.endswith("math0000.jsonl")]
    assert again == [] and (local / "leaner/10M/train/math0000.jsonl").read_bytes() == good


def test_make_data_entry_point(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  local_dir: {tmp_path / 'missing' / 'x'}\n"
                      "  release_url: 'http://127.0.0.1:9/{path}'\n  download_retries: 0\n")
    assert main(["--params", str(params)]) == 2  # nothing listens on port 9: a clear error, exit code 2
    assert "download failed" in capsys.readouterr().err


def test_download_404_is_immediate_and_names_url(tmp_path, release_server):
    url, _, _ = release_server
    with pytest.raises(InputError, match=r"/nope\.jsonl: download failed: HTTP 404"):
        download(url + "/nope.jsonl", tmp_path / "x", retries=3, backoff=0.01)
    assert _Handler.hits == ["/nope.jsonl"] and not (tmp_path / "x").exists()


def test_download_gives_up_after_retries(tmp_path, release_server):
    url, _, _ = release_server
    _Handler.faults = {"/a": [500, 500, 500]}
    with pytest.raises(InputError, match=r"download failed after 3 attempts"):
        download(url + "/a", tmp_path / "a", retries=2, backoff=0.01)


def test_release_index_lists_both_tiers():
    idx = ReleaseIndex.load()
    files = idx.corpus_files("leaner", "10M", "validation", "web")
    assert files == ["leaner/10M/validation/web0000.jsonl"] and idx.files[files[0]]
    # every original file that ori/100M/<split>/statistics.txt names (read from the public repository)
    named = {"train": "book0003 conversation0003 textbook0003 code0003 code0004 web0003 web0004 web0005 web0006 "
                      "web0007 web0008 wiki0003",
             "validation": "book0004 conversation0004 textbook0004 code0005 web0009 wiki0004",
             "test": "book0005 conversation0005 textbook0005 code0006 web0010 wiki0005"}
    for split, names in named.items():
        for n in names.split():
            ext = ".json.zst" if n.startswith("conversation") else ".jsonl.zst"
            assert f"ori/100M/{split}/{n}{ext}" in idx.files
        assert f"ori/100M/{split}/math0000.jsonl" in idx.files
        for genre in ("book", "code", "conversation", "math", "textbook", "web", "wiki"):
            assert idx.corpus_files("leaner", "100M", split, genre), (split, genre)
    assert idx.notes["ori/100M/train/conversation0003.json.zst"].startswith("inferred")
    assert all(v.startswith("inferred") for v in idx.notes.values())
    assert len([f for f in idx.files if "/100M/" in f and f.endswith(("jsonl", "zst"))]) == 52  # 25 leaner + 27 ori
