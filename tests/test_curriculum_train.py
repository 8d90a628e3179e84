"""EXP3 (issue 6): the curriculum trainer expands exactly on plateau, and a resumed run restores the pool
(and everything else) so that it ends exactly like an uninterrupted run."""
from __future__ import annotations

import numpy as np
import pytest

from tinyhelen.curriculum.config import ModelConfig, TrainConfig
from tinyhelen.curriculum.pacing import PlateauTracker
from tinyhelen.curriculum.scorers import ScoringInputs, score_sentlen
from tinyhelen.curriculum.trainer import train_run
from tinyhelen.curriculum.units import load_units

from test_curriculum import units_dir  # noqa: F401  (shared fixture)

CFG = TrainConfig(model=ModelConfig(preset="tiny"), max_steps=12, batch_size=4, seq_len=32, lr=3e-3,
                  warmup_steps=2, eval_every=2, patience=1, start_fraction=0.1, increment=0.1,
                  selfloss_candidates=16)


@pytest.fixture(scope="module")
def setup(units_dir, tokenizers):
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    units, val = load_units(units_dir)
    pool = units.subset("pool")
    texts = [tok.decode(pool.ids(i).tolist()) for i in range(len(pool))]
    scores = score_sentlen(ScoringInputs(pool.unit_ids, texts, []))
    return pool, val[:256], tok, scores


def _strip(res):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res["curve"]]


def test_iterative_pacing_expands_exactly_on_plateau(setup):
    pool, val, tok, scores = setup
    res = train_run(pool, val, "sentlen", CFG, 0, tok, scores)
    curve = res["curve"]
    assert [r["step"] for r in curve] == list(range(0, 13, 2))
    # replay the plateau rule on the logged validation losses: expansions happen at exactly those evals
    t = PlateauTracker(CFG.patience, CFG.min_delta)
    plateaus = [r["step"] for r in curve if t.update(r["val_loss"]) and r["step"] < CFG.max_steps]
    assert [e["step"] for e in res["expansions"]] == plateaus
    step_in = int(np.ceil(0.1 * len(pool)))
    sizes = [r["pool_units"] for r in curve]
    assert sizes[0] == step_in
    for a, b, r in zip(sizes, sizes[1:], curve):
        assert b - a == (min(step_in, len(pool) - a) if r["step"] in plateaus else 0)
    # the pool is always the easiest units by sentence length
    order = np.argsort(scores, kind="stable")
    assert sorted(res["pool"]) == sorted(order[:sizes[-1]].tolist())
    assert res["summary"]["tokens"] == 12 * 4 * 32


@pytest.mark.parametrize("strategy", ["selfloss", "sentlen"])
def test_resume_mid_curriculum_equals_uninterrupted(setup, tmp_path, strategy):
    pool, val, tok, scores = setup
    sc = scores if strategy == "sentlen" else None
    full = train_run(pool, val, strategy, CFG, 1, tok, sc)
    assert full["expansions"], "test needs at least one expansion"
    stop = full["expansions"][0]["step"]  # interrupt right after the first expansion, mid-curriculum
    state = tmp_path / "state.pt"
    assert train_run(pool, val, strategy, CFG, 1, tok, sc, state_path=state, stop_at_step=stop) is None
    import torch

    saved = torch.load(state, weights_only=False)
    assert saved["step"] == stop < CFG.max_steps
    assert int(np.ceil(0.1 * len(pool))) < len(saved["pool"]) == full["expansions"][0]["pool_units"] < len(pool)
    resumed = train_run(pool, val, strategy, CFG, 1, tok, sc, state_path=state)
    assert _strip(resumed) == _strip(full)
    assert resumed["expansions"] == full["expansions"]
    for a, b in zip(resumed["model"].parameters(), full["model"].parameters()):
        assert torch.equal(a, b)


def test_baselines_full_pool_and_fixed_packing(setup):
    pool, val, tok, _ = setup
    cfg = CFG.model_copy(update={"max_steps": 4})
    fr = train_run(pool, val, "full-random", cfg, 0, tok)
    rep = train_run(pool, val, "full-repeated", cfg, 0, tok)
    assert fr["summary"]["pool_fraction"] == rep["summary"]["pool_fraction"] == 1.0
    assert fr["expansions"] == rep["expansions"] == []
    assert rep["summary"]["tokens_cut_by_packing"] < cfg.seq_len
    with pytest.raises(ValueError, match="needs difficulty scores"):
        train_run(pool, val, "lmloss", cfg, 0, tok)


def test_stale_state_is_ignored(setup, tmp_path):
    pool, val, tok, scores = setup
    cfg = CFG.model_copy(update={"max_steps": 4})
    state = tmp_path / "state.pt"
    train_run(pool, val, "sentlen", cfg, 0, tok, scores, state_path=state, stop_at_step=2)
    other = train_run(pool, val, "sentlen", cfg, 5, tok, scores, state_path=state)  # other seed: fresh start
    fresh = train_run(pool, val, "sentlen", cfg, 5, tok, scores)
    assert _strip(other) == _strip(fresh)
