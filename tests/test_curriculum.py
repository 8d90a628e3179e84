"""EXP3: difficulty scorers on hand examples, pacing schedules, units, report arithmetic."""
from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from tinyhelen import params
from tinyhelen.config import ParamsError
from tinyhelen.exp3 import pacing, result, scorers
from tinyhelen.exp3.tables import document, reach_table
from tinyhelen.exp3.config import CurriculumParam, UnitsConfig
from tinyhelen.exp3.units import build_units, largest_remainder, load_units
from tinyhelen.io import InputError


# ------------------------------------------------------------------ scorers
def _inp(texts, **kw):
    return scorers.ScoringInputs(unit_ids=[f"u{i}" for i in range(len(texts))], texts=texts,
                                 tokens=[np.zeros(1, np.int64)] * len(texts), **kw)


def test_registry_has_study_scorers_and_one_beyond():
    assert {"random", "sentlen", "lmloss", "unigram", "selfloss"} <= set(scorers.SCORERS)
    assert scorers.score("selfloss", _inp(["a"])) is None  # online: scored in the trainer
    assert scorers.score("full-random", _inp(["a"])) is None
    with pytest.raises(ValueError, match="unknown scorer"):
        scorers.score("nope", _inp(["a"]))


def test_sentlen_mean_words_per_sentence():
    s = scorers.score("sentlen", _inp(["The cat sat. It ran!", "One two three four five six.", "...", "a\nb c"]))
    assert s.tolist() == [2.5, 6.0, 0.0, 1.5]
    # easiest first = shortest sentences: "...", "a / b c", "The cat sat. It ran!", the six-word sentence
    assert np.argsort(s, kind="stable").tolist() == [2, 3, 0, 1]


def test_unigram_rarity_by_hand():
    s = scorers.score("unigram", _inp(["a a a", "b", "a b"]))
    # counts a=4, b=2; add-one over 2 types: total = 6 + 2 + 1 = 9
    pa, pb = -math.log2(5 / 9), -math.log2(3 / 9)
    assert s == pytest.approx([pa, pb, (pa + pb) / 2])
    assert s[0] < s[2] < s[1]  # common words are easy


def test_random_scores_are_seeded_and_independent_of_order():
    a = scorers.score("random", _inp(["x", "y", "z"], seed=3))
    b = scorers.score_random(scorers.ScoringInputs(["u2", "u0"], [], [], seed=3))
    c = scorers.score("random", _inp(["x", "y", "z"], seed=4))
    assert b.tolist() == [a[2], a[0]]
    assert ((0 <= a) & (a < 1)).all() and not np.allclose(a, c)


@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=1, eos_token_id=0, bos_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def test_lmloss_is_mean_token_loss_and_padding_invariant(tiny_lm):
    import torch

    u1, u2 = np.array([5, 6, 7, 8, 9]), np.array([10, 11])
    both = scorers.score("lmloss", scorers.ScoringInputs(["a", "b"], [], [u1, u2], reference_model=tiny_lm,
                                                          eos_id=0, pad_id=1))
    alone = scorers.unit_losses(tiny_lm, [u2], eos_id=0, pad_id=1)
    x = torch.tensor([[0, *u1]])
    with torch.no_grad():
        manual = float(tiny_lm(input_ids=x, labels=x).loss)  # HF: mean over the 5 predicted tokens
    assert both[0] == pytest.approx(manual, abs=1e-5)
    assert both[1] == pytest.approx(alone[0], abs=1e-5)
    with pytest.raises(ValueError, match="reference LM"):
        scorers.score("lmloss", _inp(["a"]))


def test_scores_file_round_trip_and_stale_file(tmp_path):
    p = tmp_path / "s.jsonl"
    scorers.write_scores(p, ["a", "b"], np.array([0.5, 0.25]))
    assert scorers.read_scores(p, ["b", "a"]).tolist() == [0.25, 0.5]
    with pytest.raises(InputError, match="no score"):
        scorers.read_scores(p, ["a", "c"])
    scorers.write_scores(p, ["a"], None)
    assert scorers.read_scores(p, ["a"]) is None


# ------------------------------------------------------------------ pacing
def test_plateau_tracker_expands_exactly_after_patience_evals():
    t = pacing.PlateauTracker(patience=2)
    losses = [5.0, 4.0, 4.5, 4.2, 3.0, 3.1, 3.0, 2.0, 2.5, 2.6, 2.7]
    fired = [i for i, loss in enumerate(losses) if t.update(loss)]
    # 4.5, 4.2 do not beat 4.0 -> expand at index 3; 3.1, 3.0 do not beat 3.0 -> 6; 2.5, 2.6 -> 9
    assert fired == [3, 6, 9]
    t2 = pacing.PlateauTracker(patience=1, min_delta=0.5)
    assert [t2.update(x) for x in (5.0, 4.6, 4.0)] == [False, True, False]


def test_step_pacings_grow_monotonically_to_full():
    kw = dict(max_steps=100, start=0.05, increment=0.05, full_at=0.8)
    for p in ("linear", "root", "step"):
        c = [pacing.competence(p, s, **kw) for s in range(0, 101, 5)]
        assert c[0] == pytest.approx(0.05) and all(b >= a for a, b in zip(c, c[1:]))
        assert pacing.competence(p, 80, **kw) == pytest.approx(1.0)
    assert pacing.competence("root", 20, **kw) > pacing.competence("linear", 20, **kw)
    assert pacing.competence("step", 4, **kw) == pytest.approx(0.05)  # one step every 80/19 = 4.2 steps
    assert pacing.competence("step", 5, **kw) == pytest.approx(0.10)


def test_target_size_iterative_and_caps():
    kw = dict(step=10, max_steps=100, start=0.05, increment=0.05, full_at=0.8)
    assert pacing.target_size("iterative", 5, 100, plateau=False, **kw) == 5
    assert pacing.target_size("iterative", 5, 100, plateau=True, **kw) == 10
    assert pacing.target_size("iterative", 98, 100, plateau=True, **kw) == 100
    assert pacing.target_size("linear", 50, 100, plateau=False, **kw) == 50  # never shrinks
    assert pacing.n_units(0.05, 7) == 1 and pacing.n_units(0.05, 100) == 5


# ------------------------------------------------------------------ params
def test_params_validation_names_the_key():
    assert params.validate("curriculum", "sentlen").value == "sentlen"
    with pytest.raises(ParamsError, match="curriculum"):
        params.validate("curriculum", "easyfirst")
    with pytest.raises(ParamsError, match="exp3.train"):
        params.validate("exp3", {"train": {"checkpoint_steps": [7], "eval_every": 5, "max_steps": 20}})
    with pytest.raises(ParamsError, match="exp3.strategies"):
        params.validate("exp3", {"strategies": ["lmloss", "bogus"]})
    assert CurriculumParam().value == "lmloss"  # the study's claim is about the lmloss curriculum


# ------------------------------------------------------------------ units
UNITS_CFG = UnitsConfig(unit_max_tokens=64, pool_tokens=6000, reference_tokens=2000, val_tokens=512)


@pytest.fixture(scope="session")
def units_dir(tmp_path_factory, prepared, tokenizers):
    from tinyhelen.tokenizer import load

    out = tmp_path_factory.mktemp("exp3") / "units"
    build_units(prepared / "corpus/leaner/train.jsonl", prepared / "corpus/leaner/validation.jsonl",
                load(tokenizers["leaner"]), UNITS_CFG, out)
    return out


def test_units_roles_budgets_and_chunks(units_dir):
    units, val = load_units(units_dir)
    info = json.loads((units_dir / "info.json").read_text())
    pool, ref = units.subset("pool"), units.subset("reference")
    assert info["tokens"] == {"reference": 2000, "pool": 6000}
    assert int(pool.lengths().sum()) == 6000 and int(ref.lengths().sum()) == 2000
    # stratified: every genre in the pool, the reference data and the validation set, at its share
    genres = ["book", "conversation", "textbook", "web", "wiki"]
    shares = {g: info["genres"][g]["share"] for g in genres}
    assert pool.tokens_by_genre() == largest_remainder(6000, shares) and set(ref.tokens_by_genre()) == set(genres)
    assert val.genres == genres and len(val.tokens) == 512
    assert {g: b - a for g, (a, b) in val.spans.items()} == largest_remainder(512, shares)
    # the study's unit: a whole document; only the document crossing a genre's budget is cut (a prefix)
    assert all(u.endswith(":0") for u in units.unit_ids) and len({m["doc_id"] for m in units.meta}) == len(units)
    cut = [m for m in units.meta if m["n_tokens"] < m["doc_tokens"]]
    assert len(cut) == info["cut_docs"] <= 2 * len(genres)
    assert sum(m["doc_tokens"] - m["n_tokens"] for m in cut) == info["cut_tokens"]
    assert units.lengths().max() > 64
    assert not {m["doc_id"] for m in pool.meta} & {m["doc_id"] for m in ref.meta}  # held out by document
    assert len(set(units.unit_ids)) == len(units)
    assert info["unused_docs"] + len({m["doc_id"] for m in units.meta}) + info["empty_docs"] == info["train_docs"]


def test_largest_remainder_sums_to_the_budget():
    assert largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert largest_remainder(150_000, {"book": 0.25, "web": 0.75}) == {"book": 37_500, "web": 112_500}
    assert sum(largest_remainder(10_240, {"a": 0.2519, "b": 0.1125, "c": 0.3383, "d": 0.1444, "e": 0.1529})
               .values()) == 10_240


def _write_corpus(path, docs_per_genre, words_per_doc):
    """A synthetic corpus with the release's genre structure: a few huge book documents among many small ones."""
    import random

    rnd = random.Random(0)
    vocab = "the a cat dog sat ran on in big small red house tree and to of it was is he she we".split()
    with open(path, "w") as fh:
        for g, n in docs_per_genre.items():
            for i in range(n):
                text = " ".join(rnd.choice(vocab) for _ in range(words_per_doc[g])) + "."
                fh.write(json.dumps({"doc_id": f"{g}-{i}", "genre": g, "text": text}) + "\n")


@pytest.mark.slow
def test_pool_and_validation_cover_every_genre_at_the_default_size(tmp_path, tokenizers):
    """At the default budgets (150k pool, 100k reference, 10,240 validation tokens) and a corpus shaped like the
    released one (4 book documents of ~60k words among ~2,400 documents), every genre is in the pool and the
    validation set at its share; a book document is cut to the genre's budget (a prefix, counted)."""
    from tinyhelen.tokenizer import load

    sizes = {"book": 4, "conversation": 26, "textbook": 900, "web": 180, "wiki": 1300}
    words = {"book": 60_000, "conversation": 5000, "textbook": 480, "web": 1000, "wiki": 150}
    _write_corpus(tmp_path / "train.jsonl", sizes, words)
    _write_corpus(tmp_path / "val.jsonl", {g: 40 for g in sizes}, {g: 100 for g in sizes})
    cfg = UnitsConfig()
    info = build_units(tmp_path / "train.jsonl", tmp_path / "val.jsonl", load(tokenizers["leaner"]), cfg, tmp_path / "u")
    units, val = load_units(tmp_path / "u")
    pool = units.subset("pool")
    shares = {g: info["genres"][g]["share"] for g in sizes}
    assert shares["book"] == pytest.approx(240_000 / sum(sizes[g] * words[g] for g in sizes), abs=1e-5)
    assert pool.tokens_by_genre() == largest_remainder(cfg.pool_tokens, shares)  # every genre, at its share
    assert {g: b - a for g, (a, b) in val.spans.items()} == largest_remainder(cfg.val_tokens, shares)
    book = [m for m in pool.meta if m["genre"] == "book"]
    assert len(book) == 1 and book[0]["n_tokens"] == info["genres"]["book"]["pool_budget"] < book[0]["doc_tokens"]
    assert info["genres"]["book"]["cut_tokens"] >= book[0]["doc_tokens"] - book[0]["n_tokens"]


def test_units_are_byte_identical_whatever_the_build_took(tmp_path, prepared, tokenizers, units_dir, monkeypatch):
    """The units directory is a DVC output that every EXP3 stage depends on: a wall-clock figure inside it
    would change its hash on each rebuild and rerun all EXP3 training. Timings go to tinyhelen.timing."""
    import types

    from tinyhelen import timing
    from tinyhelen.exp3 import units as units_mod
    from tinyhelen.tokenizer import load

    clock = iter(range(0, 10**6, 977))  # a much slower build: every clock reading 977 s later
    monkeypatch.setattr(units_mod, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    timing.clear()
    build_units(prepared / "corpus/leaner/train.jsonl", prepared / "corpus/leaner/validation.jsonl",
                load(tokenizers["leaner"]), UNITS_CFG, tmp_path / "u")
    for f in sorted(units_dir.iterdir()):
        assert (tmp_path / "u" / f.name).read_bytes() == f.read_bytes(), f.name
    assert timing.recorded()["seconds"] > 0 and timing.recorded()["tokens_per_s"] > 0
    timing.clear()


def test_chunk_units_option(tmp_path, prepared, tokenizers):
    from tinyhelen.tokenizer import load

    cfg = UnitsConfig(unit="chunk", unit_max_tokens=64, pool_tokens=3000, reference_tokens=0, val_tokens=128)
    build_units(prepared / "corpus/leaner/train.jsonl", prepared / "corpus/leaner/validation.jsonl",
                load(tokenizers["leaner"]), cfg, tmp_path / "u")
    units, _ = load_units(tmp_path / "u")
    assert units.lengths().max() == 64 and int(units.lengths().sum()) == 3000
    assert len({m["doc_id"] for m in units.meta}) < len(units)  # long documents became several units


# ------------------------------------------------------------------ report arithmetic
POOL = 4500  # tokens in the pool


def _run(losses, per_step, genres=None):
    """A hand-made run: ``losses`` at steps 0, 10, 20, ...; ``per_step`` unique training tokens consumed per 10
    steps (capped at the pool: a full-data run reads the whole pool, then repeats it)."""
    curve = [{"step": 10.0 * i, "tokens": 100.0 * i, "val_loss": v, "seen_tokens": float(min(POOL, per_step * i)),
              "pool_tokens": float(POOL), "pool_fraction": 1.0, **(genres or {})} for i, v in enumerate(losses)]
    return {"summary": {"final_val_loss": losses[-1], "best_val_loss": min(losses), "pool_fraction": 1.0,
                        "expansions": 0}, "curve": curve}


TRAIN = SimpleNamespace(max_steps=40, eval_every=10, batch_size=2, seq_len=5, model=SimpleNamespace(preset="tiny"))
RUNS = {("full-random", 0): _run([5, 4, 3.5, 3.0, 2.9], 1200),  # its best = its final, reached only at the end
        ("full-random", 1): _run([5, 4, 3.6, 3.1, 3.2], 1200),  # best 3.1 at step 30, final 3.2
        ("random", 0): _run([5, 3.8, 3.4, 3.1, 3.0], 800),
        ("random", 1): _run([5, 3.9, 3.5, 3.3, 3.2], 800),
        ("lmloss", 0): _run([5, 3.5, 2.95, 2.9, 2.85], 800),
        ("lmloss", 1): _run([5, 3.25, 3.15, 3.1, 3.3], 800)}


def _build(runs=RUNS, selected="lmloss", baselines=("full-random", "random")):
    return result.build(runs, ["full-random", "random", "lmloss"], [0, 1], selected, list(baselines), TRAIN,
                        pool_units=10, pool_tokens=POOL, non_embedding_params=1000)


def test_targets_steps_and_data_under_every_definition():
    res = _build()
    steps = lambda s, b, d: res.per_seed(s, b, d, "steps_to_target")  # noqa: E731
    data = lambda s, b, d: res.per_seed(s, b, d, "data_to_target")  # noqa: E731
    fr, rnd = "full-random", "random"
    # final (primary): per seed, the baseline's last loss; the baseline reaches it when it first gets there
    assert {s: r.target for s, r in res.reach_of("lmloss", fr, "final").items()} == {0: 2.9, 1: 3.2}
    assert steps(fr, fr, "final") == {0: 40, 1: 30}  # seed 1 was at 3.1 <= 3.2 by step 30
    assert steps("lmloss", fr, "final") == {0: 30, 1: 20}
    # data: unique training tokens consumed by then, for the baseline too (not the pool's size)
    assert data(fr, fr, "final") == {0: 4500, 1: 3600} and data("lmloss", fr, "final") == {0: 2400, 1: 1600}
    assert res.reduction("lmloss", fr, "final", "steps_to_target") == pytest.approx(1 - 25 / 35, abs=1e-4)
    assert res.reduction("lmloss", fr, "final", "data_to_target") == pytest.approx(1 - 2000 / 4050, abs=1e-4)
    # mean_final: the mean curve's last loss, one target; seed 1 of both never gets to 3.05
    assert res.target_mean(fr, "mean_final") == 3.05
    assert steps(fr, fr, "mean_final") == {0: 30, 1: None} and steps("lmloss", fr, "mean_final") == {0: 20, 1: None}
    assert res.reduction("lmloss", fr, "mean_final", "steps_to_target") is None  # not every seed reached it
    # best: per seed, the baseline's best loss (seed 0 reaches its best only at its last evaluation)
    assert steps(fr, fr, "best") == {0: 40, 1: 30} and steps("lmloss", fr, "best") == {0: 30, 1: 30}
    # against the iterative random control: its own targets
    assert {s: r.target for s, r in res.reach_of("lmloss", rnd, "final").items()} == {0: 3.0, 1: 3.2}
    assert steps(rnd, rnd, "final") == {0: 40, 1: 40} and steps("lmloss", rnd, "final") == {0: 20, 1: 20}
    assert res.reduction("lmloss", rnd, "final", "steps_to_target") == 0.5
    m = res.metrics()
    assert m["definition"] == "final" and m["targets"][fr] == {"final": 3.05, "mean_final": 3.05, "best": 3.0}
    assert m["strategies"]["lmloss"][fr]["step_reduction"] == pytest.approx(0.2857, abs=1e-4)
    assert m["selected"] == {"strategy": "lmloss", "final_val_loss": 3.075,
                             fr: {"step_reduction": 0.2857, "data_reduction": 0.5062},
                             rnd: {"step_reduction": 0.5, "data_reduction": 0.5}}
    md = document(res)
    assert re.search(r"\| full-random +\| mean_final +\| 3\.0500 +\| lmloss +\| 1/2 +\| 20 +\| not all reached", md)
    assert re.search(r"\| random +\| final +\| 3\.1000 +\| lmloss +\| 2/2 +\| 20 ± 0 +\| \+50\.0%", md)
    with pytest.raises(ValueError, match="curriculum"):
        _build(selected="sentlen")
    with pytest.raises(ValueError, match="baselines"):
        _build(baselines=("full-repeated",))


def test_glue_steps_to_the_baselines_last_checkpoint_score():
    """Where exp3_glue ran: per seed, the baseline's score at its last checkpoint is the target; a strategy
    reaches it at its first checkpoint at or above it; data = unique tokens consumed by that step."""
    scores = {("full-random", 0): {20: 0.50, 40: 0.60}, ("full-random", 1): {20: 0.55, 40: 0.58},
              ("lmloss", 0): {20: 0.61, 40: 0.62}, ("lmloss", 1): {20: 0.50, 40: 0.57},
              ("random", 0): {20: 0.40, 40: 0.60}, ("random", 1): {20: 0.58, 40: 0.50}}
    glue = [result.Exp3Glue(strategy=k[0], seed=k[1], step=st, mean_test_score=v, tasks={"mrpc": v})
            for k, by in scores.items() for st, v in by.items()]
    res = result.build(RUNS, ["full-random", "random", "lmloss"], [0, 1], "lmloss", ["full-random", "random"], TRAIN,
                       pool_units=10, pool_tokens=POOL, non_embedding_params=None, glue=(glue, ["mrpc"]))
    steps = lambda s, b: res.per_seed(s, b, "glue_last", "steps_to_target")  # noqa: E731
    assert {k: r.target for k, r in res.reach_of("lmloss", "full-random", "glue_last").items()} == {0: 0.6, 1: 0.58}
    assert steps("full-random", "full-random") == {0: 40, 1: 40} and steps("lmloss", "full-random") == {0: 20, 1: None}
    assert res.per_seed("lmloss", "full-random", "glue_last", "data_to_target") == {0: 1600, 1: None}
    assert steps("full-random", "random") == {0: 40, 1: 20}  # random's last scores: 0.60, 0.50
    table = reach_table(res)
    rows = table[(table.definition == "glue_last") & (table.strategy == "lmloss")].to_dict("records")
    assert [(r["baseline"], r["reached"], r["step reduction"]) for r in rows] == \
        [("full-random", "1/2", "not all reached"), ("random", "2/2", "+33.3%")]
    assert res.metrics()["targets"]["full-random"] == {"final": 3.05, "mean_final": 3.05, "best": 3.0}


def test_the_result_keeps_each_genres_final_loss():
    genres = {"val_loss_book": 3.0, "val_loss_web": 2.0}
    runs = {k: _run([r["val_loss"] for r in v["curve"]], 800, genres) for k, v in RUNS.items()}
    res = _build(runs)
    assert res.val_genres == ["book", "web"]
    assert res.runs_of("lmloss")[0].final_val_loss_by_genre == {"book": 3.0, "web": 2.0}
    assert re.search(r"\| final book +\| final web +\|", document(res))


def test_long_units_are_scored_in_windows(tiny_lm):
    import torch

    u = np.arange(2, 40)  # 38 tokens: windows of 16, 16, 6 tokens
    whole = scorers.unit_losses(tiny_lm, [u], eos_id=0, pad_id=1, window=64)
    windowed = scorers.unit_losses(tiny_lm, [u, u[:5]], eos_id=0, pad_id=1, window=16)
    # by hand: the sum of token losses of each window (continuing from the previous window's last token)
    total = 0.0
    with torch.no_grad():
        for prev, chunk in ((0, u[:16]), (u[15], u[16:32]), (u[31], u[32:])):
            x = torch.tensor([[prev, *chunk]])
            total += float(tiny_lm(input_ids=x, labels=x).loss) * len(chunk)
    assert windowed[0] == pytest.approx(total / len(u), abs=1e-5)
    assert windowed[0] != pytest.approx(whole[0], abs=1e-4)  # context is cut at window edges
    assert windowed[1] == pytest.approx(scorers.unit_losses(tiny_lm, [u[:5]], eos_id=0, pad_id=1)[0], abs=1e-5)
