"""Leaner-Eval creation: replay with similarity, the live path on loopback (generate, dedupe, bin), limits."""
from __future__ import annotations

import json

import pytest

from tinyhelen.io import read_jsonl
from tinyhelen.benchmarks.leaner_eval import LeanerEvalConfig, Similarity, bin_of, dedupe, leaner_eval
from tinyhelen.llm import LLMConfig, LLMFailure


from conftest import fake_llm_calls as _calls  # noqa: E402
from conftest import fake_llm_config as _llm  # noqa: E402


def test_eval_replay_keeps_release_and_adds_similarity(prepared, tmp_path):
    m = leaner_eval(LeanerEvalConfig(), LLMConfig(), prepared / "eval", prepared / "corpus" / "ori" / "train.jsonl",
                    tmp_path / "eval", tmp_path / "q.jsonl")
    rel = read_jsonl(prepared / "eval" / "all.jsonl")
    out = read_jsonl(tmp_path / "eval" / "all.jsonl")
    assert [(r["qid"], r["question"], r["bin"]) for r in out] == [(r["qid"], r["question"], r["bin"]) for r in rel]
    assert all(0 <= r["similarity"] <= 10 for r in out) and m["questions"] == len(rel)
    assert len(read_jsonl(tmp_path / "eval" / "inner_comparison.jsonl")) == 31


def test_eval_openai_generate_dedupe_bin(prepared, server, tmp_path):
    cfg = LeanerEvalConfig(n_requests=4, questions_per_request=10, inner_comparison_size=5)
    llm = _llm(server, tmp_path)
    args = (prepared / "eval", prepared / "corpus" / "ori" / "train.jsonl")
    m = leaner_eval(cfg, llm, *args, tmp_path / "a", tmp_path / "qa.jsonl")
    out = read_jsonl(tmp_path / "a" / "all.jsonl")
    assert m["llm"]["candidates"] == 40 and m["questions"] + m["dropped"] == 40
    assert m["dropped_reasons"].get("copied_example", 0) >= 4  # the fake model copies one example per 5
    assert len({r["qid"] for r in out}) == len(out) and all(r["bin"] == bin_of(r["similarity"]) for r in out)
    seeds = {r["question"] for r in read_jsonl(prepared / "eval" / "all.jsonl")}
    assert not seeds & {r["question"] for r in out}
    assert len(read_jsonl(tmp_path / "a" / "inner_comparison.jsonl")) == 5
    before = _calls(server)
    leaner_eval(cfg, llm, *args, tmp_path / "b", tmp_path / "qb.jsonl")
    assert _calls(server) == before
    assert (tmp_path / "a" / "all.jsonl").read_bytes() == (tmp_path / "b" / "all.jsonl").read_bytes()
    assert out[0]["source"].startswith("fake:eval_generate@v1:"), "the model that answered names the source"
    assert m["provenance"]["models"][0]["model"] == "fake" and "seconds" not in m


def test_eval_too_many_bad_replies_fail_the_stage(prepared, server, tmp_path):
    """Every reply keeps the end marker out (FAULT_NOEND in the examples): all requests fail their format."""
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "all.jsonl").write_text(json.dumps({"qid": "x", "question": "FAULT_NOEND Why is grass green?",
                                              "source": "s", "bin": "0-7"}) + "\n")
    (ev / "inner_comparison.jsonl").write_text("")
    cfg = LeanerEvalConfig(n_requests=2, examples_per_request=1)
    with pytest.raises(LLMFailure, match="llm.max_quarantine_share"):
        leaner_eval(cfg, _llm(server, tmp_path).model_copy(update={"pipeline_check_below_params": 0}), ev,
                    prepared / "corpus" / "ori" / "train.jsonl",
                    tmp_path / "out", tmp_path / "q.jsonl")
    assert not (tmp_path / "out").exists()


def test_dedupe_and_similarity():
    kept, dropped = dedupe(["Why is the sky blue?", "why is the sky blue", "Why is the sky so blue today?",
                            "Tell a story about a cat.", "What do cows eat?"],
                           ["What do cows eat?"], threshold=0.6)
    assert kept == ["Why is the sky blue?", "Tell a story about a cat."]
    assert [d["reason"] for d in dropped] == ["exact_duplicate", "copied_example", "near_duplicate"]
    sim = Similarity(["Write a Python function to sort a list.", "Explain how a car engine works."])
    s = sim.scores(["Write a Python function to sort a list.", "Why do birds sing?"])
    assert s[0] == pytest.approx(10.0) and s[1] < 3
    assert [bin_of(x) for x in (0.0, 6.99, 7.0, 8.5, 9.0, 10.0)] == ["0-7", "0-7", "7-8", "8-9", "9-10", "9-10"]
