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
    assert c.report.baselines == ["full-random", "random"]  # the study's baseline and the iterative control
    assert load_section("exp3", Exp3Config) == c  # params.yaml holds the same values


def test_optimiser_and_schedule_in_effect_are_the_studys():
    """The study's curriculum script passes no optimiser or schedule flag to the Hugging Face Trainer, so its
    defaults ran: AdamW (0.9, 0.999), eps 1e-8, no weight decay, clipping at 1.0, linear warm-up and linear
    decay to 0. Read from what the training loop builds and sets, compared with transformers' own scheduler."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from tinyhelen.train.optim import build_optimizer, lr_at

    cfg = TrainConfig()
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))
    opt = build_optimizer(model, cfg, cfg.lr)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    for g in opt.param_groups:
        assert (g["betas"], g["eps"], g["weight_decay"], g["lr"]) == ((0.9, 0.999), 1e-8, 0.0, 1e-2)
    assert cfg.max_grad_norm == 1.0
    # the study's run: 100 warm-up steps of 2,500; lr of the update at optimiser step k (0-based)
    study = cfg.model_copy(update={"warmup_steps": 100})
    hf_opt = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=1e-2)
    sched = get_linear_schedule_with_warmup(hf_opt, 100, 2500)
    hf = []
    for _ in range(2500):
        hf.append(hf_opt.param_groups[0]["lr"])
        hf_opt.step()
        sched.step()
    ours = [lr_at(k, 1e-2, 2500, study) for k in range(2500)]
    assert ours[100:] == pytest.approx(hf[100:], rel=1e-9, abs=1e-15)  # linear decay to 0, identical
    assert ours[-1] == pytest.approx(1e-2 / 2400) and ours[1250] == pytest.approx(1e-2 * 1250 / 2400)
    # warm-up: the Trainer's first update has lr 0; ours starts at lr / warmup (one step ahead)
    assert ours[:99] == pytest.approx(hf[1:100]) and hf[0] == 0.0 < ours[0]
    assert TrainConfig().warmup_steps / TrainConfig().max_steps == 100 / 2500  # the study's share


def test_per_genre_validation_losses_and_the_overall_one(pool_setup, units_dir):  # noqa: F811
    """Every evaluation logs each genre's loss; the overall one is their mean weighted by predicted tokens
    (recomputed here from the curve), and each genre's loss is the final model's loss on its stream."""
    import math

    import torch
    import torch.nn.functional as F

    from tinyhelen.train.optim import lr_at

    pool, tok, _ = pool_setup
    _, val = load_units(units_dir)
    cfg = TrainConfig(max_steps=4, batch_size=2, seq_len=32, eval_every=2, warmup_steps=1, checkpoints=0)
    res = train_run(pool, val, "full-random", cfg, 0, tok)
    w = res["summary"]["val_weights"]
    # a stream of n tokens in blocks of 32 (the last one shorter) predicts all but the first token of each block
    assert w == {g: (b - a) - math.ceil((b - a) / 32) for g, (a, b) in val.spans.items()}
    assert len(set(w.values())) > 1  # unequal genres: a plain mean of the genres would differ
    for row in res["curve"]:
        per = {g: row[f"val_loss_{g}"] for g in val.genres}
        assert row["val_loss"] == pytest.approx(sum(w[g] * per[g] for g in per) / sum(w.values()), abs=2e-5)
        assert row["step"] == 0 or row["lr"] == lr_at(row["step"] - 1, cfg.lr, cfg.max_steps, cfg)
    model, last = res["model"].eval(), res["curve"][-1]
    for g, stream in val.strata().items():
        total, n = 0.0, 0
        for k in range(0, len(stream), 32):
            x = torch.as_tensor(stream[k:k + 32].astype(np.int64))[None]
            if x.shape[1] > 1:
                with torch.no_grad():
                    logits = model(input_ids=x).logits[0, :-1]
                total += float(F.cross_entropy(logits.float(), x[0, 1:], reduction="sum"))
                n += x.shape[1] - 1
        assert n == w[g] and last[f"val_loss_{g}"] == pytest.approx(total / n, abs=2e-5)


def test_the_saved_study_profile_runs_the_compared_strategies_over_five_seeds():
    """`cpu-study-exp3`: EXP3 alone (only exp3 keys differ from the default), at the study's steps and warm-up,
    with every compared run (lmloss, the random control, full-random) over at least MIN_SEEDS seeds."""
    from tinyhelen import profiles
    from tinyhelen.report.verdicts import MIN_SEEDS

    base, prof = profiles.compose("default"), profiles.compose("cpu-study-exp3")
    assert {k for k in base if base[k] != prof.get(k)} == {"exp3", "profile"}
    c = Exp3Config.model_validate(prof["exp3"])
    assert {"lmloss", "random", "full-random"} <= set(c.strategies) and set(c.report.baselines) <= set(c.strategies)
    assert len(c.seeds) >= MIN_SEEDS and (c.train.max_steps, c.train.warmup_steps) == (2500, 100)


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
    # the report's data-to-target is that figure at the step the target is reached (here: the baseline's own
    # best loss, definition `best`), for a full-data baseline too: not the pool's size, not steps x batch
    train = SimpleNamespace(max_steps=6, eval_every=2, batch_size=2, seq_len=32, model=SimpleNamespace(preset="tiny"))
    built = result.build({("full-random", 0): res}, ["full-random"], [0], "full-random", ["full-random"], train,
                         pool_units=6, pool_tokens=40, non_embedding_params=None)
    run, reach = built.runs[0], built.reach_of("full-random", "full-random", "best")[0]
    hit = next(r for r in curve if r["val_loss"] <= min(r["val_loss"] for r in curve))
    assert reach.data_to_target == hit["seen_tokens"] == 40 and hit["tokens"] >= 128  # not steps x batch
    assert reach.pool_tokens_at_target == 40 and run.data_at_end == 40
    built = result.build({("full-random", 0): big_res}, ["full-random"], [0], "full-random", ["full-random"], train,
                         pool_units=len(pool), pool_tokens=big["pool_tokens"], non_embedding_params=None)
    hit = next(r for r in big_res["curve"] if r["val_loss"] <= min(r["val_loss"] for r in big_res["curve"]))
    reach = built.reach_of("full-random", "full-random", "best")[0]
    assert hit["step"] > 0 and reach.data_to_target == hit["seen_tokens"] < hit["pool_tokens"]  # not the pool


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
