"""prepare stage: schema normalisation for every released record shape, hash pairing on the fixture release,
what prepare reports, corrupt/empty input, and runs that were killed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from tinyhelen.data import (GENRES, GLUE_TASKS, DataConfig, ReleaseIndex, normalise, prepare, read_docs,
                            sha256_text)
from tinyhelen.io import InputError, atomic_path, iter_jsonl, read_jsonl

P = Path("x.jsonl")
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ normalisation of each record shape
def test_web_book_hash_is_text():
    h, text, parts = normalise("web", "ori", {"text": "Hello world.", "meta": {}}, P, 1)
    assert (h, text, parts) == (sha256_text("Hello world."), "Hello world.", None)


def test_wiki_ori_strips_tags_before_hashing():
    h, text, _ = normalise("wiki", "ori", {"91022": "<br>\nMentone, Texas\nMentone is a city. "}, P, 3)
    assert text == "Mentone, Texas\nMentone is a city."
    assert h == sha256_text("Mentone, Texas\nMentone is a city.")


def test_wiki_leaner_literal_newlines_and_hash_field():
    rec = {"idx": 1, "text": "Matthew\\nMatthew was a king.", "hash": "a" * 64}
    h, text, _ = normalise("wiki", "leaner", rec, P, 1)
    assert h == "a" * 64 and text == "Matthew\nMatthew was a king."


def test_textbook_ori_uses_textbook_field():
    h, text, _ = normalise("textbook", "ori", {"text": "seed", "textbook": "Lesson 1"}, P, 1)
    assert text == "Lesson 1" and h == sha256_text("Lesson 1")


def test_code_pairs_prompt_and_response():
    rec = {"prompt": "Write f.", "response": "def f(): pass", "programming_language": "Python"}
    h, text, parts = normalise("code", "ori", rec, P, 1)
    assert h == sha256_text("Write f. def f(): pass")
    assert text == "Write f.\n\ndef f(): pass"
    assert parts == {"prompt": "Write f.", "response": "def f(): pass"}


def test_math_hash_is_problem_and_hints():
    rec = {"problem": "1+1?", "hints": ["$= 2$"], "hash": "b" * 64}
    h, text, _ = normalise("math", "ori", rec, P, 1)
    assert h == sha256_text("1+1? $= 2$") and text == "1+1?\n$= 2$"


def test_conversation_ori_element_must_be_string():
    h, text, _ = normalise("conversation", "ori", '"Hi." "Bye."', P, 1)
    assert text == '"Hi." "Bye."'
    with pytest.raises(InputError, match=r"x.jsonl:4: conversation element must be a string"):
        normalise("conversation", "ori", {"text": 1}, P, 4)


@pytest.mark.parametrize("genre,side,rec,msg", [
    ("web", "ori", {"meta": {}}, "missing field 'text'"),
    ("code", "leaner", {"prompt": "p", "response": 3, "hash": "c" * 64}, "field 'response' should be str"),
    ("wiki", "ori", {"1": "a", "2": "b"}, "single {id: text} pair"),
    ("book", "leaner", {"text": "t", "hash": "nothex"}, "not a sha256"),
    ("web", "ori", {"text": "   "}, "empty document text"),
])
def test_bad_records_name_file_and_line(genre, side, rec, msg):
    with pytest.raises(InputError, match=r"x\.jsonl:7: .*" + msg.replace("{", r"\{").replace("}", r"\}")):
        normalise(genre, side, rec, P, 7)


# ------------------------------------------------------------------ the fixture release: every genre, pairing
def test_fixture_release_pairs_exactly_and_is_verified(tmp_path, data_dir):
    """Every leaner record of the fixture pairs with an original; every genre, split and GLUE/Eval file."""
    res = prepare(DataConfig(local_dir=str(data_dir)), out_dir=tmp_path / "p")
    st = res.stats
    assert st["unpaired_leaner"] == 0 and st["paired"] > 200
    assert st["verified_input"] is True and st["checksums_verified"] == st["files_read"] == 70
    assert (st["missing_files"], st["unknown_files"], st["genres_missing"], st["genres_one_side"]) == ([], [], [], [])
    assert st["absent_files"] == 7 and st["records_lost"] == 0
    table = res.detail["documents"]
    for side in ("leaner", "ori"):
        for split in ("train", "validation"):
            assert set(table[side][split]) == set(GENRES), (side, split)
    assert {n.split("_")[0] for n in res.detail["glue_items"]} == set(GLUE_TASKS)
    glue_files = {p.stem for p in (data_dir / "leaner/glue").glob("*.jsonl")}
    assert set(res.detail["glue_items"]) == glue_files
    files = res.detail["files"]
    assert all(f["kept"] == f["records"] for f in files.values())  # nothing lost


def test_every_released_genre_pairs_by_hash(prepared):
    lean = list(read_docs(prepared / "corpus/leaner/train.jsonl"))
    ori = list(read_docs(prepared / "corpus/ori/train.jsonl"))
    assert {d["genre"] for d in ori} == set(GENRES)
    assert [d["doc_id"] for d in lean] == [d["doc_id"] for d in ori]  # paired, same order
    for d in ori:
        assert set(d) == {"doc_id", "genre", "split", "side", "text", "parts"}
        assert d["side"] == "ori" and d["split"] == "train" and d["text"].strip()
    by_id = {d["doc_id"]: d for d in lean}
    math = [d for d in ori if d["genre"] == "math"]
    assert math and all(by_id[d["doc_id"]]["text"] == d["text"] for d in math)  # math is not simplified
    code = [d for d in ori if d["genre"] == "code"]
    assert code and all(d["parts"]["prompt"] and d["parts"]["response"] for d in code)
    # pairing hash really is sha256 of the original text for the shapes where text == original
    web = [d for d in ori if d["genre"] in ("web", "book", "conversation")]
    assert web and all(sha256_text(d["text"]) == d["doc_id"] for d in web)


def test_budget_and_splits(prepared, small_data_cfg):
    meta = json.loads((prepared / "corpus/ori/validation.jsonl").read_text().splitlines()[0])
    assert meta["split"] == "validation"
    # the budget caps words per genre, except that one (possibly long) document is always kept
    by_genre: dict[str, list[int]] = {}
    for d in read_docs(prepared / "corpus/ori/train.jsonl"):
        by_genre.setdefault(d["genre"], []).append(len(d["text"].split()))
    for genre, lens in by_genre.items():
        assert len(lens) == 1 or sum(lens) <= small_data_cfg.max_words_per_genre["train"], genre
    assert any(len(lens) > 1 for lens in by_genre.values())


def test_glue_and_eval_normalised(prepared, data_dir):
    src = data_dir / "leaner/glue/mrpc_train.jsonl"
    rows = read_jsonl(prepared / "glue/mrpc_train.jsonl")
    assert len(rows) == len(read_jsonl(src)) > 100 and set(rows[0]) == {"task", "split", "idx", "text_a", "text_b",
                                                                       "label"}
    assert rows[0]["task"] == "mrpc" and rows[0]["split"] == "train" and rows[0]["text_b"]
    cola = read_jsonl(prepared / "glue/cola_test.jsonl")[0]
    assert cola["text_b"] is None and cola["label"] in (0, 1)
    allq = read_jsonl(prepared / "eval/all.jsonl")
    assert len(allq) == len(read_jsonl(data_dir / "leaner/eval/all.jsonl"))
    assert {q["bin"] for q in allq} == {"0-7", "7-8", "8-9", "9-10"}
    assert len(read_jsonl(prepared / "eval/inner_comparison.jsonl")) == 31


def test_prepare_is_deterministic(tmp_path, small_data_cfg, prepared):
    prepare(small_data_cfg, out_dir=tmp_path / "again")
    for f in ("corpus/ori/train.jsonl", "corpus/leaner/validation.jsonl", "glue/rte_test.jsonl"):
        assert (tmp_path / "again" / f).read_bytes() == (prepared / f).read_bytes()


def test_stage_metrics_are_deterministic_and_hold_no_wall_clock(tmp_path, data_dir):
    from tinyhelen import timing

    outs = []
    for i in range(2):
        timing.clear()
        prepare(DataConfig(local_dir=str(data_dir), genres=["wiki", "math"]), out_dir=tmp_path / f"p{i}",
                metrics_path=tmp_path / f"m{i}.json", detail_path=tmp_path / f"d{i}.json")
        outs.append((tmp_path / f"m{i}.json").read_bytes() + (tmp_path / f"d{i}.json").read_bytes())
        assert set(timing.recorded()) >= {"seconds", "words_per_s"}
    assert outs[0] == outs[1] and b"seconds" not in outs[0] and b"per_s" not in outs[0]


@pytest.mark.full_data
@pytest.mark.slow
def test_full_10m_tier_pairs_every_leaner_document(tmp_path, full_data_dir):
    """All 5,442 leaner documents of the released 10M tier pair with an original (and 2,596 originals have
    no leaner twin: all of ori code train, one textbook, one web document)."""
    st = prepare(DataConfig(local_dir=str(full_data_dir)), out_dir=tmp_path / "p").stats
    assert (st["paired"], st["unpaired_leaner"], st["unpaired_ori"]) == (5442, 0, 2596)
    assert st["verified_input"] is True and st["checksums_verified"] == 70 and st["absent_files"] == 7


@pytest.mark.full_data
@pytest.mark.slow
def test_fixture_release_is_regenerated_byte_for_byte(tmp_path, full_data_dir, data_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, str(REPO / "tests/fixtures/make_release.py"), "--src", str(full_data_dir),
                    "--out", str(tmp_path / "release")], check=True, env=env, capture_output=True)
    made = sorted(p.relative_to(tmp_path / "release") for p in (tmp_path / "release").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    for rel in made:
        assert (tmp_path / "release" / rel).read_bytes() == (data_dir / rel).read_bytes(), rel


# ------------------------------------------------------------------ corrupt, empty and incomplete input
def _copy_release(data_dir: Path, dst: Path, genres=("wiki", "math"), manifest: bool = False) -> Path:
    """A copy of the fixture release (only some genres; the manifest only if asked)."""
    for p in data_dir.rglob("*"):
        rel = p.relative_to(data_dir)
        if not p.is_file():
            continue
        keep = len(rel.parts) > 2 and (rel.parts[1] in ("glue", "eval") or rel.name == "statistics.txt"
                                       or any(rel.name.startswith(g) for g in genres))
        if keep or rel.name == "ABSENT_FILES.txt" or (manifest and rel.name == "MANIFEST.sha256"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / rel)
    return dst


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(local_dir=str(root), genres=["wiki", "math"], glue_tasks=["wnli"], **kw)


def _frames(lines: list[bytes], per_frame: int) -> tuple[bytes, list[int]]:
    """A multi-frame .zst of ``lines`` (``per_frame`` lines a frame) and the offset where each frame starts."""
    out, starts = b"", []
    for i in range(0, len(lines), per_frame):
        starts.append(len(out))
        out += zstandard.ZstdCompressor(level=3).compress(b"".join(lines[i:i + per_frame]))
    return out, starts


def _ori_wiki_lines(data_dir: Path) -> list[bytes]:
    raw = (data_dir / "ori/10M/train/wiki0000.jsonl.zst").read_bytes()
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw).splitlines(keepends=True)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_zst_keeps_every_complete_record_and_names_the_true_line(tmp_path, data_dir, damage):
    """A .zst of 6-line frames; the damage (cut, or a garbage frame header) is in frame 5: the 24 lines of
    frames 1-4 are complete records, line 25 is where reading stops. The whole file is one read of the
    decoder's input: nothing decoded before the damage is lost with that read."""
    lines = _ori_wiki_lines(data_dir)
    assert len(lines) >= 36
    blob, starts = _frames(lines[:36], 6)
    f = tmp_path / "wiki0000.jsonl.zst"
    if damage == "truncated":
        f.write_bytes(blob[:starts[4] + (starts[5] - starts[4]) // 2])
    else:
        f.write_bytes(blob[:starts[4]] + b"\x00" * 8 + blob[starts[4] + 8:])
    with pytest.raises(InputError, match=r"wiki0000\.jsonl\.zst:25: cannot read line 25: .* after 24 complete lines"):
        list(iter_jsonl(f))
    stats: dict[str, int] = {}
    kept = [rec for _, rec in iter_jsonl(f, skip_bad=True, stats=stats)]
    assert kept == [json.loads(x) for x in lines[:24]]
    assert stats["stopped_at_line"] == 25 and stats["truncated_files"] == 1


def test_truncated_zst_in_prepare_error_and_skip(tmp_path, data_dir):
    root = _copy_release(data_dir, tmp_path / "rel")
    f = root / "ori/10M/train/wiki0000.jsonl.zst"
    lines = _ori_wiki_lines(data_dir)
    blob, starts = _frames(lines, 10)
    f.write_bytes(blob[:starts[3] + 10])  # frames 1-3 complete: 30 records
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"wiki0000\.jsonl\.zst:31: cannot read line 31"):
        prepare(_cfg(root), out_dir=out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    res = prepare(_cfg(root, on_bad_record="skip"), out_dir=out)
    detail = res.detail["files"]["ori/10M/train/wiki0000.jsonl.zst"]
    assert detail == {"records": 30, "kept": 30, "skipped": 0, "partial": 0, "stopped_at": "line 31",
                      "problem": "truncated or corrupt"}
    assert res.stats["truncated_files"] == 1 and res.stats["records_lost"] == 0
    full = prepare(_cfg(data_dir), out_dir=tmp_path / "full").stats
    assert full["unpaired_leaner"] == 0
    assert res.stats["unpaired_leaner"] == len(lines) - 30  # the twins of the records after the damage


def test_truncated_conversation_array_keeps_complete_elements(tmp_path, data_dir):
    root = _copy_release(data_dir, tmp_path / "rel", genres=("conversation",))
    f = root / "ori/10M/train/conversation0000.json.zst"
    arr = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(f.read_bytes()))
    assert len(arr) >= 2
    text = json.dumps(arr).encode()
    cut = text.index(json.dumps(arr[1]).encode()) + 20  # inside the second element
    rest = zstandard.ZstdCompressor().compress(text[cut:])
    f.write_bytes(zstandard.ZstdCompressor().compress(text[:cut]) + rest[:len(rest) // 2])  # 2nd frame cut short
    cfg = DataConfig(local_dir=str(root), genres=["conversation"], glue_tasks=["wnli"])
    with pytest.raises(InputError, match=r"conversation0000\.json\.zst: cannot read element 2 of the JSON array"):
        prepare(cfg, out_dir=tmp_path / "out")
    res = prepare(cfg.model_copy(update={"on_bad_record": "skip"}), out_dir=tmp_path / "out")
    d = res.detail["files"]["ori/10M/train/conversation0000.json.zst"]
    assert (d["kept"], d["partial"], d["stopped_at"]) == (1, 1, "element 2")
    assert res.stats["records_lost"] == 1


def test_malformed_json_line_names_file_and_line(tmp_path, data_dir):
    root = _copy_release(data_dir, tmp_path / "rel")
    f = root / "leaner/10M/train/math0000.jsonl"
    lines = f.read_text().splitlines()
    lines[41] = lines[41][:30]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"math0000\.jsonl:42: malformed JSON line"):
        prepare(_cfg(root), out_dir=tmp_path / "out")
    res = prepare(_cfg(root, on_bad_record="skip"), out_dir=tmp_path / "out2")
    assert res.stats["skipped_records"] == res.stats["records_lost"] == 1
    assert res.detail["files"]["leaner/10M/train/math0000.jsonl"]["skipped"] == 1


@pytest.mark.parametrize("name,content", [
    ("leaner/10M/test/wiki0000.jsonl", b""), ("leaner/10M/test/wiki0000.jsonl", b"\n\n"),
    ("ori/10M/test/wiki0002.jsonl.zst", b""), ("ori/10M/test/wiki0002.jsonl.zst", zstandard.ZstdCompressor().compress(b"")),
])
def test_empty_file_is_an_error_or_a_counted_warning(tmp_path, data_dir, name, content, caplog):
    root = _copy_release(data_dir, tmp_path / "rel")
    (root / name).write_bytes(content)
    with pytest.raises(InputError, match=re.escape(name.split("/")[-1]) + r": empty file: no records"):
        prepare(_cfg(root), out_dir=tmp_path / "out")
    res = prepare(_cfg(root, on_bad_record="skip"), out_dir=tmp_path / "out")
    assert res.stats["empty_files"] == 1 and res.detail["files"][name]["problem"] == "empty file"
    assert "empty file" in caplog.text


def test_missing_manifest_is_unverified_input(tmp_path, data_dir, caplog):
    root = _copy_release(data_dir, tmp_path / "rel")  # no MANIFEST.sha256
    st = prepare(_cfg(root), out_dir=tmp_path / "out").stats
    assert st["checksums_verified"] == 0 and st["verified_input"] is False
    assert "no MANIFEST.sha256" in caplog.text and "unverified input" in caplog.text
    with_manifest = _copy_release(data_dir, tmp_path / "rel2", manifest=True)
    st = prepare(_cfg(with_manifest), out_dir=tmp_path / "out2").stats
    assert st["verified_input"] is True and st["checksums_verified"] == st["files_read"]


def test_unknown_extra_files_are_read_and_reported(tmp_path, data_dir, caplog):
    root = _copy_release(data_dir, tmp_path / "rel", manifest=True)
    extra = root / "ori/10M/validation/wiki0007.jsonl.zst"  # not in the release index: read, and reported
    extra.write_bytes(zstandard.ZstdCompressor().compress(b'{"1": "An extra page."}\n{"2": "Another one."}\n'))
    (root / "leaner/10M/train/poetry0000.jsonl").write_text('{"text": "a poem", "hash": "%s"}\n' % ("0" * 64))
    (root / "notes.txt").write_text("not part of the release\n")
    base = prepare(_cfg(data_dir), out_dir=tmp_path / "base").stats
    st = prepare(_cfg(root), out_dir=tmp_path / "out").stats
    assert st["unknown_files"] == ["leaner/10M/train/poetry0000.jsonl", "notes.txt",
                                   "ori/10M/validation/wiki0007.jsonl.zst"]
    assert st["unpaired_ori"] == base["unpaired_ori"] + 2  # the extra file's records were read
    assert st["verified_input"] is False  # the extra corpus file is not in the copy's manifest
    assert "unknown to the release index" in caplog.text and "wiki0007" in caplog.text


def test_genre_on_one_side_only_is_reported(tmp_path, data_dir, caplog):
    root = _copy_release(data_dir, tmp_path / "rel")
    for p in (root / "ori/10M").rglob("wiki*"):
        p.unlink()
    st = prepare(_cfg(root), out_dir=tmp_path / "out").stats
    assert st["genres_one_side"] == ["wiki: leaner only"] and st["genres_missing"] == ["10M/ori/wiki"]
    assert st["missing_files"] == ["ori/10M/test/wiki0002.jsonl.zst", "ori/10M/train/wiki0000.jsonl.zst",
                                   "ori/10M/validation/wiki0001.jsonl.zst"]
    assert st["unpaired_leaner"] > 0 and "wiki: leaner only" in caplog.text
    for p in (root / "leaner/10M").rglob("wiki*"):
        p.unlink()
    with pytest.raises(InputError, match=r"genre 'wiki': no file on either side"):
        prepare(_cfg(root), out_dir=tmp_path / "out")


def test_missing_file_is_reported_or_an_error_when_the_manifest_promises_it(tmp_path, data_dir):
    root = _copy_release(data_dir, tmp_path / "rel")
    (root / "ori/10M/validation/wiki0001.jsonl.zst").unlink()
    st = prepare(_cfg(root), out_dir=tmp_path / "out").stats
    assert st["missing_files"] == ["ori/10M/validation/wiki0001.jsonl.zst"]
    root2 = _copy_release(data_dir, tmp_path / "rel2", manifest=True)
    gone = root2 / "ori/10M/validation/wiki0001.jsonl.zst"
    gone.unlink()
    with pytest.raises(InputError, match=r"wiki0001\.jsonl\.zst: file missing .*listed in MANIFEST") as exc:
        prepare(_cfg(root2), out_dir=tmp_path / "out2")
    assert f"no file at {gone.absolute()} (" in str(exc.value), "the error names the path it looked at"
    gone.symlink_to(tmp_path / "elsewhere" / gone.name)  # a link to a file that is not there: still missing
    with pytest.raises(InputError, match=r"file missing") as exc:
        prepare(_cfg(root2), out_dir=tmp_path / "out2")
    assert f"{gone.absolute()} is a broken symlink (to {tmp_path / 'elsewhere' / gone.name})" in str(exc.value)


def test_checksum_mismatch_is_detected(tmp_path, data_dir):
    root = _copy_release(data_dir, tmp_path / "rel", manifest=True)
    f = root / "leaner/10M/train/math0000.jsonl"
    f.write_text(f.read_text().replace("Evaluate", "Evaluatf", 1))
    with pytest.raises(InputError, match=r"math0000\.jsonl: checksum mismatch"):
        prepare(_cfg(root), out_dir=tmp_path / "out")


def test_bad_params_name_the_key():
    from tinyhelen.config import ParamsError
    from tinyhelen.params import validate as validate_section

    with pytest.raises(ParamsError, match=r"data\.genres: .*unknown genre\(s\) \['poetry'\]"):
        validate_section("data", {"genres": ["web", "poetry"]})
    with pytest.raises(ParamsError, match=r"data: .*used by both splits"):
        validate_section("data", {"splits": {"train": ["train"], "validation": ["train"]}})
    with pytest.raises(ParamsError, match=r"data\.max_ngram: Extra inputs are not permitted"):
        validate_section("data", {"max_ngram": 3})
    with pytest.raises(ParamsError, match=r"data\.tier: Input should be '10M' or '100M'"):
        validate_section("data", {"tier": "1B"})


def test_release_index_knows_every_fixture_file(data_dir):
    idx = ReleaseIndex.load()
    manifest = [ln.split()[1].removeprefix("./") for ln in (data_dir / "MANIFEST.sha256").read_text().splitlines()]
    assert [m for m in manifest if m.startswith(("leaner/", "ori/")) and m not in idx.files] == []
    assert idx.corpus_files("ori", "10M", "train", "web") == ["ori/10M/train/web0000.jsonl.zst"]


def test_zstd_helper_roundtrip(tmp_path):
    f = tmp_path / "a.jsonl.zst"
    f.write_bytes(zstandard.ZstdCompressor().compress(b'{"a": 1}\n{"a": 2}\n'))
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]


# ------------------------------------------------------------------ runs that did not finish
def test_next_run_removes_what_a_killed_prepare_left(tmp_path, data_dir):
    """A process killed inside atomic_path leaves its temp folder; the next write of the same target removes
    it, and never a live process's temp."""
    out = tmp_path / "prepared"
    code = ("import os, signal, sys\nfrom tinyhelen.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    (tmp / 'corpus').mkdir(parents=True)\n    (tmp / 'corpus' / 'big.jsonl').write_text('x' * 1000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)],
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.wait() == -9
    left = list(tmp_path.glob(".prepared.*.tmp"))
    assert len(left) == 1 and f"-pid{proc.pid}." in left[0].name and not out.exists()
    legacy = tmp_path / ".prepared.abcd1234.tmp"  # written before temp names carried their owner
    legacy.mkdir()
    with atomic_path(out) as live:  # this (live) process's temp of the same target is never removed
        live.mkdir()
        prepare(DataConfig(local_dir=str(data_dir), genres=["wiki"], glue_tasks=["wnli"]), out_dir=out)
        assert live.parent.exists()
        assert not left[0].exists() and not legacy.exists()
        shutil.rmtree(out)
    assert out.is_dir() and list(tmp_path.glob(".prepared.*.tmp")) == []
