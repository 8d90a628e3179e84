"""Leaner-GLUE creation: replay, the live path on loopback (rewrite + verify), outages, loaders, parsers."""
from __future__ import annotations


import pytest

from tinyhelen.config import ParamsError
from tinyhelen.io import read_jsonl, write_jsonl
from tinyhelen.benchmarks.leaner_glue import LeanerGlueConfig, leaner_glue, load_glue_tsv, parse_answer, parse_item
from tinyhelen.llm import LLMConfig, LLMFailure

# a small fixture of "original" GLUE items in the prepared glue schema (the offline release has none)
ORIGINAL = {
    "cola_validation": [("The sailors rode the breeze clear of the rocks.", None, 1),
                        ("The more books I ask to whom he will give, the more he reads.", None, 1),
                        ("Mary believes that Bill to have left.", None, 0),
                        ("They drank the pub dry.", None, 1)],
    "stsb_validation": [("A man is playing a large flute.", "A man is playing a flute.", 3.8),
                        ("A plane is taking off.", "An air plane is taking off.", 5.0),
                        ("A woman is slicing an onion.", "A man is dancing.", 0.0)],
    "mnli_validation_matched": [("The new rights are nice enough.", "Everyone really likes the newest benefits.", 1),
                                ("This site includes a list of all award winners.", "The site has no winners.", 2),
                                ("Conceptually cream skimming has two basic dimensions.",
                                 "Product and geography are what make cream skimming work.", 1)],
}


from conftest import fake_llm_calls as _calls  # noqa: E402
from conftest import fake_llm_config as _llm  # noqa: E402


@pytest.fixture()
def original_glue(tmp_path):
    d = tmp_path / "glue_original"
    for name, items in ORIGINAL.items():
        task, split = name.split("_", 1)
        write_jsonl(d / f"{name}.jsonl", [{"task": task, "split": split, "idx": i, "text_a": a, "text_b": b,
                                           "label": lab} for i, (a, b, lab) in enumerate(items)])
    return d


def test_glue_replay_is_the_release(prepared, tmp_path):
    m = leaner_glue(LeanerGlueConfig(), LLMConfig(), prepared / "glue", tmp_path / "out", tmp_path / "q.jsonl")
    src = sorted((prepared / "glue").glob("*.jsonl"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl")) == [p.name for p in src]
    for p in src:
        assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()
    assert m["dropped"] == 0 and m["kept"] == sum(len(read_jsonl(p)) for p in src)


def test_glue_openai_needs_a_source():
    with pytest.raises(ParamsError, match="leaner_glue.source_dir"):
        leaner_glue(LeanerGlueConfig(), LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1"),
                    "x", "y", "z")


def test_glue_openai_rewrite_and_verify(server, original_glue, tmp_path):
    cfg = LeanerGlueConfig(tasks=["cola", "stsb", "mnli"], source_dir=str(original_glue), stsb_tolerance=1.0)
    llm = _llm(server, tmp_path)
    m = leaner_glue(cfg, llm, "unused", tmp_path / "a", tmp_path / "qa.jsonl")
    n = sum(len(v) for v in ORIGINAL.values())
    assert m["kept"] + m["dropped"] == n and m["kept"] > 0
    assert m["llm"]["requests"] == n + n  # one rewrite + one independent verify per item
    for name, items in ORIGINAL.items():
        task = name.split("_", 1)[0]
        recs = read_jsonl(tmp_path / "a" / f"{name}.jsonl")
        assert m["tasks"][task]["kept"] == len(recs)
        for r in recs:
            a, b, label = items[r["idx"]]
            assert r["label"] == label and (r["text_b"] is None) == (b is None)
            assert set(r) == {"task", "split", "idx", "text_a", "text_b", "label"}
    dropped = read_jsonl(tmp_path / "qa.jsonl")
    assert len(dropped) == m["dropped"] and all(d["reason"] == "label_mismatch" for d in dropped)
    before = _calls(server)
    leaner_glue(cfg, llm, "unused", tmp_path / "b", tmp_path / "qb.jsonl")
    assert _calls(server) == before
    for name in ORIGINAL:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    prov = m["provenance"]
    assert prov["backend"] == "openai" and prov["models"][0]["model"] == "fake" and len(prov["templates"]) == 2
    assert "seconds" not in m


def test_glue_outage_fails_and_writes_nothing(original_glue, tmp_path):
    cfg = LeanerGlueConfig(tasks=["cola"], source_dir=str(original_glue))
    down = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=0, progress=False,
                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LLMFailure, match="connection"):
        leaner_glue(cfg, down, "unused", tmp_path / "out", tmp_path / "q.jsonl")
    assert not (tmp_path / "out").exists() and not (tmp_path / "q.jsonl").exists()


def test_glue_tsv_loader(tmp_path):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tMary to left.\n")
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "train.tsv").write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n")
    cola = load_glue_tsv(tmp_path, "cola")
    assert [(r["split"], r["text_a"], r["label"]) for r in cola["validation"]] == [
        ("validation", "The sailors rode the breeze.", 1), ("validation", "Mary to left.", 0)]
    assert load_glue_tsv(tmp_path, "stsb")["train"][0]["label"] == 5.0


def test_glue_parsers():
    assert parse_item(True)("A: one\nB: two\n<<<END>>>") == {"text_a": "one", "text_b": "two"}
    with pytest.raises(ValueError):
        parse_item(True)("A: one\n<<<END>>>")
    assert parse_answer("mnli")("ANSWER: Neutral\n<<<END>>>") == 1
    assert parse_answer("stsb")("ANSWER: 3.5\n<<<END>>>") == 3.5
    for bad in ("ANSWER: maybe\n<<<END>>>", "ANSWER: entailment"):
        with pytest.raises(ValueError):
            parse_answer("rte")(bad)
    with pytest.raises(ValueError):
        parse_answer("stsb")("ANSWER: 7\n<<<END>>>")


