"""EXP3: the curriculum trainer expands exactly on plateau, and a resumed run restores the pool (and
everything else) so that it ends exactly like an uninterrupted run, DVCLive log included."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinyhelen.exp3.config import ModelConfig, TrainConfig
from tinyhelen.exp3.pacing import PlateauTracker
from tinyhelen.exp3.scorers import ScoringInputs, score_sentlen
from tinyhelen.exp3.curriculum import train_run
from tinyhelen.exp3.units import load_units

from test_curriculum import units_dir  # noqa: F401  (shared fixture)

CFG = TrainConfig(model=ModelConfig(preset="tiny"), max_steps=12, batch_size=4, seq_len=32, lr=1e-2,
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
    return pool, val, tok, scores


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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
    full = train_run(pool, val, strategy, CFG, 1, tok, sc, live_dir=tmp_path / "live_full")
    assert full["expansions"], "test needs at least one expansion"
    stop = full["expansions"][0]["step"]  # interrupt right after the first expansion, mid-curriculum
    resume = tmp_path / "resume"
    assert train_run(pool, val, strategy, CFG, 1, tok, sc, resume_dir=resume, stop_after=stop,
                     live_dir=tmp_path / "live") is None
    import torch

    from tinyhelen.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(resume)
    saved = torch.load(ckpt / "loop_state.pt", weights_only=False)["callbacks"][0]
    assert ckpt.name == f"step-{stop:07d}" and stop < CFG.max_steps
    assert int(np.ceil(0.1 * len(pool))) < len(saved["pool"]) == full["expansions"][0]["pool_units"] < len(pool)
    resumed = train_run(pool, val, strategy, CFG, 1, tok, sc, resume_dir=resume, live_dir=tmp_path / "live")
    assert resumed["curve"] == full["curve"] and resumed["summary"] == full["summary"]
    assert resumed["expansions"] == full["expansions"]
    for a, b in zip(resumed["model"].parameters(), full["model"].parameters()):
        assert torch.equal(a, b)
    assert _files(tmp_path / "live") == _files(tmp_path / "live_full")  # the DVCLive log, byte for byte
    assert "plots/metrics/pool_fraction.tsv" in _files(tmp_path / "live")


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
    resume = tmp_path / "resume"
    train_run(pool, val, "sentlen", cfg, 0, tok, scores, resume_dir=resume, stop_after=2)
    other = train_run(pool, val, "sentlen", cfg, 5, tok, scores, resume_dir=resume)  # other seed: fresh start
    fresh = train_run(pool, val, "sentlen", cfg, 5, tok, scores)
    assert other["curve"] == fresh["curve"]


@pytest.mark.slow
def test_exp3_train_stage_metrics_are_byte_identical(units_dir, tokenizers, tmp_path):
    from test_train import run_stage_twice

    from tinyhelen.exp3 import runs
    from tinyhelen.exp3.config import Exp3Config

    train = dict(max_steps=8, batch_size=4, seq_len=32, eval_every=2, patience=1, start_fraction=0.1,
                 increment=0.1, selfloss_candidates=16, warmup_steps=2)
    scores = tmp_path / "selfloss.jsonl"
    runs.difficulty("selfloss", units_dir, tokenizers["leaner"], Exp3Config(), scores)
    params = {"exp3": {"threads": 1, "device": "cpu", "train": train}}
    files = run_stage_twice("exp3_train.py", ["selfloss", "0", "--units", str(units_dir), "--difficulty", str(scores),
                                              "--tokenizer", str(tokenizers["leaner"]), "--out", "run", "--live",
                                              "live", "--resume", "resume", "--run-file", "selfloss-s0.tsv"],
                            params, tmp_path, ["run/summary.json", "run/curve.tsv", "run/expansions.json", "live",
                                               "selfloss-s0.tsv"])
    summary = json.loads(files["run/summary.json"])
    assert summary["steps"] == 8 and not {"seconds", "cpu_seconds_this_process", "tokens_per_s"} & set(summary)
    from tinyhelen import runfiles
    from tinyhelen.exp3.rebuild import read_run_file

    rf = runfiles.read(tmp_path / "run1" / "selfloss-s0.tsv", "exp3")  # the run file: the curve, the pool, the size
    assert [r["step"] for r in rf.rows] == [0, 2, 4, 6, 8] and rf.meta["expansions"] == summary["expansions"]
    assert rf.meta["pool_units_total"] == summary["total_units"] and rf.meta["non_embedding_params"] > 0
    back = read_run_file(rf)["summary"]
    assert (back["final_val_loss"], back["pool_fraction"]) == (summary["final_val_loss"], summary["pool_fraction"])
    head = files["run/curve.tsv"].decode().splitlines()[0].split("\t")
    assert [c for c in head if c.startswith("val_loss_")] == [f"val_loss_{g}" for g in sorted(summary["val_weights"])]
    assert len(summary["val_weights"]) == 5
