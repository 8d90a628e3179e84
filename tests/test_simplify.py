"""Simplify stage: chunking, validators, replay (byte-identical to the release), openai path on loopback."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tinyhelen import timing
from tinyhelen.config import ParamsError
from tinyhelen.data import read_docs
from tinyhelen.io import read_jsonl, write_jsonl
from tinyhelen.llm import LLMConfig, LLMFailure
from tinyhelen.llm.fake_server import FakeServer
from tinyhelen.simplify import (SimplifyConfig, Validator, assemble_corpus, build_wordlist, chunk_text, fitted_budget,
                                load_wordlist, simplify_genre, split_units, write_genre)

GENRES = ["book", "code", "conversation", "math", "textbook", "web", "wiki"]


@pytest.fixture(scope="module")
def server():
    srv = FakeServer(0, slow_s=0.6).start()
    yield srv
    srv.stop()


def shards(root: Path, side: str) -> dict[str, Path]:
    return {s: root / "corpus" / side / f"{s}.jsonl" for s in ("train", "validation")}


def test_units_and_chunks_roundtrip(prepared):
    docs = list(read_docs(prepared / "corpus" / "ori" / "train.jsonl"))
    assert docs
    for d in docs[:200]:
        assert "".join(split_units(d["text"])) == d["text"]
        chunks = chunk_text(d["text"], 120)
        assert "".join(c + s for c, s in chunks).strip() == d["text"].strip()
        for c, _ in chunks:
            if "```" not in c and len(split_units(c)) > 1:
                assert len(c.encode()) / 4 <= 120 + 1
    code = "Intro sentence. More words here.\n\n```python\nx = 1\n\n\ny = 2. z = 3\n```\nAfter code. End."
    units = split_units(code)
    assert any(u.startswith("```python") and u.rstrip().endswith("```") for u in units)  # fence never split


def test_validator_reasons():
    v = Validator(SimplifyConfig())
    ori = ("The little dog ran to the park with his friend. They played with a ball all day and "
           "then went home to eat food and sleep in the warm house.")
    assert v.check(ori, ori, "web")[0] == []
    assert v.check(ori, "", "web")[0] == ["empty"]
    assert "length_ratio" in v.check(ori, " ".join([ori] * 3), "web")[0]
    assert "leftover_marker" in v.check(ori, ori + "\n<<<BEGIN TEXT>>>", "web")[0]
    german = ("Der kleine Hund lief mit seinem Freund in den Park. Sie spielten den ganzen Tag mit einem "
              "Ball und gingen dann nach Hause, um zu essen und im warmen Haus zu schlafen.")
    assert {"language", "oov_share"} <= set(v.check(ori, german, "web")[0])
    hard = ("Notwithstanding meteorological perturbations, the municipality's infrastructural "
            "rehabilitation proceeded expeditiously, necessitating interdepartmental coordination "
            "and comprehensive epidemiological surveillance throughout the jurisdiction's periphery.")
    assert "oov_share" in v.check(hard, hard, "web")[0]
    code = "Write code.\n\n```python\ndef f(x):\n    return x + 1\n```"
    assert v.check(code, code, "code")[0] == []
    assert "code_broken" in v.check(code, code.replace("return x + 1", "return (x + "), "code")[0]
    assert "code_broken" in v.check(code, "Write code. It adds one.", "code")[0]


def test_wordlist_resource():
    words = load_wordlist()
    assert len(words) == 2000 == len(set(words)) and words[:3] == ("the", "a", "to")
    assert build_wordlist(["b a a c c c", "a"], 2) == ["a", "c"]


def test_replay_is_the_release_byte_for_byte(prepared, tmp_path):
    cfg, llm = SimplifyConfig(), LLMConfig()
    files = []
    for g in GENRES:
        res = simplify_genre(g, shards(prepared, "ori"), shards(prepared, "leaner"), cfg, llm)
        assert res.metrics["docs_out"] == res.metrics["docs_in"] and res.quarantine == []
        assert res.metrics["validation"]["checked"] == (0 if g == "math" else res.metrics["docs_in"])
        f = tmp_path / "genres" / f"{g}.jsonl"
        write_genre(res, f, tmp_path / "q" / f"{g}.jsonl", tmp_path / "m" / f"{g}.json")
        files.append(f)
    assemble_corpus(files, tmp_path / "corpus", ["train", "validation"])
    for split in ("train", "validation"):
        assert (tmp_path / "corpus" / f"{split}.jsonl").read_bytes() == \
            (prepared / "corpus" / "leaner" / f"{split}.jsonl").read_bytes()


def test_replay_quarantines_documents_without_twin(prepared, tmp_path):
    lean = shards(prepared, "leaner")
    recs = [r for r in read_jsonl(lean["train"]) if r["genre"] == "wiki"]
    missing = recs[0]["doc_id"]
    cut = {"train": tmp_path / "train.jsonl", "validation": lean["validation"]}
    write_jsonl(cut["train"], [r for r in read_jsonl(lean["train"]) if r["doc_id"] != missing])
    res = simplify_genre("wiki", shards(prepared, "ori"), cut, SimplifyConfig(), LLMConfig())
    assert [q["doc_id"] for q in res.quarantine] == [missing]
    assert res.quarantine[0]["reasons"] == ["no_released_twin"]
    assert res.metrics["quarantined"] == 1 and res.metrics["docs_out"] == res.metrics["docs_in"] - 1


def _calls(srv) -> int:
    with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read()).get("chat_calls", 0)


def test_openai_path_end_to_end(prepared, server, tmp_path):
    """Live rewrites through the real client: faults, quarantine, then a rerun with zero calls, same bytes."""
    ori = shards(prepared, "ori")
    docs = {s: read_jsonl(p) for s, p in ori.items()}
    wiki = sorted(d["doc_id"] for s in docs for d in docs[s] if d["genre"] == "wiki")[:6]
    faults = {wiki[0]: "FAULT_NOEND", wiki[1]: "FAULT_MARKER", wiki[2]: "FAULT_LONG", wiki[3]: "FAULT_429",
              wiki[4]: "FAULT_TIMEOUT"}
    for s in docs:
        for d in docs[s]:
            if d["doc_id"] in faults:
                d["text"] = d["text"].replace(".", f". {faults[d['doc_id']]}", 1)
    fault_ori = {s: tmp_path / "ori" / f"{s}.jsonl" for s in docs}
    for s, recs in docs.items():
        write_jsonl(fault_ori[s], recs)
    cfg = SimplifyConfig(max_docs_per_genre=6, chunk_tokens={"default": 200, "code": 400})
    llm = LLMConfig(backend="openai", base_url=server.base_url, timeout_s=0.3, backoff_base_s=0.01,
                    backoff_max_s=0.05, max_reasks=1, progress=False, cache_dir=str(tmp_path / "cache"))

    def run(tag: str):
        out = {}
        for g in ("wiki", "code", "math"):
            res = simplify_genre(g, fault_ori, shards(prepared, "leaner"), cfg, llm)
            paths = [tmp_path / tag / n for n in (f"{g}.jsonl", f"{g}.q.jsonl", f"{g}.json")]
            write_genre(res, *paths)
            out[g] = (res, paths)
        return out

    before = _calls(server)
    first = run("a")
    assert _calls(server) > before
    res = first["wiki"][0]
    reasons = {q["doc_id"]: q["reasons"] for q in res.quarantine}
    assert reasons == {wiki[0]: ["llm_format"], wiki[1]: ["leftover_marker"], wiki[2]: ["length_ratio"]}
    m = res.metrics
    assert m["llm_docs"] == 6 and m["rewritten_docs"] == 3 and m["docs_out"] + m["quarantined"] == m["docs_in"]
    assert m["llm"]["errors"] == {"format": 1} and m["llm"]["chunks"] > 6
    assert timing.recorded()["llm_wiki"]["retries"] >= 3 and "seconds" not in m and "seconds" not in m["llm"]
    assert m["quarantine_gate"]["quarantined"] == 3 and m["provenance"]["source"] == "llm+released"
    assert m["provenance"]["models"] == [{"model": "fake", "backend": "openai", "n_params": 0}]
    kept = {d["doc_id"]: d for d in res.docs}
    ori_text = {d["doc_id"]: d["text"] for s in docs for d in docs[s]}
    for i in (3, 4, 5):  # rewritten: paired hash kept, text changed, same number of paragraphs
        d = kept[wiki[i]]
        assert d["side"] == "leaner" and d["text"] != ori_text[wiki[i]]
        assert d["text"].count("\n") == ori_text[wiki[i]].strip().count("\n")
    code = first["code"][0]
    assert code.metrics["rewritten_docs"] + code.metrics["quarantined"] == 6
    for d in code.docs[:]:
        if d["doc_id"] in {q["doc_id"] for q in code.quarantine}:
            continue
        assert d["text"] == d["parts"]["prompt"] + "\n\n" + d["parts"]["response"]
    math = first["math"][0]
    assert all(d["text"] == ori_text[d["doc_id"]] for d in math.docs) and math.metrics["passthrough_docs"] > 0

    before = _calls(server)
    second = run("b")
    assert _calls(server) == before  # everything from the cache
    assert second["wiki"][0].metrics["llm"]["cache_hit_rate"] == 1.0
    assert second["wiki"][0].metrics["provenance"] == first["wiki"][0].metrics["provenance"]
    for g in first:
        for pa, pb in zip(first[g][1][:2], second[g][1][:2]):
            assert pa.read_bytes() == pb.read_bytes()


def test_outage_and_too_much_quarantine_fail_the_genre(prepared, server, tmp_path):
    """An endpoint that does not answer, or more quarantine than llm.max_quarantine_share: LLMFailure."""
    base = dict(backend="openai", timeout_s=0.5, backoff_base_s=0.0, max_retries=0, max_reasks=0, progress=False,
                cache_dir=str(tmp_path / "cache"))
    cfg = SimplifyConfig(max_docs_per_genre=3)
    down = LLMConfig(base_url="http://127.0.0.1:9/v1", **base)
    with pytest.raises(LLMFailure, match="connection") as exc:
        simplify_genre("web", shards(prepared, "ori"), shards(prepared, "leaner"), cfg, down)
    assert "nothing was written" in str(exc.value) and "rerun" in str(exc.value)
    # the fake server reports 0 parameters: with the threshold at 0 its output counts as a result
    strict = LLMConfig(base_url=server.base_url, max_quarantine_share=0.5, pipeline_check_below_params=0, **base)
    cfg_small = SimplifyConfig(max_docs_per_genre=3, max_length_ratio=0.21, min_length_ratio=0.2)  # rejects all
    with pytest.raises(LLMFailure, match="3 of 3 sent to the LLM were quarantined"):
        simplify_genre("web", shards(prepared, "ori"), shards(prepared, "leaner"), cfg_small, strict)
    # a model below llm.pipeline_check_below_params makes a pipeline check: the gate is waived and says so
    check = strict.model_copy(update={"pipeline_check_below_params": 10**9})
    res = simplify_genre("web", shards(prepared, "ori"), shards(prepared, "leaner"), cfg_small, check)
    gate = res.metrics["quarantine_gate"]
    assert gate["share"] == 1.0 and gate["status"].startswith("waived: pipeline check, not a result")


def test_chunks_shrink_to_fit_a_known_context():
    assert fitted_budget(700, None, 2048, 1500) == 700  # unknown context: unchanged
    assert fitted_budget(700, 8192, 2048, 1500) == 700  # fits
    small = fitted_budget(700, 2048, 256, 1400)  # 2048 - 256 - 1400 = 392 prompt tokens left
    assert small == 392 * 3 // 4 and small * 4 / 3 + 1400 + 256 <= 2048
    with pytest.raises(ParamsError, match="no room"):
        fitted_budget(700, 2048, 1024, 1400)
