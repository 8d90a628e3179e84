"""The report card: each experiment's claims decided on constructed typed results (the rules themselves:
tests/test_verdicts.py), the scale qualifier, the "Protocol vs study" table, unverified input, the pipeline-check
mark, the stage on a fixture (tests/fixtures/report: typed results cut from a CPU-default run, rebuilt from the run
files under reports/runs/ that make_runs.py wrote for them),
graceful degradation, and the metrics files (no wall-clock keys; a `curriculum` change touches few)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import stage_argv
from tinyhelen import report as R
from tinyhelen import study
from tinyhelen.entropy.result import EntropyResult, EntropySetting, EntropySide
from tinyhelen.exp1.result import Exp1Result, GlueCell, PretrainRun
from tinyhelen.exp2.result import Estimate, Exp2Recipe, Exp2Result
from tinyhelen.exp3.result import Exp3Reach, Exp3Result, Exp3Run
from tinyhelen.exp3.targets import DEFINITIONS
from tinyhelen.report import protocol
from tinyhelen.cli import stage_name
from tinyhelen.io import InputError
from tinyhelen.report.claims import reduction_claim
from tinyhelen.report.provenance import resolved_params
from tinyhelen.entropy.tables import card as card_entropy

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "report"
STUDY = study.STUDY_SCALE
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                    "3a7e9b550000000a49444154789c63680000008200816d8e5b0a0000000049454e44ae426082")
CFG = R.ReportConfig()


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    (root / "reports" / "figures").mkdir()
    (root / "reports" / "figures" / "entropy.png").write_bytes(PNG)
    (root / "reports" / "figures" / "zipf.png").write_bytes(PNG)
    (root / "reports" / "entropy.md").write_text("# entropy tables\n")
    return root


def _claims(ctx) -> dict[str, R.Claim]:
    return {c.id: c for c in ctx["claims"]}


def _row(md: str, start: str) -> list[str]:
    """Cells of the first Markdown table row whose first cell is ``start`` (padding stripped)."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == start:
            return cells
    raise AssertionError(f"no row {start!r}")


# ------------------------------------------------------------------------------------ scale
def test_scale_text():
    assert R.scale_text(study.scale_fractions("EXP1", STUDY["EXP1"].tokens_per_run / 2000, 10_000,
                                                 STUDY["EXP1"].non_embedding_params)) \
        == "at 1/2,000 of the study's tokens per run"
    assert R.scale_text({"tokens": 262_144 / 5_242_880_000, "steps": 128 / 10_000, "params": 1e6 / 14.5e6}) \
        == "at 1/20,000 of the study's tokens per run, 1/78 of its steps and 1/14 of its model size"
    assert R.scale_text({"tokens": 1.0, "steps": 1.02, "params": None}) == "at the study's scale"


# ------------------------------------------------------------------------------------ EXP1
NOISE = [0.8, -1.1, 0.3, -0.6, 1.2, -0.2, 0.5, -0.9, 0.1, -0.4, 0.7]


def _exp1(effect: float, spread: float, llama: float = 0.0, tokens: int = STUDY["EXP1"].tokens_per_run,
          steps: int = 10_000, params: int = 14_505_000, seeds: int = 5) -> Exp1Result:
    archs, tasks, k = ["bert", "llama", "xlnet"], ["cola", "mrpc", "rte", "stsb", "wnli"], 0
    cells = []
    for a in archs:
        for ti, t in enumerate(tasks):
            base = 0.5 + 0.01 * ti + (llama if a == "llama" else 0.0)
            for init in ("leaner", "ori", "scratch"):
                scores = {}
                for s in range(seeds):
                    k += 1
                    scores[s] = base + (effect + spread * NOISE[k % len(NOISE)] if init == "leaner" else 0.0)
                    scores[s] += 5.0 if t == "wnli" and init == "ori" else 0.0  # WNLI never counts
                m = sum(scores.values()) / len(scores)
                cells.append(GlueCell(arch=a, init=init, task=t, test=m, std=0.0, best_lr=1e-3, seeds=scores))
    pre = [PretrainRun(arch=a, side=s, preset="x", tokens_seen=tokens, steps=steps, non_embedding_params=params,
                         train_loss=5.0, val_loss=5.0) for a in archs for s in ("leaner", "ori")]
    return Exp1Result(preset="x", archs=archs, inits=["leaner", "ori", "scratch"], tasks=tasks,
                        tokens_per_run=tokens, cells=cells, pretrain=pre)


def test_exp1_verdicts():
    v = lambda e1: [c.verdict for c in R.claims_exp1(e1, CFG)]  # noqa: E731
    assert v(_exp1(0.03, 0.01, llama=0.05)) == [R.REPRODUCED, R.REPRODUCED]
    assert v(_exp1(-0.03, 0.01, llama=-0.05)) == [R.CONTRADICTED, R.CONTRADICTED]
    noisy = R.claims_exp1(_exp1(0.0, 0.05, llama=0.0), CFG)
    assert [c.verdict for c in noisy] == [R.INCONCLUSIVE, R.INCONCLUSIVE]
    assert "contains zero" in noisy[0].why
    c = R.claims_exp1(_exp1(0.03, 0.01), CFG)[0]
    assert c.numbers["n"] == 5 and c.numbers["pairs"] == 60  # 5 seeds; 3 archs x 4 study tasks: WNLI not counted
    assert c.numbers["p_sign_flip"] == 0.0625  # every seed ahead: the smallest p 5 seeds can give
    assert "exact sign-flip p = 0.0625" in c.measured and c.why.startswith("effect +0.0301 [")
    assert c.scale == "at the study's scale"
    assert [x.verdict for x in R.claims_exp1(None, CFG, "reports/results/exp1.json absent")] == [R.NOT_RUN] * 2
    e1 = _exp1(0.03, 0.01)  # LLaMA alone (the cpu-study profile): the second claim is not run, and says so
    e1 = e1.model_copy(update={"archs": ["llama"], "cells": [x for x in e1.cells if x.arch == "llama"],
                               "pretrain": [x for x in e1.pretrain if x.arch == "llama"]})
    first, best = R.claims_exp1(e1, CFG)
    assert first.verdict == R.REPRODUCED and first.numbers["pairs"] == 20
    assert (best.id, best.experiment, best.verdict) == ("exp1_llama_best", "EXP1", R.NOT_RUN)
    assert best.claim == "LLaMA is the best architecture after fine-tuning"


def test_exp1_needs_five_fine_tuning_seeds():
    few = R.claims_exp1(_exp1(0.03, 0.01, llama=0.05, seeds=4), CFG)
    assert [c.verdict for c in few] == [R.INCONCLUSIVE] * 2
    assert "from 4 distinct seed(s): a verdict needs at least 5" in few[0].why and few[0].numbers["n"] == 4
    assert R.claims_exp1(_exp1(-0.03, 0.01, seeds=4), CFG)[0].verdict == R.INCONCLUSIVE  # not contradicted either


def test_exp1_resamples_fine_tuning_seeds_not_pairs():
    """Every cell of a seed moves with that seed (a seed-level effect): 60 pairs look precise, the 5 seeds
    do not. A bootstrap over pairs would exclude zero; the one over seeds contains it."""
    offset = {0: 0.05, 1: -0.03, 2: 0.04, 3: -0.03, 4: 0.02}
    e1 = _exp1(0.0, 0.0)
    e1 = e1.model_copy(update={"cells": [x.model_copy(update={"seeds": {s: v + offset[s] for s, v in x.seeds.items()}})
                                         if x.init == "leaner" else x for x in e1.cells]})
    c = R.claims_exp1(e1, CFG)[0]
    assert c.numbers["effect"] == 0.01 and c.numbers["lo"] < 0 < c.numbers["hi"]
    assert c.verdict == R.INCONCLUSIVE and c.numbers["p_sign_flip"] > 0.05


def test_verdict_is_qualified_with_the_scale_run():
    small = _exp1(0.0, 0.05, tokens=STUDY["EXP1"].tokens_per_run // 2000)
    c = R.claims_exp1(small, CFG)[0]
    assert c.verdict_text == "inconclusive at 1/2,000 of the study's tokens per run"
    assert c.numbers["scale_tokens"] == pytest.approx(1 / 2000)


def test_exp1_pretrained_runs_against_scratch():
    """Each pretrained (arch, side) minus the arch's scratch run over the study's tasks, paired by seed: above
    scratch only when the whole interval is; WNLI (ori +5 in the fixture) never counts; one seed has no interval."""
    from tinyhelen.report.render import md_vs_scratch

    e1 = _exp1(0.03, 0.01)  # leaner = scratch + 0.03 (+ noise), ori = scratch
    rows = {(r.arch, r.side): r for r in R.exp1_vs_scratch(e1, CFG)}
    assert sorted(rows) == [(a, s) for a in ("bert", "llama", "xlnet") for s in ("leaner", "ori")]
    assert rows["bert", "leaner"].above and rows["bert", "leaner"].interval.effect == pytest.approx(0.03, abs=0.01)
    ori = rows["bert", "ori"]
    assert ori.interval.effect == 0 and not ori.above and ori.interval.n == 5
    assert "every pretrained run is above scratch by more than the interval: none." in md_vs_scratch(
        list(rows.values()), 0.95)[0]
    lift = e1.model_copy(update={"cells": [x.model_copy(update={"seeds": {s: v + 0.02 + 0.002 * s for s, v in
                                                                          x.seeds.items()}})
                                           if (x.arch, x.init) == ("llama", "ori") else x for x in e1.cells]})
    text = md_vs_scratch(R.exp1_vs_scratch(lift, CFG), 0.95)
    assert "interval: llama." in text[0] and "| llama  | ori" in "\n".join(text)
    one = R.exp1_vs_scratch(_exp1(0.03, 0.01, seeds=1), CFG)
    assert all(r.interval.lo is None and not r.above for r in one)
    assert R.exp1_vs_scratch(e1.model_copy(update={"inits": ["leaner", "ori"]}), CFG) == []


def test_exp1_result_built_from_run_files(tmp_path):
    """The GLUE run file keeps every epoch of every lr x seed: the cell is the test score of the epoch with the
    best validation score, at the lr with the best mean validation score (a decoy epoch and a decoy lr carry
    other test scores); the pretraining run is the swept rate with the lowest validation loss."""
    from tinyhelen import runfiles
    from tinyhelen.exp1.result import from_runs
    from tinyhelen.exp1.run_files import GLUE_COLUMNS

    def glue_row(lr, seed, epoch, val, test):
        return {"task": "mrpc", "lr": lr, "seed": seed, "epoch": epoch, "train_loss": 0.5, "val_score": val,
                "test_score": test}
    rows = [glue_row(1e-3, 0, 1, 0.7, 0.8), glue_row(1e-3, 0, 2, 0.6, 0.1),   # best epoch 1 of 2
            glue_row(1e-3, 1, 1, 0.5, 0.2), glue_row(1e-3, 1, 2, 0.65, 0.6),  # best epoch 2 of 2
            glue_row(1e-2, 0, 1, 0.3, 0.9), glue_row(1e-2, 1, 1, 0.3, 0.9)]   # a worse lr with better test scores
    for init in ("leaner", "ori", "scratch"):
        runfiles.write(runfiles.path(tmp_path, "glue", arch="llama", init=init), "glue", {}, rows, GLUE_COLUMNS)
    for side in ("leaner", "ori"):
        curve = [{"peak_lr": lr, "step": s, "tokens": s * 4, "lr": lr, "train_loss": 3.0, "val_loss": v}
                 for lr, vals in ((1e-3, (5.0, 4.0, 4.5)), (1e-2, (5.0, 4.2, 3.9))) for s, v in zip((0, 1, 2), vals)]
        runfiles.write(runfiles.path(tmp_path, "pretrain", arch="llama", side=side), "pretrain",
                       {"preset": "tiny", "non_embedding_params": 10}, curve, ["peak_lr", *runfiles.CURVE])
    (tmp_path / "params.yaml").write_text("exp1:\n  archs: [llama]\npretrain:\n  token_budget: 8\n  batch_size: 1\n"
                                          "  seq_len: 8\n  lr: [0.001, 0.01]\n")
    res = from_runs(tmp_path, tmp_path / "params.yaml")
    cell = res.cells[0]
    assert (cell.best_lr, cell.seeds, cell.test) == (1e-3, {0: 0.8, 1: 0.6}, pytest.approx(0.7))
    run = res.pretrain[0]
    assert (run.lr, run.best_step, run.best_val_loss, run.val_loss, run.tokens_seen) == (0.01, 2, 3.9, 3.9, 8)
    assert run.lr_sweep == {"0.001": 4.0, "0.01": 3.9}
    assert res.metrics()["glue_mean"]["llama-ori"] == 0.7
    (tmp_path / "params.yaml").write_text("exp1:\n  archs: [llama]\npretrain:\n  token_budget: 16\n"
                                          "  batch_size: 1\n  seq_len: 8\n")
    with pytest.raises(InputError, match="llama-leaner.tsv: saw 8 tokens, expected 16"):
        from_runs(tmp_path, tmp_path / "params.yaml")


# ------------------------------------------------------------------------------------ EXP2
def _exp2(llm: bool, means: dict[str, float], hw: float, higher: bool = True) -> Exp2Result:
    m = "total" if llm else "proxy_ref_ppl"
    recipes = [Exp2Recipe(recipe=r, pretrain=r.split("-")[0], tune=r.split("-")[1], selected_step=100, answers=10,
                            tune_steps=1000, tune_tokens=STUDY["EXP2"].tokens_per_run,
                            scores={m: Estimate(mean=x, lo=x - hw, hi=x + hw, n=50)}) for r, x in means.items()]
    return Exp2Result(judge_backend="llm" if llm else "proxy", judge_is_llm=llm, main_metric=m,
                        higher_is_better={m: higher}, instruct_source="released", template=None, questions=None,
                        non_embedding_params=14_460_000, recipes=recipes)


def test_exp2_verdicts():
    v = lambda e2: [c.verdict for c in R.claims_exp2(e2, CFG)]  # noqa: E731
    ll = {"leaner-leaner": 9.0, "leaner-ori": 8.5, "ori-leaner": 7.0, "ori-ori": 6.5}
    assert v(_exp2(True, ll, 0.3)) == [R.REPRODUCED, R.REPRODUCED]
    # pretraining effect clear; tuning effect (0.1) inside the bootstrap noise
    assert v(_exp2(True, {"leaner-leaner": 9.0, "leaner-ori": 8.9, "ori-leaner": 7.0, "ori-ori": 6.9}, 0.5)) \
        == [R.REPRODUCED, R.INCONCLUSIVE]
    assert v(_exp2(True, {"leaner-leaner": 6.0, "leaner-ori": 6.0, "ori-leaner": 8.0, "ori-ori": 8.0}, 0.2)) \
        == [R.CONTRADICTED, R.INCONCLUSIVE]
    # lower is better: the same means now contradict
    assert v(_exp2(True, ll, 0.3, higher=False)) == [R.CONTRADICTED, R.CONTRADICTED]
    proxy = R.claims_exp2(_exp2(False, ll, 0.3), CFG)
    assert [c.verdict for c in proxy] == [R.NOT_MEASURED] * 2 and "proxy" in proxy[0].why
    assert proxy[0].scale == ""  # no verdict, no qualifier
    assert R.claims_exp2(_exp2(True, ll, 0.3), CFG)[0].scale == "at the study's scale"
    assert v(None) == [R.NOT_RUN] * 2


def test_exp2_with_no_scored_answer_is_not_measured_not_not_run():
    """Every answer empty (a tiny model under greedy decoding): the stages ran, nothing could be scored."""
    e2 = _exp2(False, {"leaner-leaner": 1.0, "leaner-ori": 1.0, "ori-leaner": 1.0, "ori-ori": 1.0}, 0.0)
    scores = {"proxy_ref_ppl": Estimate(mean=None, n=0), "proxy_empty": Estimate(mean=1.0, lo=1.0, hi=1.0, n=10)}
    e2 = e2.model_copy(update={"recipes": [r.model_copy(update={"scores": scores}) for r in e2.recipes]})
    claims = R.claims_exp2(e2, CFG)
    assert [c.verdict for c in claims] == [R.NOT_MEASURED] * 2
    assert "no answer scored in `proxy_ref_ppl`" in claims[0].why and "leaner-leaner 100%" in claims[0].why


# ------------------------------------------------------------------------------------ EXP3
def _exp3(lm_steps: list, fr_steps: list, lm_data: list | None = None, by_def: dict | None = None,
          rnd_steps: list | None = None) -> Exp3Result:
    """lmloss, full-random (and the iterative random control) with per-seed steps to target; lmloss's steps are
    the same under every definition unless ``by_def`` gives them per definition. Data: 1,000 tokens per step
    for the curricula, the whole 150k-token pool for full-random."""
    seeds = range(len(fr_steps))
    steps = {"lmloss": lm_steps, "full-random": fr_steps, **({"random": rnd_steps} if rnd_steps else {})}
    runs = [Exp3Run(strategy=name, seed=i, final_val_loss=5.0, best_val_loss=4.9, pool_fraction=1.0 if name ==
                    "full-random" else 0.5, expansions=3) for name in steps for i in seeds]
    baselines = ["full-random", *(["random"] if rnd_steps else [])]
    reach = []
    for b in baselines:
        for d in DEFINITIONS:
            for name, st in steps.items():
                st = (by_def or {}).get(d, st) if name == "lmloss" else st
                data = lm_data if name == "lmloss" and lm_data else \
                    [None if x is None else (150_000 if name == "full-random" else 1000 * x) for x in st]
                reach += [Exp3Reach(baseline=b, definition=d, strategy=name, seed=i, target=5.0, steps_to_target=x,
                                    data_to_target=None if x is None else y) for i, (x, y) in enumerate(zip(st, data))]
    return Exp3Result(strategies=list(steps), seeds=list(seeds), selected="lmloss", baselines=baselines,
                      definitions=list(DEFINITIONS), max_steps=2500, eval_every=20, batch_size=512, seq_len=1024,
                      pool_units=10, pool_tokens=150_000, preset="x", non_embedding_params=1_050_000, runs=runs,
                      reach=reach)


FR = [100, 101, 99, 100, 100]  # full-random's steps to the target over 5 seeds


def test_exp3_judges_steps_and_data_against_the_stated_20_percent():
    v = lambda e3: [c.verdict for c in R.claims_exp3(e3, CFG)][:2]  # noqa: E731  (vs full-random)
    # ~20% fewer steps (the interval contains 20%); ~47% less data (it excludes 20%, above)
    ok = R.claims_exp3(_exp3([78, 80, 82, 79, 81], FR), CFG)
    assert [c.verdict for c in ok[:2]] == [R.REPRODUCED, R.SIZE_DIFFERS]
    assert "3 definitions agree" in ok[0].why and "contains the stated 20%" in ok[0].why
    assert "larger than the stated 20% by 27 points" in ok[1].why and ok[1].numbers["n"] == 5
    # 5% fewer steps: the direction holds, the size does not; data still far less
    five = R.claims_exp3(_exp3([95, 96, 94, 95, 95], FR), CFG)
    assert [c.verdict for c in five[:2]] == [R.SIZE_DIFFERS, R.SIZE_DIFFERS]
    assert "smaller than the stated 20% by 15 points" in five[0].why
    assert v(_exp3([60, 140, 80, 120, 100], FR, lm_data=[160_000, 165_000, 158_000, 162_000, 161_000])) \
        == [R.INCONCLUSIVE, R.CONTRADICTED]
    # never reached: counted at the end of the budget, a bound in the claim's favour: never "reproduced"
    never = R.claims_exp3(_exp3([None] * 5, FR), CFG)
    assert never[0].verdict == R.CONTRADICTED and never[0].numbers["not_reached"] == 5
    assert never[1].verdict == R.INCONCLUSIVE and "5 run(s) of lmloss never reached the target" in never[1].measured
    assert "5 of 5 runs never reached the target" in never[1].why
    assert [c.verdict for c in R.claims_exp3(None, CFG)] == [R.NOT_RUN] * 4


def test_exp3_target_definitions_must_agree():
    """The same runs measured against the baseline's final loss, its mean curve's final loss and its best loss:
    one verdict only when the three agree, else inconclusive with each definition's verdict and interval."""
    agree = R.claims_exp3(_exp3([78, 80, 82, 79, 81], FR), CFG)[0]
    assert agree.verdict == R.REPRODUCED and agree.numbers["effect_best"] == agree.numbers["effect_final"] == 0.2
    split = _exp3([78, 80, 82, 79, 81], FR, by_def={"best": [99, 101, 100, 98, 102]})
    c = R.claims_exp3(split, CFG)[0]
    assert c.verdict == R.INCONCLUSIVE and "the definitions disagree" in c.why
    assert "final: reproduced, +20%" in c.why and "best: inconclusive" in c.why
    assert "best: +0.0%" in c.measured and c.numbers["effect_final"] == 0.2 and c.numbers["effect_best"] == 0.0


def test_exp3_claims_against_the_iterative_random_control():
    """Against the random-order control (same pool growth) the claim is the direction only: the study states
    no size there. Without that control the claim is not run."""
    cids = lambda cs: {c.id: c for c in cs}  # noqa: E731
    faster = cids(R.claims_exp3(_exp3([78, 80, 82, 79, 81], FR, rnd_steps=[90, 91, 89, 92, 90]), CFG))
    c = faster["exp3_lmloss_fewer_steps_vs_random"]
    assert c.verdict == R.REPRODUCED and "excludes zero in the study's direction" in c.why
    assert "reduction vs `random`" in c.measured and c.numbers["n"] == 5
    assert faster["exp3_lmloss_fewer_steps"].verdict == R.REPRODUCED  # vs full-random, against the 20%
    same = cids(R.claims_exp3(_exp3([78, 80, 82, 79, 81], FR, rnd_steps=[77, 82, 80, 81, 79]), CFG))
    assert same["exp3_lmloss_fewer_steps_vs_random"].verdict == R.INCONCLUSIVE  # order adds nothing
    assert same["exp3_lmloss_less_data_vs_random"].verdict == R.INCONCLUSIVE
    alone = cids(R.claims_exp3(_exp3([78, 80, 82, 79, 81], FR), CFG))
    assert alone["exp3_lmloss_less_data_vs_random"].verdict == R.NOT_RUN
    assert "baseline `random` needed" in alone["exp3_lmloss_less_data_vs_random"].why


def test_exp3_needs_five_seeds_and_stays_within_100_percent():
    """The reduction's interval is a bootstrap over seeds: never above 100%; from 3 seeds, no verdict."""
    lm, fr = [800, 300, 1400, 900, 500], [2500, 2400, 2450, 2300, 2350]
    three = R.claims_exp3(_exp3(lm[:3], fr[:3]), CFG)
    assert [c.verdict for c in three[:2]] == [R.INCONCLUSIVE] * 2
    assert "from 3 distinct seed(s): a verdict needs at least 5" in three[0].why
    assert three[0].numbers["hi"] <= 1.0
    c = R.claims_exp3(_exp3(lm, fr), CFG)[0]
    assert c.verdict == R.SIZE_DIFFERS and "larger than the stated 20%" in c.why and c.numbers["hi"] <= 1.0


def test_exp3_claim_from_per_seed_values_leaves_out_unpaired_seeds():
    """The extension point: per-seed values of a strategy and of a baseline give the claim; a seed the
    baseline never reached cannot be paired and is named."""
    lm = {0: 80, 1: 79, 2: 81, 3: 80, 4: None, 5: 78}
    base = {0: 100, 1: 100, 2: 100, 3: 99, 4: 101, 5: None}
    c = reduction_claim("x", "claim", {"final": (lm, base)}, {s: 2500 for s in lm}, names=("lmloss", "full-random"),
                        cfg=CFG, scale_fr={}, stated_size=0.2)
    assert c.numbers["n"] == 5 and c.numbers["not_reached"] == 1  # seed 5 left out, seed 4 censored
    assert "seed(s) 5 left out: `full-random` never reached it" in c.measured
    assert c.verdict == R.INCONCLUSIVE and "contains zero" in c.why  # seed 4 counted at 2,500 steps
    none = reduction_claim("x", "claim", {"final": ({0: 80}, {0: None})}, {0: 2500}, names=("a", "b"), cfg=CFG,
                           scale_fr={}, stated_size=0.2)
    assert none.verdict == R.NOT_RUN and "no seed where `b` reached its target" in none.why


# ------------------------------------------------------------------------------------ entropy
def _side(vocab: int, h: dict[str, float]) -> EntropySide:
    return EntropySide(tokens=1000, vocab=vocab, ttr=0.1, top_k_coverage=0.9, mean_sentence_len=10.0, entropy=h)


def _entropy(eq_leaner: dict, eq_ori: dict, vocab=(100, 300)) -> EntropyResult:
    paired = EntropySetting(leaner=_side(vocab[0], {"word_H1": 1.0}), ori=_side(vocab[1], {"word_H1": 9.0}))
    eq = EntropySetting(leaner=_side(vocab[0], eq_leaner), ori=_side(vocab[1], eq_ori))
    return EntropyResult(max_n=2, top_k=2000, pooled_genres=["web"], settings={"paired": paired, "equal_budget": eq})


def test_entropy_decided_at_equal_budget_with_bias_corrected_entropies():
    lo, hi = {"word_H1": 8.0, "word_H2": 12.0}, {"word_H1": 9.0, "word_H2": 13.0}
    assert [c.verdict for c in R.claims_entropy(_entropy(lo, hi))] == [R.REPRODUCED, R.REPRODUCED]
    assert [c.verdict for c in R.claims_entropy(_entropy(hi, lo, vocab=(300, 100)))] == [R.CONTRADICTED] * 2
    mixed = R.claims_entropy(_entropy({"word_H1": 8.0, "word_H2": 13.5}, hi))[1]
    assert mixed.verdict == R.INCONCLUSIVE and "not below on word_H2" in mixed.why
    # plug-in says not below on H2, the Miller-Madow estimate (used when present) says below
    mm = R.claims_entropy(_entropy({**lo, "word_H2": 13.5, "word_H1_mm": 8.1, "word_H2_mm": 12.1},
                                   {**hi, "word_H1_mm": 9.1, "word_H2_mm": 13.2}))[1]
    assert mm.verdict == R.REPRODUCED and "Miller-Madow" in mm.measured
    assert [c.verdict for c in R.claims_entropy(None, "x")] == [R.NOT_RUN] * 2


def test_entropy_table_shows_conditional_next_to_plain():
    md = "\n".join(card_entropy(_entropy({"word_H1": 8.0, "word_H2": 12.0, "word_h2": 4.0},
                                                {"word_H1": 9.0, "word_H2": 13.0, "word_h2": 4.0})))
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| word")]
    assert rows.index("word h2 (bits/token)") == rows.index("word H2 (bits)") + 1


# ------------------------------------------------------------------------------------ results from stage outputs
def test_entropy_result_from_its_run_file(tmp_path):
    from tinyhelen.entropy import measure as entropy
    from tinyhelen.entropy.result import from_runs, write_run

    cfg = entropy.EntropyConfig(max_n=2, genres=["web"], pooled_genres=["web"])
    docs = {"leaner": [{"genre": "web", "doc_id": "a", "text": "the cat sat. the cat ran."}],
            "ori": [{"genre": "web", "doc_id": "a", "text": "the feline sat down. a cat ran off quickly."}]}
    samples = {s: entropy.scope_samples(d, cfg) for s, d in docs.items()}
    coverage = entropy.pool(samples, cfg)
    res = entropy.compare(samples, cfg)
    write_run(tmp_path / "entropy.tsv", res, cfg.max_n, cfg.top_k, coverage["pooled_genres"], coverage["dropped"])
    e = from_runs(tmp_path)
    eq = e.settings["equal_budget"]
    assert eq.leaner.tokens == eq.ori.tokens == 6 and eq.leaner.H("word", 2, conditional=True) is not None
    assert e.metrics()["paired"]["ori"]["vocab"] == 9 and "word_h2" not in e.metrics()["paired"]["ori"]
    assert e.by_genre["web"]["paired"].ori.vocab == 9  # every scope is in the run file and the result


def test_exp2_result_from_the_judge_report():
    from tinyhelen.exp2 import judge, result

    recipes = ["leaner-leaner", "leaner-ori", "ori-leaner", "ori-ori"]
    scores = [{"set": "all", "recipe": r, "qid": q, "bin": "0-7", "step": 10,
               **{m: float(q + i) for m in judge.PROXY_METRICS}} for i, r in enumerate(recipes) for q in range(6)]
    selection = {"backend": "proxy", "selection_metric": "proxy_ref_ppl", "checkpoint_curve": {},
                 "selected": {r: 10 for r in recipes}}
    rep = result.summarise(scores, "proxy", recipes, n_boot=200, seed=0, selection=selection)
    assert {v["selected_step"] for v in rep["recipes"].values()} == {10}
    e2 = Exp2Result.build(rep, judge_is_llm=False, main_metric="proxy_ref_ppl", instruct_source="code_pairs",
                            template=None, questions=None, tune_reports={"ori-ori": {"steps": 5, "tokens": 50}},
                            non_embedding_params=None)
    est = e2.recipe("ori-ori").scores["proxy_ref_ppl"]
    assert est.mean == 5.5 and est.lo < est.mean < est.hi and est.n == 6
    assert e2.higher_is_better["proxy_ref_ppl"] is False and e2.recipe("ori-ori").tune_tokens == 50
    assert e2.metrics()["recipes"]["leaner-leaner"]["proxy_ref_ppl_lo"] == e2.recipe("leaner-leaner").scores[
        "proxy_ref_ppl"].lo


# ------------------------------------------------------------------------------------ protocol
def test_protocol_table_lists_a_changed_knob_and_follows_params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("glue:\n  max_seq_len: 128\nexp3:\n  train:\n    lr: 0.01\n")
    rows = {(r.experiment, r.knob): r for r in protocol.compare(resolved_params(p))}
    r = rows[("EXP1 GLUE", "max_seq_len")]
    assert r.differs and (r.study, r.ours, r.reason) == ("256", "128", protocol.COMPUTE)
    assert not rows[("EXP3", "learning rate")].differs  # 0.01 is the study's
    p.write_text("glue:\n  max_seq_len: 256\nexp3:\n  train:\n    lr: 0.002\n")
    rows = {(r.experiment, r.knob): r for r in protocol.compare(resolved_params(p))}
    assert not rows[("EXP1 GLUE", "max_seq_len")].differs and rows[("EXP3", "learning rate")].differs


def test_protocol_knobs_read_existing_params_keys():
    """A renamed params key must be renamed in tinyhelen.report.protocol too (else its value is 'unknown')."""
    rows = protocol.compare(resolved_params(REPO / "params.yaml"))
    assert [r.knob for r in rows if r.ours.startswith("unknown")] == []
    assert {r.reason for r in rows} <= {protocol.DATA_ABSENT, protocol.COMPUTE, protocol.CHOICE}


def test_protocol_reads_model_sizes_from_results():
    res = _exp1(0.0, 0.0, params=1_000_000)
    row = next(r for r in protocol.compare(resolved_params(FIXTURE / "params.yaml"), {"exp1": res})
               if r.knob == "model size (non-embedding)")
    assert row.differs and row.ours == "bert 1.00M, llama 1.00M, xlnet 1.00M"
    res = _exp1(0.0, 0.0, params=14_500_000)
    row = next(r for r in protocol.compare({"models": {"preset": "tiny"}}, {"exp1": res})
               if r.knob == "model size (non-embedding)")
    assert not row.differs  # every architecture within 10% of the study's


# ------------------------------------------------------------------------------------ the stage on the fixture
def test_report_on_fixture(tree):
    ctx = R.run(tree, "params.yaml", CFG)
    md = (tree / "reports" / "README.md").read_text()
    c = _claims(ctx)
    assert c["entropy_vocab"].verdict == R.REPRODUCED
    assert c["entropy_ngram"].verdict == R.INCONCLUSIVE and "bpe_H4" in c["entropy_ngram"].why  # equal_budget
    assert _row(md, "EXP1")[3].startswith("**inconclusive** at 1/20,000 of the study's tokens per run, 1/78 of")
    assert c["exp1_leaner_beats_ori"].numbers["pairs"] == 32  # 4 archs x 4 study tasks x 2 seeds
    assert "from 2 distinct seed(s)" in c["exp1_leaner_beats_ori"].why  # the fixture has 2 GLUE seeds
    assert [c[k].verdict for k in ("exp2_leaner_pretraining", "exp2_leaner_tuning")] == [R.NOT_MEASURED] * 2
    assert "Proxy metrics, not LLM-judge scores" in md
    assert c["exp3_lmloss_fewer_steps"].verdict == R.INCONCLUSIVE and "from 2 distinct seed(s)" in \
        c["exp3_lmloss_fewer_steps"].why
    assert "2 run(s) of lmloss never reached the target" in c["exp3_lmloss_less_data"].measured
    assert c["exp3_lmloss_fewer_steps_vs_random"].verdict == R.INCONCLUSIVE  # vs the iterative random control
    # tables
    assert _row(md, "vocabulary (word types)")[1:] == ["56,801", "16,534", "50,291", "16,392"]
    assert _row(md, "word h3 (bits/token)")[1:3] == ["2.336", "3.169"]
    llama = next(line for line in md.splitlines() if re.match(r"\| llama\s+\| leaner", line))
    assert "0.757 ± 0.009" in llama and "**0.335**" in llama  # mean over the 4 study tasks, WNLI shown only
    assert _row(md, "leaner-leaner")[2] == "104 [89.4, 119]"
    assert _row(md, "full-random")[1:3] == ["2", "5.497 ± 0.0578"]  # seeds, final val loss
    cells = [[c.strip() for c in r.split("|")[1:-1]] for r in md.splitlines() if r.startswith("| full-random ")]
    reach = {c[3]: c[4:] for c in cells if c[1] == "final"}  # strategy -> reached, steps, reduction, data, ...
    assert reach["full-random"][:2] == ["2/2", "120 ± 0"] and reach["full-repeated"][2] == "+0.0%"
    assert reach["lmloss"] == ["0/2", "not reached", "not all reached", "not reached", "not all reached"]
    assert {c[1] for c in cells if len(c) == 9} == {"final", "mean_final", "best"}
    # protocol table: differences listed, knobs that follow the study are not
    assert _row(md, "EXP1 GLUE")[1] == "tasks"
    assert "| EXP3 " in md and not any(r[1] == "learning rate" for r in
                                       [[x.strip() for x in line.split("|")[1:]] for line in md.splitlines()
                                        if line.startswith("| EXP3")])
    assert "EXP3 learning rate" in md.split("Following the study")[1].split("\n")[0]
    # inputs, params, timings, figures
    assert _row(md, "`reports/prepare.json`")[1] == "source `local`; 70 files checksum-verified"
    assert "backend `replay` (the study's released outputs)" in _row(md, "`simplify`")[1]
    assert _row(md, "`seed`")[1:] == ["`1234`", "`7`"] and "`entropy.max_n`" not in md
    assert _row(md, "`entropy`")[1:5] == ["12.5", "cpu", "2026-01-01T10:00:00", "seconds=12.1, words_per_s=412,000"]
    assert "![entropy](figures/entropy.png)" in md.split("## EXP1")[0] and "![zipf](figures/zipf.png)" in md
    # summary.json: counts, numbers, deterministic, no commit or timings
    s = json.loads((tree / "reports" / "summary.json").read_text())
    assert s["verdicts"] == {"reproduced": 1, "direction_reproduced_size_differs": 0, "inconclusive": 7,
                             "contradicted": 0, "not_measured": 2, "not_run": 0}
    assert s["claims"]["exp1_leaner_beats_ori"]["scale_tokens"] == 5e-05
    assert s["protocol_differences"] == sum(r.differs for r in ctx["protocol"]) > 10
    R.run(tree, "params.yaml", CFG)
    assert json.loads((tree / "reports" / "summary.json").read_text()) == s
    assert not _wall_clock_keys(s) and "commit" not in json.dumps(s)


def test_unverified_input_is_shown(tree):
    p = tree / "reports" / "prepare.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "checksums_verified": 0}))
    ctx = R.run(tree, "params.yaml", CFG)
    md = (tree / "reports" / "README.md").read_text()
    assert "> **unverified input**: `reports/prepare.json` has `checksums_verified: 0`" in md
    assert "**unverified input**: no file checksum-verified" in _row(md, "`reports/prepare.json`")[1]
    assert all("unverified input" in c.marks for c in ctx["claims"] if c.verdict != R.NOT_RUN)
    assert "**[unverified input]**" in _row(md, "EXP1")[2]


def test_pipeline_check_marks_the_figures_that_depend_on_it(tree):
    before = {k: v.verdict for k, v in _claims(R.run(tree, "params.yaml", CFG)).items()}
    j = tree / "reports" / "judge.json"
    j.write_text(json.dumps({**json.loads(j.read_text()), "backend": "llm", "provenance": {
        "backend": "openai", "model": "qwen2.5-0.5b-instruct", "gguf_file": "qwen2.5-0.5b-q4_k_m.gguf",
        "gguf_sha256": "ab" * 32, "pipeline_check": True}}))
    ctx = R.run(tree, "params.yaml", CFG)
    c = _claims(ctx)
    assert c["exp2_leaner_tuning"].marks == ["pipeline check, not a result (judge)"]
    assert c["exp1_leaner_beats_ori"].marks == [] and c["entropy_vocab"].marks == []
    # a pipeline check gives no verdict: the claims that depend on it are not measured, the others unchanged
    assert {c[k].verdict for k in c if k.startswith("exp2")} == {R.NOT_MEASURED}
    assert all(c[k].verdict == v for k, v in before.items() if not k.startswith("exp2"))
    md = (tree / "reports" / "README.md").read_text()
    assert "**[pipeline check, not a result (judge)]**" in md.split("## EXP2")[1].split("## EXP3")[0]
    judge = _row(md, "`judge`")[1]
    assert "model `qwen2.5-0.5b-instruct`" in judge and "sha256 `abababababab...`" in judge
    # a flagged simplification model marks everything trained or measured on the leaner corpus
    s = tree / "reports" / "simplify" / "wiki.json"
    s.write_text(json.dumps({**json.loads(s.read_text()), "provenance": {"pipeline_check": True}}))
    ctx = R.run(tree, "params.yaml", CFG)
    assert all(any("simplify" in m for m in x.marks) for x in ctx["claims"] if x.verdict != R.NOT_RUN)
    measured = [k for k, v in before.items() if v not in (R.NOT_MEASURED, R.NOT_RUN)]
    assert measured and all(x.verdict == R.NOT_MEASURED for x in ctx["claims"] if x.id in measured)
    assert json.loads((tree / "reports" / "summary.json").read_text())["verdicts"]["reproduced"] == 0


# ------------------------------------------------------------------------------------ degradation
def test_missing_results_degrade_to_not_run(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1234\n")
    ctx = R.run(tmp_path, "params.yaml")
    assert {c.verdict for c in ctx["claims"]} == {R.NOT_RUN}
    md = (tmp_path / "reports" / "README.md").read_text()
    assert "_Not run_: reports/results/exp1.json absent (stage `exp1_report` not run)." in md
    assert md.count("_Not run_") == 4 and "No dvc.lock and no timings yet." in md
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["verdicts"]["not_run"] == 10


def test_malformed_or_off_schema_result_is_reported_not_fatal(tree):
    (tree / "reports" / "results" / "exp1.json").write_text('{"cells": [\n  oops]\n')
    exp3 = json.loads((tree / "reports" / "results" / "exp3.json").read_text())
    del exp3["baselines"]
    (tree / "reports" / "results" / "exp3.json").write_text(json.dumps(exp3))
    c = _claims(R.run(tree, "params.yaml"))
    assert c["exp1_leaner_beats_ori"].verdict == R.NOT_RUN
    assert "reports/results/exp1.json:2: malformed JSON" in c["exp1_leaner_beats_ori"].why
    assert c["exp3_lmloss_fewer_steps"].verdict == R.NOT_RUN
    assert "not a valid Exp3Result: baselines: Field required" in c["exp3_lmloss_fewer_steps"].why
    assert c["entropy_vocab"].verdict == R.REPRODUCED  # the rest still decided


@pytest.mark.slow
def test_stage_script_runs_and_records_its_wall_time(tree):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("DVC_STAGE", None)
    env.pop("TINYHELEN_TIMINGS", None)
    res = subprocess.run(stage_argv("report"), cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tree / "reports" / "README.md").exists() and (tree / "reports" / "summary.json").exists()
    t = json.loads((tree / "reports" / "timings" / "report.json").read_text())
    assert t["stage"] == "report" and t["wall_s"] > 0 and t["device"] == "cpu"


def test_bad_params_fail_with_the_key(tree):
    (tree / "params.yaml").write_text("report:\n  confidence: 2\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TINYHELEN_TIMINGS": "0"}
    res = subprocess.run(stage_argv("report"), cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "report.confidence" in res.stderr


# ------------------------------------------------------------------------------------ metrics files
WALL_CLOCK = re.compile(r"(^|_)(seconds|secs|wall_s|elapsed|duration|started|finished|timestamp|mfu)$|_per_s$")


def _wall_clock_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in
                ([prefix + key] if WALL_CLOCK.search(str(key)) else []) + _wall_clock_keys(v, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [k for v in node for k in _wall_clock_keys(v, prefix)]
    return []


def _declared_metrics() -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {st.addressing: {str(o.def_path) for o in st.outs if o.metric} for st in repo.index.stages}


def test_no_metrics_file_holds_wall_clock_figures():
    files = set().union(*_declared_metrics().values())
    assert "reports/summary.json" in files and "reports/exp3.json" in files
    bad = {}
    for f in sorted(files):
        p = REPO / f
        if p.exists():
            bad.update({f: keys for keys in [_wall_clock_keys(json.loads(p.read_text()))] if keys})
    assert bad == {}
    assert _wall_clock_keys({"a": {"tokens_per_s": 1, "wall_s": 2}, "timeout_s": 3}) == ["a.tokens_per_s", "a.wall_s"]


def test_a_curriculum_change_touches_few_metrics():
    from tinyhelen.pipeline import stages_affected_by

    declared = _declared_metrics()
    touched = set().union(*(declared[s] for s in stages_affected_by(["curriculum"], REPO)))
    assert touched == {"reports/exp3.json", "reports/summary.json"}
    # inside exp3.json only the selected strategy's block changes
    res = Exp3Result.model_validate_json((FIXTURE / "reports" / "results" / "exp3.json").read_text())
    a, b = res.metrics(), res.model_copy(update={"selected": "sentlen"}).metrics()
    flat = lambda d, p="": {k: v for key, x in d.items() for k, v in  # noqa: E731
                            (flat(x, f"{p}{key}.") if isinstance(x, dict) else {p + key: x}).items()}
    changed = [k for k in flat(a) if flat(a)[k] != flat(b)[k]]
    assert changed and all(k.startswith("selected.") for k in changed) and len(changed) <= 8


# ------------------------------------------------------------------------------------ timings hook
def test_stage_name_from_dvc_or_argv(monkeypatch):
    import argparse

    monkeypatch.setenv("DVC_STAGE", "glue@llama-leaner")
    assert stage_name(["stages/glue.py", "bert", "ori"]) == "glue@llama-leaner"
    monkeypatch.delenv("DVC_STAGE")
    assert stage_name(["stages/glue.py", "llama", "leaner", "--glue", "data/leaner/glue"]) == "glue@llama-leaner"
    assert stage_name(["stages/entropy.py", "--params", "x.yaml", "--md", "reports/entropy.md"]) == "entropy"
    p = argparse.ArgumentParser()
    p.add_argument("arch")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--out")
    assert stage_name(["stages/pretrain.py", "--no-resume", "llama", "--out", "d"], p) == "pretrain@llama"


def test_protocol_table_names_the_judge_model_in_effect():
    """The judge row names judge.llm.model when it overrides llm.model, else llm.model."""
    def judge_row(params):
        return next(r for r in protocol.compare(params) if (r.experiment, r.knob) == ("EXP2", "judge"))

    base = {"llm": {"model": "smollm2"}}
    assert judge_row({**base, "judge": {"backend": "llm", "llm": {"model": "qwen-judge"}}}).ours == "llm: qwen-judge"
    assert judge_row({**base, "judge": {"backend": "llm", "llm": {"model": None}}}).ours == "llm: smollm2"
    assert judge_row({**base, "judge": {"backend": "proxy"}}).ours == "proxy metrics (no LLM judge)"
