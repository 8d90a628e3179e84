"""Entropy metrics on hand-computed examples, the fast tokeniser against its definition, and the
regression anchor on the released 10M paired natural-language documents."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tinyhelen.entropy import (WORD_RE, EntropyConfig, Sample, equalise, entropy_bits, leaner_vs_ori,
                               ngram_counts, ngram_stats, sentence_lengths, word_stats, word_tokens)


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


def test_equalise_cuts_twins_to_the_shorter():
    a = Sample([np.arange(5), np.arange(3)], ids=["x", "y"])
    b = Sample([np.arange(2), np.arange(4), np.arange(9)], ids=["y", "x", "z"])
    ea, eb = equalise(a, b)
    assert ea.ids == eb.ids == ["x", "y"]
    assert [len(d) for d in ea.docs] == [len(d) for d in eb.docs] == [4, 2]


def test_leaner_vs_ori_lists_exceptions():
    res = {"paired": {"pooled": {"leaner": {"word_H1": 1.0, "bpe_H1": 3.0},
                                 "ori": {"word_H1": 2.0, "bpe_H1": 2.5}}}}
    assert leaner_vs_ori(res, 1) == {"paired": {"figures": 2, "leaner_not_below": ["bpe_H1"]}}


def test_regression_anchor_released_10m(tmp_path, data_dir):
    """Pooled word unigram entropy 10.90 (ori) vs 9.35 (leaner), vocabulary 56,806 vs 16,534."""
    from tinyhelen.data import DataConfig, prepare
    from tinyhelen.entropy import run

    prepare(DataConfig(source="local", local_dir=str(data_dir)), out_dir=tmp_path / "p")
    shards = {s: [tmp_path / f"p/corpus/{s}/{sp}.jsonl" for sp in ("train", "validation")]
              for s in ("leaner", "ori")}
    res, perf = run(shards, None, EntropyConfig(max_n=1))
    ori, lean = res["paired"]["pooled"]["ori"], res["paired"]["pooled"]["leaner"]
    assert ori["word_H1"] == pytest.approx(10.90, abs=0.005)
    assert lean["word_H1"] == pytest.approx(9.35, abs=0.005)
    assert lean["vocab"] == 16534
    assert math.isclose(ori["vocab"], 56806, rel_tol=2e-4)  # 56,801 here: 5 types of 56,806
    assert ori["top2000_coverage"] == pytest.approx(0.759, abs=0.001)
    assert lean["top2000_coverage"] == pytest.approx(0.935, abs=0.001)
