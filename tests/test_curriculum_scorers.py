"""EXP3's scorer registry: the strategy list and the params type come from it, and every scorer receives
exactly the inputs it declares. Toy scorers registered here (only for these tests) run through the
difficulty stage's scoring and a whole curriculum run without touching any other file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinyhelen import params
from tinyhelen.config import ParamsError
from tinyhelen.exp3 import runs, scorers
from tinyhelen.exp3.config import Exp3Config

from test_curriculum import units_dir  # noqa: F401  (shared fixture)

SEEN: dict[str, scorers.ScoringInputs] = {}


def _chars(inp: scorers.ScoringInputs) -> np.ndarray:
    """Toy static scorer: characters of the unit's text (needs the decoded texts)."""
    SEEN["chars"] = inp
    return np.array([len(t) for t in inp.texts], dtype=np.float64)


def _online_chars(inp: scorers.ScoringInputs) -> np.ndarray:
    """Toy online scorer: characters of the text, checking that the current model is passed."""
    assert inp.model is not None and inp.model.training is not None
    SEEN["online"] = inp
    return np.array([len(t) for t in inp.texts], dtype=np.float64)


@pytest.fixture
def toy_scorers(monkeypatch):
    monkeypatch.setitem(scorers.SCORERS, "chars", scorers.Scorer("chars", _chars, frozenset({"texts"})))
    monkeypatch.setitem(scorers.SCORERS, "onlinechars",
                        scorers.Scorer("onlinechars", _online_chars, frozenset({"texts", "model"}), online=True))
    SEEN.clear()


def _cfg(strategy: str) -> Exp3Config:
    return Exp3Config(strategies=["full-random", strategy], seeds=[0], threads=1, device="cpu", train=dict(
        max_steps=8, batch_size=4, seq_len=32, eval_every=2, patience=1, start_fraction=0.2, increment=0.2,
        selfloss_candidates=16, warmup_steps=2, pacing="linear", full_at=0.5))


def test_strategies_and_params_type_come_from_the_registry(toy_scorers):
    assert scorers.strategy_names()[-2:] == ["full-random", "full-repeated"]
    assert {"chars", "onlinechars", "lmloss", "selfloss"} <= set(scorers.strategy_names())
    assert "chars" in scorers.static_names() and "onlinechars" not in scorers.static_names()
    assert params.validate("curriculum", "chars").value == "chars"
    assert params.validate("exp3", {"strategies": ["chars", "full-random"]}).strategies == ["chars", "full-random"]
    with pytest.raises(ParamsError, match="exp3.strategies"):
        params.validate("exp3", {"strategies": ["chars", "nope"]})
    with pytest.raises(ValueError, match="unknown needs"):
        scorers.register("bad", needs=("wikipedia",))
    with pytest.raises(ValueError, match="must need 'model'"):
        scorers.register("bad", needs=("texts",), online=True)


def test_each_scorer_gets_what_it_declares(units_dir, tokenizers, tmp_path, toy_scorers):
    from tinyhelen.exp3.units import load_tokenizer, load_units

    runs.difficulty("chars", units_dir, tokenizers["leaner"], _cfg("chars"), tmp_path / "chars.jsonl")
    pool = load_units(units_dir)[0].subset("pool")
    tok = load_tokenizer(tokenizers["leaner"])
    texts = [tok.decode(pool.ids(i).tolist()) for i in range(len(pool))]
    assert SEEN["chars"].texts == texts and SEEN["chars"].reference_model is None
    got = [json.loads(line)["score"] for line in (tmp_path / "chars.jsonl").read_text().splitlines()]
    assert got == [float(len(t)) for t in texts]
    # the study's scorers: texts only for the text scorers, the reference LM only for lmloss
    inp = scorers.inputs_for(scorers.get("random"), ["u"], [np.array([5, 6])], tok, seed=3, reference_model="M")
    assert inp.texts == [] and inp.reference_model is None and inp.seed == 3
    inp = scorers.inputs_for(scorers.get("sentlen"), ["u"], [np.array([5, 6])], tok)
    assert inp.texts == [tok.decode([5, 6])]
    with pytest.raises(ValueError, match="needs reference_model"):
        scorers.inputs_for(scorers.get("lmloss"), ["u"], [np.array([5, 6])], tok)
    # online scorers are not scored up front
    runs.difficulty("onlinechars", units_dir, tokenizers["leaner"], _cfg("onlinechars"), tmp_path / "o.jsonl")
    assert {json.loads(line)["score"] for line in (tmp_path / "o.jsonl").read_text().splitlines()} == {None}


@pytest.mark.parametrize("strategy", ["chars", "onlinechars"])
def test_toy_scorer_runs_a_curriculum(units_dir, tokenizers, tmp_path, toy_scorers, strategy):
    cfg = _cfg(strategy)
    scores = tmp_path / f"{strategy}.jsonl"
    runs.difficulty(strategy, units_dir, tokenizers["leaner"], cfg, scores)
    summary = runs.train(strategy, 0, units_dir, scores, tokenizers["leaner"], cfg, tmp_path / "run",
                         resume_dir=tmp_path / "resume", live_dir=tmp_path / "live")
    assert summary["strategy"] == strategy and summary["steps"] == 8 and summary["expansions"] >= 1
    assert (tmp_path / "run" / "curve.tsv").exists() and not (tmp_path / "resume").exists()
    assert (tmp_path / "live" / "plots" / "metrics" / "pool_fraction.tsv").exists()
    if strategy == "onlinechars":  # scored inside the trainer, on texts of units outside the pool
        assert SEEN["online"].texts and len(SEEN["online"].texts) == len(SEEN["online"].unit_ids)
