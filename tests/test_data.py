"""prepare stage: schema normalisation for every released record shape, hash pairing, corrupt inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import zstandard

from tinyhelen.data import (GENRES, DataConfig, ReleaseIndex, normalise, prepare, read_docs, sha256_text)
from tinyhelen.io import InputError

P = Path("x.jsonl")


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


# ------------------------------------------------------------------ the real release: every genre, pairing
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
    assert all(by_id[d["doc_id"]]["text"] == d["text"] for d in math)  # math is not simplified
    code = [d for d in ori if d["genre"] == "code"]
    assert code and all(d["parts"]["prompt"] and d["parts"]["response"] for d in code)
    # pairing hash really is sha256 of the original text for the shapes where text == original
    web = [d for d in ori if d["genre"] in ("web", "book", "conversation")]
    assert all(sha256_text(d["text"]) == d["doc_id"] for d in web)


def test_budget_and_splits(prepared, small_data_cfg):
    meta = json.loads((prepared / "corpus/ori/validation.jsonl").read_text().splitlines()[0])
    assert meta["split"] == "validation"
    # the budget caps words per genre, except that one (possibly long) document is always kept
    by_genre: dict[str, list[int]] = {}
    for d in read_docs(prepared / "corpus/ori/train.jsonl"):
        by_genre.setdefault(d["genre"], []).append(len(d["text"].split()))
    for genre, lens in by_genre.items():
        assert len(lens) == 1 or sum(lens) <= small_data_cfg.max_words_per_genre["train"], genre


def test_glue_and_eval_normalised(prepared):
    rows = [json.loads(x) for x in (prepared / "glue/mrpc_train.jsonl").read_text().splitlines()]
    assert len(rows) == 2730 and set(rows[0]) == {"task", "split", "idx", "text_a", "text_b", "label"}
    assert rows[0]["task"] == "mrpc" and rows[0]["split"] == "train" and rows[0]["text_b"]
    cola = json.loads((prepared / "glue/cola_test.jsonl").read_text().splitlines()[0])
    assert cola["text_b"] is None and cola["label"] in (0, 1)
    allq = [json.loads(x) for x in (prepared / "eval/all.jsonl").read_text().splitlines()]
    assert len(allq) == 1594 and all(q["bin"] in ("0-7", "7-8", "8-9", "9-10") for q in allq)


def test_prepare_is_deterministic(tmp_path, small_data_cfg, prepared):
    prepare(small_data_cfg, out_dir=tmp_path / "again")
    for f in ("corpus/ori/train.jsonl", "corpus/leaner/validation.jsonl", "glue/rte_test.jsonl"):
        assert (tmp_path / "again" / f).read_bytes() == (prepared / f).read_bytes()


# ------------------------------------------------------------------ corrupt inputs
def _copy_release(data_dir: Path, dst: Path, genres=("wiki", "math")) -> Path:
    """A minimal copy of the release (only some genres) without the manifest."""
    for p in data_dir.rglob("*"):
        rel = p.relative_to(data_dir)
        if p.is_file() and (rel.parts[0] in ("leaner", "ori") and (
                rel.parts[1] in ("glue", "eval") or any(rel.name.startswith(g) for g in genres))):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / rel)
    return dst


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(source="local", local_dir=str(root), genres=["wiki", "math"], glue_tasks=["wnli"], **kw)


def test_truncated_zst_is_a_clear_error_and_leaves_no_output(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    root = _copy_release(data_dir, tmp_path / "rel")
    f = root / "ori/10M/train/wiki0000.jsonl.zst"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"wiki0000\.jsonl\.zst:\d+: .*truncated or corrupt"):
        prepare(_cfg(root), out_dir=out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_truncated_zst_recovery_keeps_complete_records(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    root = _copy_release(data_dir, tmp_path / "rel")
    f = root / "ori/10M/train/wiki0000.jsonl.zst"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    res = prepare(_cfg(root, on_bad_record="skip"), out_dir=tmp_path / "out")
    assert res.stats["truncated_files"] == 1
    n_ori = res.stats["documents"]["ori"]["train"]["docs"]
    full = prepare(_cfg(data_dir), out_dir=tmp_path / "full").stats["documents"]["ori"]["train"]["docs"]
    assert 0 < n_ori < full  # the complete records before the damage are kept, and counted


def test_malformed_json_line_names_file_and_line(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    root = _copy_release(data_dir, tmp_path / "rel")
    f = root / "leaner/10M/train/math0000.jsonl"
    lines = f.read_text().splitlines()
    lines[41] = lines[41][:30]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"math0000\.jsonl:42: malformed JSON line"):
        prepare(_cfg(root), out_dir=tmp_path / "out")
    res = prepare(_cfg(root, on_bad_record="skip"), out_dir=tmp_path / "out2")
    assert res.stats["skipped_records"] == 1


def test_missing_file_and_missing_genre(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    root = _copy_release(data_dir, tmp_path / "rel")
    (root / "ori/10M/validation/wiki0001.jsonl.zst").unlink()
    with pytest.raises(InputError, match=r"wiki0001\.jsonl\.zst: file missing"):
        prepare(_cfg(root), out_dir=tmp_path / "out")
    for p in (root / "ori/10M").rglob("wiki*"):
        p.unlink()
    with pytest.raises(InputError, match=r"genre 'wiki': no ori files"):
        prepare(_cfg(root), out_dir=tmp_path / "out")


def test_checksum_mismatch_is_detected(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("TINYHELEN_DATA", raising=False)
    root = _copy_release(data_dir, tmp_path / "rel")
    shutil.copy(data_dir / "MANIFEST.sha256", root / "MANIFEST.sha256")
    f = root / "leaner/10M/train/math0000.jsonl"
    f.write_text(f.read_text().replace("Evaluate", "Evaluatf", 1))
    with pytest.raises(InputError, match=r"math0000\.jsonl: checksum mismatch"):
        prepare(_cfg(root), out_dir=tmp_path / "out")


def test_bad_params_name_the_key():
    from tinyhelen.config import ParamsError, validate_section

    with pytest.raises(ParamsError, match=r"data\.genres: .*unknown genre\(s\) \['poetry'\]"):
        validate_section("data", {"genres": ["web", "poetry"]})
    with pytest.raises(ParamsError, match=r"data: .*used by both splits"):
        validate_section("data", {"splits": {"train": ["train"], "validation": ["train"]}})
    with pytest.raises(ParamsError, match=r"data\.max_ngram: Extra inputs are not permitted"):
        validate_section("data", {"max_ngram": 3})


def test_release_index_knows_every_local_file(data_dir):
    idx = ReleaseIndex.load()
    manifest = [ln.split()[1].removeprefix("./") for ln in (data_dir / "MANIFEST.sha256").read_text().splitlines()]
    missing = [m for m in manifest if m.startswith(("leaner/", "ori/")) and m not in idx.files]
    assert missing == []
    assert idx.corpus_files("ori", "10M", "train", "web") == ["ori/10M/train/web0000.jsonl.zst"]


def test_zstd_helper_roundtrip(tmp_path):
    from tinyhelen.io import read_jsonl

    f = tmp_path / "a.jsonl.zst"
    f.write_bytes(zstandard.ZstdCompressor().compress(b'{"a": 1}\n{"a": 2}\n'))
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]
