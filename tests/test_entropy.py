"""Entropy metrics on hand-computed examples, the fast tokeniser against its definition, the stage on the
fixture release, and the regression anchor on the released 10M paired natural-language documents."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from tinyhelen.entropy.measure import (EntropyConfig, Sample, compare, cut_sentences, equalise, entropy_bits,
                                       miller_madow, ngram_counts, ngram_stats, pool, run, scope_samples, word_stats)
from tinyhelen.entropy.result import from_runs, write_run
from tinyhelen.entropy.tables import document
from tinyhelen.entropy.words import WORD_RE, sentence_lengths, word_tokens


def test_entropy_bits_hand_examples():
    assert entropy_bits([1, 1]) == pytest.approx(1.0)
    assert entropy_bits([2, 1, 1]) == pytest.approx(1.5)
    assert entropy_bits([5]) == 0.0
    assert entropy_bits([]) == 0.0


def test_ngram_counts_do_not_cross_documents():
    docs = [np.array([0, 1, 0, 1]), np.array([1, 0])]
    # bigrams: doc1 (0,1) (1,0) (0,1); doc2 (1,0) -> {(0,1): 2, (1,0): 2}; (1,1) across the boundary absent
    assert sorted(ngram_counts(docs, 2).tolist()) == [2, 2]
    assert sorted(ngram_counts(docs, 3).tolist()) == [1, 1]   # (0,1,0), (1,0,1)
    assert ngram_counts(docs, 5).size == 0


def test_ngram_counts_hash_path_matches_exact_path():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, size=200) for _ in range(5)]
    big = [d + (1 << 20) for d in docs]  # forces 4 * 21 bits > 64: hashed keys
    for n in (1, 2, 3, 4):
        assert sorted(ngram_counts(docs, n).tolist()) == sorted(ngram_counts(big, n).tolist())


def test_ngram_stats_and_word_stats_hand_example():
    s = Sample([np.array([0, 1, 0, 1])])  # "a b a b"
    st = ngram_stats(s, 2, "w_")
    assert st["w_H1"] == pytest.approx(1.0)          # a, b equally likely
    assert st["w_H2"] == pytest.approx(entropy_bits([2, 1]), abs=1e-4)  # (a,b) x2, (b,a) x1 (4 decimals)
    assert st["w_h2"] == pytest.approx(entropy_bits([2, 1]) - 1.0, abs=1e-4)
    # Miller-Madow: + (K - 1) / (2 N ln 2) bits; unigrams K=2, N=4; bigrams K=2, N=3
    assert st["w_H1_mm"] == pytest.approx(1.0 + 1 / (8 * math.log(2)), abs=1e-4)
    assert st["w_H2_mm"] == pytest.approx(entropy_bits([2, 1]) + 1 / (6 * math.log(2)), abs=1e-4)
    assert st["w_h2_mm"] == pytest.approx(st["w_H2_mm"] - st["w_H1_mm"], abs=2e-4)
    ws = word_stats(s, top_k=1)
    assert ws == {"tokens": 4, "vocab": 2, "ttr": 0.5, "top1_coverage": 0.5}


def test_word_tokens_definition():
    assert word_tokens("Don't 'quoted' rock'n'roll a''b \u2019tis don\u2019t CAF\u00c9 x_y 3.5 a\u2014b l'\u00e9t\u00e9") == [
        "don't", "quoted", "rock'n'roll", "a", "b", "tis", "don\u2019t", "caf\u00e9", "x", "y", "3", "5", "a",
        "b", "l'\u00e9t\u00e9"]
    assert word_tokens("line\\nnext") == ["line", "next"]  # literal backslash-n read as newline


def test_fast_tokeniser_equals_reference_regex():
    rng = random.Random(0)
    alphabet = "ab'\u2019 \x01_\u00e9\u2014.9\\n\u00c9Z\u00bd"
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert word_tokens(s) == WORD_RE.findall(s.replace("\\n", "\n").lower()), repr(s)


def test_sentence_lengths():
    assert sentence_lengths("I am here. You are there!\nOk") == [3, 3, 1]
    assert sentence_lengths("...  !") == []


def test_miller_madow_correction():
    assert miller_madow(np.array([5])) == 0.0            # one type: no correction
    assert miller_madow(np.array([], dtype=np.int64)) == 0.0
    assert miller_madow(np.array([1] * 10)) == pytest.approx(9 / (20 * math.log(2)))


def test_sentence_lengths_add_up_to_the_word_tokens():
    """Equal-budget cuts rely on it: sentences partition a document's word tokens."""
    rng = random.Random(1)
    alphabet = "ab'\u2019 .!?\n3\u00e9,"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) + rng.choice(["", "\\n x"])
        assert sum(sentence_lengths(text)) == len(word_tokens(text)), repr(text)


def test_cut_sentences():
    lengths = np.array([3, 5, 2])
    assert cut_sentences(lengths, 10).tolist() == [3, 5, 2]
    assert cut_sentences(lengths, 12).tolist() == [3, 5, 2]
    assert cut_sentences(lengths, 8).tolist() == [3, 5]
    assert cut_sentences(lengths, 4).tolist() == [3, 1]
    assert cut_sentences(lengths, 3).tolist() == [3]
    assert cut_sentences(lengths, 0).tolist() == []


def test_equalise_cuts_twins_to_the_shorter():
    a = Sample([np.arange(5), np.arange(3)], ids=["x", "y"])
    b = Sample([np.arange(2), np.arange(4), np.arange(9)], ids=["y", "x", "z"])
    ea, eb = equalise(a, b)
    assert ea.ids == eb.ids == ["x", "y"]
    assert [len(d) for d in ea.docs] == [len(d) for d in eb.docs] == [4, 2]


def _doc(doc_id, genre, text):
    return {"doc_id": doc_id, "genre": genre, "text": text}


def test_equal_budget_mean_sentence_len_is_that_of_the_cut_documents():
    """ori: sentences of 8 and 2 words (10 tokens); leaner: 4 and 2 (6 tokens). At the equal budget the ori
    twin is cut to its first 6 words: one (cut) sentence of 6 words, not the uncut mean of 5."""
    cfg = EntropyConfig(max_n=1, genres=["web"], pooled_genres=["web"])
    samples = {"leaner": scope_samples([_doc("d", "web", "a b c d. e f.")], cfg),
               "ori": scope_samples([_doc("d", "web", "one two three four five six seven eight. nine ten.")],
                                    cfg)}
    pool(samples, cfg)
    res = compare(samples, cfg)
    assert res["paired"]["web"]["ori"]["mean_sentence_len"] == 5.0
    assert res["equal_budget"]["web"]["ori"]["mean_sentence_len"] == 6.0
    assert res["equal_budget"]["web"]["leaner"]["mean_sentence_len"] == 3.0
    assert res["equal_budget"]["pooled"]["ori"]["tokens"] == res["equal_budget"]["pooled"]["leaner"]["tokens"] == 6


def test_genre_on_one_side_drops_out_of_the_pooled_figures_and_is_named(tmp_path):
    cfg = EntropyConfig(max_n=2, genres=["web", "wiki"], pooled_genres=["web", "wiki", "book"])
    web = [_doc(f"w{i}", "web", f"the cat sat on mat number {i}.") for i in range(3)]
    samples = {"leaner": scope_samples(web, cfg),
               "ori": scope_samples(web + [_doc("k", "wiki", "a wiki page only the original has")], cfg)}
    cov = pool(samples, cfg)
    assert cov == {"pooled_genres": ["web"], "dropped": {"wiki": "no documents on the leaner side",
                                                         "book": "no documents on either side"}}
    res = compare(samples, cfg)
    assert set(res["paired"]) == {"pooled", "web"}  # no one-sided wiki scope
    assert res["paired"]["pooled"]["ori"] == res["paired"]["web"]["ori"]  # wiki is out on both sides
    write_run(tmp_path / "entropy.tsv", res, cfg.max_n, cfg.top_k, cov["pooled_genres"], cov["dropped"])
    md = document(from_runs(tmp_path))
    assert "Not pooled: wiki (no documents on the leaner side)." in md
    assert "Not pooled: book (no documents on either side)." in md


def test_run_on_the_fixture_keeps_the_report_card_keys(prepared, tokenizers, tmp_path):
    from tinyhelen.tokenizer import load

    cfg = EntropyConfig(max_n=3)
    shards = {s: [prepared / f"corpus/{s}/{sp}.jsonl" for sp in cfg.splits] for s in ("leaner", "ori")}
    r = run(shards, {s: load(p) for s, p in tokenizers.items()}, cfg)
    write_run(tmp_path / "entropy.tsv", r.results, cfg.max_n, cfg.top_k, r.coverage["pooled_genres"])
    summ = from_runs(tmp_path).metrics()
    for setting in ("paired", "equal_budget"):
        for side in ("leaner", "ori"):
            st = summ[setting][side]
            for k in ["tokens", "vocab", "top2000_coverage", "mean_sentence_len", "word_H3", "bpe_H3",
                      "word_H3_mm", "bpe_H3_mm"]:
                assert k in st, (setting, side, k)
            assert all(st[f"{k}_H{n}_mm"] > st[f"{k}_H{n}"] for k in ("word", "bpe") for n in (1, 2, 3))
    assert r.coverage == {"pooled_genres": list(cfg.pooled_genres), "dropped": {}}
    assert summ["equal_budget"]["leaner"]["tokens"] == summ["equal_budget"]["ori"]["tokens"]


def test_a_figure_added_in_side_stats_reaches_every_scope_and_setting(monkeypatch, tmp_path):
    """Entropy figures have no registry: ``side_stats`` is the one function that computes them. A toy figure
    added there (for this test only) appears in every scope, setting and side of ``compare`` (what the run file
    reports/runs/entropy.tsv holds), at the equal budget on the cut documents; the typed result keeps only its
    declared fields (docs/extending.md, "An entropy measure")."""
    from tinyhelen.entropy import measure

    plain = measure.side_stats

    def with_toy(word, bpe, cfg):
        return {**plain(word, bpe, cfg), "toy_words_seen": word.n_tokens}

    monkeypatch.setattr(measure, "side_stats", with_toy)
    cfg = EntropyConfig(max_n=1, genres=["web", "wiki"], pooled_genres=["web", "wiki"])
    leaner = [_doc("a", "web", "a b c d."), _doc("b", "wiki", "e f.")]
    ori = [_doc("a", "web", "one two three four five six."), _doc("b", "wiki", "seven eight nine.")]
    samples = {"leaner": scope_samples(leaner, cfg), "ori": scope_samples(ori, cfg)}
    pool(samples, cfg)
    res = compare(samples, cfg)
    seen = {(setting, scope, side): st["toy_words_seen"] for setting, scopes in res.items()
            for scope, sides in scopes.items() for side, st in sides.items()}
    assert len(seen) == 2 * 3 * 2  # paired and equal_budget x pooled, web, wiki x leaner, ori
    assert seen[("paired", "pooled", "ori")] == 9 and seen[("paired", "pooled", "leaner")] == 6
    assert seen[("equal_budget", "pooled", "ori")] == seen[("equal_budget", "pooled", "leaner")] == 6
    write_run(tmp_path / "entropy.tsv", res, cfg.max_n, cfg.top_k, ["web", "wiki"])
    assert (tmp_path / "entropy.tsv").read_text().count("\ttoy_words_seen\t") == 12
    assert "toy_words_seen" not in from_runs(tmp_path).model_dump_json()


@pytest.mark.slow
def test_stage_outputs_are_deterministic_and_hold_no_wall_clock(prepared, tokenizers, tmp_path, monkeypatch):
    """reports/entropy.json and the run file: same inputs, byte-identical files; timings go to
    tinyhelen.timing."""
    import argparse
    import importlib.util
    import shutil
    from pathlib import Path

    from tinyhelen import timing

    script = Path(__file__).resolve().parents[1] / "stages" / "entropy.py"
    spec = importlib.util.spec_from_file_location("entropy_stage", script)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    for s in ("leaner", "ori"):
        shutil.copytree(tokenizers[s], tmp_path / "data/tokenizers" / s)
    (tmp_path / "params.yaml").write_text("entropy:\n  max_n: 2\n")
    args = argparse.Namespace(params="params.yaml", leaner=str(prepared / "corpus/leaner"),
                              ori=str(prepared / "corpus/ori"), leaner_tokenizer="data/tokenizers/leaner",
                              ori_tokenizer="data/tokenizers/ori", result="reports/results/entropy.json",
                              metrics="reports/entropy.json", run_file="reports/runs/entropy.tsv",
                              md="reports/entropy.md", plot="reports/plots/entropy.tsv",
                              png="reports/figures/entropy.png")
    outs = []
    for _ in range(2):
        timing.clear()
        stage.main(args)
        outs.append({f: (tmp_path / "reports" / f).read_bytes() for f in ("entropy.json", "runs/entropy.tsv")})
        assert "word_tokens_per_s" in timing.recorded()
    assert outs[0] == outs[1]
    text = b"".join(outs[0].values()).decode()
    assert "seconds" not in text and "per_s" not in text
    result = json.loads((tmp_path / "reports/results/entropy.json").read_text())
    assert result["pooled_genres"] == list(EntropyConfig().pooled_genres)
    assert "h2" in (tmp_path / "reports/entropy.md").read_text()


@pytest.mark.full_data
@pytest.mark.slow
def test_regression_anchor_released_10m(tmp_path, full_data_dir):
    """Pooled word unigram entropy 10.90 (ori) vs 9.35 (leaner), vocabulary 56,806 vs 16,534."""
    from tinyhelen.data import DataConfig, prepare

    prepare(DataConfig(local_dir=str(full_data_dir)), out_dir=tmp_path / "p")
    shards = {s: [tmp_path / f"p/corpus/{s}/{sp}.jsonl" for sp in ("train", "validation")]
              for s in ("leaner", "ori")}
    res = run(shards, None, EntropyConfig(max_n=2)).results
    ori, lean = res["paired"]["pooled"]["ori"], res["paired"]["pooled"]["leaner"]
    # this pipeline's pooled figures (reports/entropy.json at the default params)
    assert (ori["word_H1"], ori["word_H2"], lean["word_H1"], lean["word_H2"]) == (10.9004, 17.3101, 9.3537, 15.7127)
    assert (ori["tokens"], lean["tokens"], ori["mean_sentence_len"], lean["mean_sentence_len"]) == \
        (1784665, 1499382, 10.982, 11.631)
    eq = res["equal_budget"]["pooled"]
    assert (eq["ori"]["tokens"], eq["ori"]["word_H1"], eq["leaner"]["word_H1"]) == (1468767, 10.7865, 9.3556)
    assert ori["word_H1"] == pytest.approx(10.90, abs=0.005)
    assert lean["word_H1"] == pytest.approx(9.35, abs=0.005)
    assert lean["vocab"] == 16534
    assert math.isclose(ori["vocab"], 56806, rel_tol=2e-4)  # 56,801 here: 5 types of 56,806
    assert ori["top2000_coverage"] == pytest.approx(0.759, abs=0.001)
    assert lean["top2000_coverage"] == pytest.approx(0.935, abs=0.001)
