"""The online data path: download from a release URL (a real HTTP server on loopback), with retries,
checksum verification against the release index, and clear errors."""
from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyhelen.data import DataConfig, ReleaseIndex, download, prepare
from tinyhelen.io import InputError


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
    """Serves a copy of the release as <root>/<commit>/data/<path>, like raw GitHub URLs."""
    root = tmp_path / "www"
    dst = root / "1aa4c03" / "data"
    for p in data_dir.rglob("*"):
        rel = p.relative_to(data_dir)
        if p.is_file() and len(rel.parts) > 2 and (rel.parts[1] in ("glue", "eval") or rel.name.startswith(("wiki", "math"))):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / rel)
    _Handler.faults, _Handler.hits = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", dst
    srv.shutdown()
    srv.server_close()


def _cfg(url: str, tmp_path: Path) -> DataConfig:
    return DataConfig(source="github", release_url=url + "/{commit}/data/{path}", download_dir=str(tmp_path / "raw"),
                      genres=["wiki", "math"], glue_tasks=["wnli"], download_backoff_s=0.01)


def test_prepare_from_release_url_with_retries_and_checksums(tmp_path, release_server, monkeypatch):
    url, _ = release_server
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    _Handler.faults = {"/1aa4c03/data/ori/10M/train/wiki0000.jsonl.zst": [503, 500]}
    res = prepare(_cfg(url, tmp_path), out_dir=tmp_path / "out")
    assert res.stats["source"] == "github"
    assert res.stats["checksums_verified"] >= 10
    assert _Handler.hits.count("/1aa4c03/data/ori/10M/train/wiki0000.jsonl.zst") == 3  # 2 faults + success
    assert (tmp_path / "raw/1aa4c03/ori/10M/train/wiki0000.jsonl.zst").exists()
    assert res.stats["documents"]["ori"]["train"]["docs"] > 1000
    # a second run uses the download cache: no new requests
    n = len(_Handler.hits)
    prepare(_cfg(url, tmp_path), out_dir=tmp_path / "out2")
    assert len(_Handler.hits) == n
    assert (tmp_path / "out/corpus/ori/train.jsonl").read_bytes() == (tmp_path / "out2/corpus/ori/train.jsonl").read_bytes()


def test_corrupted_download_fails_checksum(tmp_path, release_server, monkeypatch):
    url, dst = release_server
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    f = dst / "leaner/10M/train/math0000.jsonl"
    f.write_text(f.read_text().replace("Evaluate", "Evaluatf", 1))
    with pytest.raises(InputError, match=r"math0000\.jsonl: checksum mismatch"):
        prepare(_cfg(url, tmp_path), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_download_404_is_immediate_and_names_url(tmp_path, release_server):
    url, _ = release_server
    with pytest.raises(InputError, match=r"/nope\.jsonl: download failed: HTTP 404"):
        download(url + "/nope.jsonl", tmp_path / "x", retries=3, backoff=0.01)
    assert _Handler.hits == ["/nope.jsonl"] and not (tmp_path / "x").exists()


def test_download_gives_up_after_retries(tmp_path, release_server):
    url, _ = release_server
    _Handler.faults = {"/a": [500, 500, 500]}
    with pytest.raises(InputError, match=r"download failed after 3 attempts"):
        download(url + "/a", tmp_path / "a", retries=2, backoff=0.01)


def test_release_index_lists_checksums_for_the_10m_tier():
    idx = ReleaseIndex.load()
    files = idx.corpus_files("leaner", "10M", "validation", "web")
    assert files == ["leaner/10M/validation/web0000.jsonl"] and idx.files[files[0]]
