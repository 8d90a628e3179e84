"""EXP3 follows the study's protocol: the defaults are the study's values (written out here, not read
from the code), every registered scorer puts the easiest units into the pool first, and the data-to-target
figure is the unique pool tokens the run has seen (not steps x batch, not the pool's size)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tinyhelen.config import load_section
from tinyhelen.exp3 import result, scorers
from tinyhelen.exp3.config import CurriculumParam, Exp3Config, ModelConfig, TrainConfig
from tinyhelen.exp3.curriculum import Curriculum, Sampler, build_model, fixed_packing, train_run
from tinyhelen.exp3.units import Units, load_units

from test_curriculum import units_dir  # noqa: F401  (shared fixture)


# ------------------------------------------------------------------ the study's defaults
def test_defaults_are_the_studys_exp3_protocol():
    c = Exp3Config()
    t = c.train
    assert sorted(c.strategies) == sorted(["random", "sentlen", "selfloss", "lmloss", "full-repeated",
                                           "full-random"])
    assert CurriculumParam().value == "lmloss"
    assert (t.eval_every, t.patience, t.min_delta, t.lr) == (20, 1, 0.0, 1e-2)
    assert (t.pacing, t.start_fraction, t.increment) == ("iterative", 0.05, 0.05)
    assert t.selfloss_candidates is None  # selfloss rescored over every unit outside the pool
    assert c.units.unit == "document"
    assert sorted(c.units.genres) == ["book", "conversation", "textbook", "web", "wiki"]
    assert t.model.arch == "llama" and t.model.shape == dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=512)
    assert "unigram" in scorers.SCORERS  # ours, beyond the study: registered, not in the default runs
    assert load_section("exp3", Exp3Config) == c  # params.yaml holds the same values


def test_proxy_has_the_studys_shape(tokenizers):
    from tinyhelen.exp1.models import non_embedding_params
    from tinyhelen.tokenizer import load

    m = build_model(ModelConfig(), load(tokenizers["leaner"]), 0)
    c = m.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (128, 4, 4, 512)
    assert non_embedding_params(m) == pytest.approx(1.05e6, rel=0.01)
    with pytest.raises(ValueError, match="model.shape"):
        build_model(ModelConfig(shape={"n_embd": 64}), load(tokenizers["leaner"]), 0)


# ------------------------------------------------------------------ easiest units first, for every scorer
@pytest.fixture(scope="module")
def pool_setup(units_dir, tokenizers):  # noqa: F811
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    units, _ = load_units(units_dir)
    pool = units.subset("pool")
    model = build_model(ModelConfig(), tok, 0).eval()  # stands in for the reference LM and the current proxy
    return pool, tok, model


@pytest.mark.parametrize("name", sorted(scorers.SCORERS))
def test_easiest_units_enter_the_pool_first(name, pool_setup):
    """Replays the pool growth of every registered scorer: after every expansion, no unit outside the pool
    is easier (lower score, computed here on its own) than a unit the expansion added."""
    pool, tok, model = pool_setup
    scorer = scorers.get(name)
    cfg = TrainConfig(batch_size=8, seq_len=32, start_fraction=0.2, increment=0.2)

    def scores_of(idx):
        inp = scorers.inputs_for(scorer, [pool.meta[i]["unit_id"] for i in idx], [pool.ids(i) for i in idx], tok,
                                 seed=3, reference_model=model, model=model, batch_size=8)
        return scorer.fn(inp)

    static = None if scorer.online else scores_of(list(range(len(pool))))
    cur = Curriculum(pool, name, cfg, 0, tok, static, None)
    cur.on_start(model, resumed=False, history=[])
    n = len(pool)
    assert len(cur.pool) == int(np.ceil(0.2 * n))
    if static is not None:  # a static order: the first pool is the easiest 20%
        first = set(cur.pool)
        assert max(static[i] for i in first) <= min(static[i] for i in range(n) if i not in first)
    grown = 0
    while len(cur.pool) < n:
        before = list(cur.pool)
        rest = [i for i in range(n) if i not in set(before)]
        # the difficulty of the remaining units at this expansion: static scores are over the whole pool
        # (unigram frequencies depend on it), online ones come from the current model
        s = dict(zip(rest, static[rest] if static is not None else scores_of(rest)))
        cur.expand_to(min(n, len(before) + int(np.ceil(0.2 * n))), model)
        added = [i for i in cur.pool if i not in set(before)]
        assert cur.pool[:len(before)] == before and added
        left = [i for i in rest if i not in set(added)]
        if left:
            assert max(s[i] for i in added) <= min(s[i] for i in left), f"{name}: a harder unit entered first"
        grown += 1
    assert grown >= 2 and sorted(cur.pool) == list(range(n))


# ------------------------------------------------------------------ data to target = unique pool tokens seen
def _distinct_units(lengths):
    """Units whose token ids are all different, so distinct ids seen = unique pool tokens seen."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.arange(1, offsets[-1] + 1, dtype=np.int64)
    return Units(tokens, offsets, [{"unit_id": f"u{i}"} for i in range(len(lengths))])


@pytest.mark.parametrize("fixed", [False, True])
def test_sampler_counts_unique_pool_tokens_seen(fixed):
    units = _distinct_units([5, 9, 3, 12, 7, 4])
    rng = np.random.default_rng(0)
    sampler = Sampler()
    if fixed:
        sampler.fixed_blocks, sampler.fixed_data, _ = fixed_packing(units, rng.permutation(len(units)), 4, 0)
    pool, seen = [0, 1, 2], set()
    for k in range(12):
        if k == 3:  # the pool grows mid-run (a curriculum expansion)
            pool = list(range(len(units)))
            sampler.restart()
        b = sampler.batch(rng, pool, units, 2, 4, eos=0)
        seen |= set(b[b != 0].tolist())
        assert sampler.seen_tokens == len(seen), k
    # many passes over a 40-token pool: every token once, not 12 x 2 x 4 = 96
    assert sampler.seen_tokens == len(seen) <= int(units.lengths().sum()) < 96


def test_runs_report_unique_pool_tokens_as_data(pool_setup):
    pool, tok, _ = pool_setup
    val = np.asarray(pool.tokens[:256])
    cfg = TrainConfig(max_steps=6, batch_size=2, seq_len=32, eval_every=2, warmup_steps=1, checkpoints=0)
    big_res = train_run(pool, val, "full-random", cfg, 0, tok)
    big = big_res["curve"][-1]
    assert big["pool_tokens"] == int(pool.lengths().sum())  # the whole pool is available ...
    assert 0 < big["seen_tokens"] <= big["tokens"] == 6 * 2 * 32 < big["pool_tokens"]  # ... but not all seen
    small = _distinct_units([5, 9, 3, 12, 7, 4])  # a 40-token pool, read many times over
    res = train_run(small, np.tile(small.tokens, 7), "full-random", cfg, 0, tok)
    curve = res["curve"]
    assert curve[0]["val_loss"] > curve[1]["val_loss"]
    assert [r["seen_tokens"] for r in curve] == [0, 40, 40, 40] and curve[-1]["tokens"] == 384
    # the report's data-to-target is that figure at the step the target is reached
    target = curve[1]["val_loss"]
    runs = {("full-random", 0): {"summary": res["summary"], "curve": curve}}
    built = result.build(runs, ["full-random"], [0], "full-random", target, "full-random",
                         SimpleNamespace(max_steps=6, eval_every=2, batch_size=2, seq_len=32,
                                         model=SimpleNamespace(preset="tiny")), pool_units=6,
                         pool_tokens=40, non_embedding_params=None)
    run = built.runs[0]
    hit = next(r for r in curve if r["val_loss"] <= target)
    assert run.data_to_target == hit["seen_tokens"] == 40 and hit["tokens"] >= 128  # not steps x batch
    assert run.pool_tokens_at_target == 40 and run.data_at_end == 40
    target = min(r["val_loss"] for r in big_res["curve"])
    built = result.build({("full-random", 0): {"summary": big_res["summary"], "curve": big_res["curve"]}},
                         ["full-random"], [0], "full-random", target, "full-random",
                         SimpleNamespace(max_steps=6, eval_every=2, batch_size=2, seq_len=32,
                                         model=SimpleNamespace(preset="tiny")), pool_units=len(pool),
                         pool_tokens=big["pool_tokens"], non_embedding_params=None)
    hit = next(r for r in big_res["curve"] if r["val_loss"] <= target)
    assert hit["step"] > 0 and built.runs[0].data_to_target == hit["seen_tokens"] < hit["pool_tokens"]  # not the pool


# ------------------------------------------------------------------ Leaner-GLUE of every run and the untrained proxy
def test_glue_of_every_checkpoint_and_the_untrained_proxy(pool_setup, prepared, tokenizers, tmp_path):
    """A run's checkpoints and the random-init proxy are fine-tuned with EXP1's code; the typed result and
    the Markdown show GLUE per strategy and step (the untrained proxy at step 0)."""
    from tinyhelen.exp3 import runs
    from tinyhelen.exp1.glue import GlueConfig

    pool, tok, _ = pool_setup
    cfg = Exp3Config(seeds=[0], train=dict(max_steps=4, batch_size=2, seq_len=32, eval_every=2, warmup_steps=1),
                     glue=dict(tasks=["wnli"], seeds=[0]))
    assert cfg.train.saved_steps == [2, 4]
    run_dir = tmp_path / "run"
    train_run(pool, np.asarray(pool.tokens[:128]), "sentlen", cfg.train, 0, tok, np.arange(len(pool), dtype=float),
              checkpoint_dir=run_dir)
    gcfg = GlueConfig(tasks=["cola", "wnli"], lr=[1e-3], seeds=[0, 1], epochs=1, batch_size=16,
                      max_train_examples=16, max_eval_examples=16, threads=1, device="cpu")
    out = {name: runs.glue(name, 0, run_dir if name == "sentlen" else None, tokenizers["leaner"],
                           prepared / "glue", cfg, gcfg, tmp_path) for name in ("sentlen", runs.UNTRAINED)}
    assert [s["step"] for s in out["sentlen"]["scores"]] == [2, 4]
    assert [s["step"] for s in out[runs.UNTRAINED]["scores"]] == [0]
    assert out["sentlen"]["tasks"] == ["wnli"] and set(out["sentlen"]["scores"][0]["tasks"]) == {"wnli"}
    from tinyhelen import runfiles
    from tinyhelen.exp1.run_files import write_glue
    from tinyhelen.exp3.rebuild import read_glue

    for name, rep in out.items():  # as the exp3_glue stage writes its run files, and the report reads them
        write_glue(runfiles.path(tmp_path, "exp3_glue", name=name, seed=0),
                   {int(k.removeprefix("step")): t for k, t in rep["details"].items()}, "exp3_glue", strategy=name,
                   run_seed=0, enabled=True, tasks=rep["tasks"])
    rows, tasks = read_glue(tmp_path, ["sentlen", runs.UNTRAINED], [0])
    assert tasks == ["wnli"] and {(r.strategy, r.step) for r in rows} == {("sentlen", 2), ("sentlen", 4),
                                                                          ("untrained", 0)}
    table = result.glue_table(SimpleNamespace(glue=rows, glue_tasks=tasks))
    assert [(r["strategy"], r["step"]) for r in table] == [("sentlen", 2), ("sentlen", 4), ("untrained", 0)]


# ------------------------------------------------------------------ device and precision: one code path
def test_scoring_follows_the_training_device_and_precision(pool_setup, units_dir, tokenizers, tmp_path,  # noqa: F811
                                                           monkeypatch):
    """The trainer hands the training device's precision to the online scorer and the difficulty stage
    puts the reference LM on the training device; bf16 autocast runs on CPU through the CUDA code path."""
    from tinyhelen.exp3 import runs
    from tinyhelen.train.config import ComputeConfig

    pool, tok, model = pool_setup
    seen = []
    real = scorers.SCORERS["selfloss"]

    def spy(inp):
        seen.append((inp.bf16, next(inp.model.parameters()).device.type))
        return real.fn(inp)

    monkeypatch.setitem(scorers.SCORERS, "selfloss", scorers.Scorer("selfloss", spy, real.needs, online=True))
    cur = Curriculum(pool, "selfloss", TrainConfig(batch_size=4, start_fraction=0.2), 0, tok, None, None,
                     ComputeConfig(device="cpu", precision="bf16", threads=1))
    cur.on_start(model, resumed=False, history=[])
    cur.expand_to(len(cur.pool) + 3, model)  # an expansion rescored by the current model
    assert seen == [(True, "cpu")]
    model.save_pretrained(str(tmp_path / "ref"))
    out = {}
    for precision in ("fp32", "bf16"):
        c = Exp3Config(device="cpu", precision=precision, threads=1)
        runs.difficulty("lmloss", units_dir, tokenizers["leaner"], c, tmp_path / f"{precision}.jsonl", tmp_path / "ref")
        out[precision] = scorers.read_scores(tmp_path / f"{precision}.jsonl", pool.unit_ids)
    assert np.allclose(out["fp32"], out["bf16"], rtol=0.05) and not np.array_equal(out["fp32"], out["bf16"])
