"""The report card: the stage on a fixture of every experiment's metrics, the verdict rules (each verdict
reachable), the rendered tables, graceful degradation when inputs are missing, and the stage-timing hook."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyhelen import report as R
from tinyhelen.cli import stage_name

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "report"
# smallest valid PNG (1x1, grey)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                    "3a7e9b550000000a49444154789c63680000008200816d8e5b0a0000000049454e44ae426082")


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    (root / "reports" / "figures").mkdir()
    (root / "reports" / "figures" / "entropy.png").write_bytes(PNG)
    (root / "reports" / "figures" / "exp3_curves.png").write_bytes(PNG)
    (root / "reports" / "entropy.md").write_text("# entropy tables\n")
    return root


def _claims(ctx) -> dict[str, R.Claim]:
    return {c.id: c for c in ctx["claims"]}


# ------------------------------------------------------------------------------------ stage on fixture
def test_report_on_fixture_renders_every_table_and_verdict(tree):
    ctx = R.run(tree, "params.yaml", R.ReportConfig())
    md = (tree / "reports" / "README.md").read_text()
    c = _claims(ctx)
    # verdicts at the tiny CPU default: data claims decided, model claims gated
    assert c["entropy_vocab"].verdict == R.REPRODUCED and c["entropy_ngram"].verdict == R.REPRODUCED
    assert c["exp1_leaner_beats_ori"].verdict == R.NOT_AT_SCALE
    assert c["exp1_llama_best"].verdict == R.NOT_AT_SCALE
    assert "leaner - ori = +0.0200" in c["exp1_leaner_beats_ori"].measured  # observed direction still shown
    assert c["exp2_leaner_pretraining"].verdict == R.NOT_MEASURED  # proxy metrics are not LLM scores
    assert "proxy" in c["exp2_leaner_pretraining"].why
    assert c["exp3_lmloss_saves_20pct"].verdict == R.NOT_AT_SCALE
    # entropy table (real figures of the released 10M tier)
    assert "| vocab | 56,801 | 16,534 | 50,291 | 16,392 |" in md
    assert "| top2000_coverage | 75.9% | 93.5% | 76.7% | 93.5% |" in md
    # EXP1 table: arch x pretraining x task, mean ± std, validation subtree ignored
    assert "| arch | pretraining | cola | mrpc | stsb | rte | wnli | mean |" in md
    assert "| llama | leaner | 0.150 ± 0.010 | 0.753 ± 0.010 |" in md
    assert "0.99" not in md.split("## EXP1")[1].split("## EXP2")[0]
    # EXP2 table with intervals and the proxy banner
    assert "Proxy metrics, not LLM-judge scores" in md
    assert "| leaner-leaner | 165 [145, 185] |" in md
    # EXP3 table: reductions vs full-random, a run that never reached the target
    assert "| lmloss | 2 | 83 ± 7.07 | 169,984 ± 14,482 |" in md and "| +21.0% | +21.0% |" in md
    assert "| sentlen | 2 | 120 (1 not reached) |" in md and "target not reached" in md
    # figures embedded next to their section, the rest at the end
    assert "![entropy](figures/entropy.png)" in md.split("## EXP1")[0]
    assert "![exp3_curves](figures/exp3_curves.png)" in md
    # context: params differing from defaults, stages from dvc.lock, timings, data stages
    assert "| `seed` | `1234` | `7` |" in md and "| `entropy.top_k` | `2000` | `1000` |" in md
    assert "entropy.max_n" not in md  # equal to its default
    assert "| `entropy` | 12.5 | cpu | 2026-01-01T10:00:00 | 1 |" in md
    assert "| `prepare` |  |  |  | 1 |" in md
    assert "`reports/simplify/wiki.json` | genre=wiki, docs=20" in md
    assert "`reports/leaner_eval.json` | not run" in md
    assert "Full tables: [entropy.md](entropy.md)." in md
    # summary.json: flat-ish, deterministic (no commit/timings), numbers beside verdicts
    s = json.loads((tree / "reports" / "summary.json").read_text())
    assert s["verdicts"] == {"reproduced": 2, "not_reproduced": 0, "not_measured": 2,
                             "not_measured_at_this_scale": 3, "not_run": 0}
    assert s["claims"]["exp3_lmloss_saves_20pct"]["reduction_steps"] == pytest.approx(0.21, abs=1e-3)
    assert s["claims"]["exp1_llama_best"]["best_arch"] == "llama"
    assert "commit" not in json.dumps(s) and "wall" not in json.dumps(s)
    R.run(tree, "params.yaml", R.ReportConfig())
    assert json.loads((tree / "reports" / "summary.json").read_text()) == s  # same inputs, same metrics


@pytest.mark.slow
def test_stage_script_runs_and_records_its_wall_time(tree):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("DVC_STAGE", None)
    env.pop("TINYHELEN_TIMINGS", None)
    res = subprocess.run([sys.executable, str(REPO / "stages" / "report.py")], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tree / "reports" / "README.md").exists() and (tree / "reports" / "summary.json").exists()
    t = json.loads((tree / "reports" / "timings" / "report.json").read_text())
    assert t["stage"] == "report" and t["wall_s"] > 0 and t["device"] == "cpu"


def test_bad_params_fail_with_the_key(tree):
    (tree / "params.yaml").write_text("report:\n  z: -1\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TINYHELEN_TIMINGS": "0"}
    res = subprocess.run([sys.executable, str(REPO / "stages" / "report.py")], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "report.z" in res.stderr


# ------------------------------------------------------------------------------------ degradation
def test_missing_inputs_degrade_to_not_run(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1234\n")
    ctx = R.run(tmp_path, "params.yaml")
    assert {c.verdict for c in ctx["claims"]} == {R.NOT_RUN}
    md = (tmp_path / "reports" / "README.md").read_text()
    for section in ("Entropy and vocabulary", "EXP1", "EXP2", "EXP3"):
        assert section in md
    assert md.count("_Not run_") == 4 and "No dvc.lock and no timings yet." in md
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["verdicts"]["not_run"] == 7


def test_malformed_or_unknown_layout_is_reported_not_fatal(tree):
    (tree / "reports" / "exp1.json").write_text('{"table": {\n  "llama": oops}\n')
    (tree / "reports" / "exp3.json").write_text(json.dumps({"note": "new layout", "rows": 3}))
    ctx = R.run(tree, "params.yaml")
    c = _claims(ctx)
    assert c["exp1_leaner_beats_ori"].verdict == R.NOT_RUN
    assert "reports/exp1.json:2: malformed JSON" in c["exp1_leaner_beats_ori"].why
    assert c["exp3_lmloss_saves_20pct"].verdict == R.NOT_RUN and "layout not understood" in c[
        "exp3_lmloss_saves_20pct"].why
    assert c["entropy_vocab"].verdict == R.REPRODUCED  # the rest still decided
    md = (tree / "reports" / "README.md").read_text()
    assert "_Not run_: reports/exp1.json:2: malformed JSON" in md


# ------------------------------------------------------------------------------------ verdict rules
def test_decide_rule():
    assert R.decide(0.05, 0.01, 1.96) == (True, "+0.05 > 1.96 x se 0.01")
    assert R.decide(0.01, 0.01, 1.96)[0] is False and "noise" in R.decide(0.01, 0.01, 1.96)[1]
    assert R.decide(-0.2, None, 1.96) == (False, "opposite direction")
    assert R.decide(0.3, None, 1.96)[0] is True  # single value: direction only
    assert R.decide(0.05, None, 1.96, threshold=0.10)[0] is False
    assert R.decide(None, None, 1.96)[0] is False


PAPER = {"models": {"preset": "paper"}, "exp3": {"units": {"pool_tokens": None}}}
TINY = {"models": {"preset": "tiny"}, "exp3": {"units": {"pool_tokens": 200000}}}


def _exp1(leaner_shift: float, llama_shift: float, noise: list[float] | None = None, std=0.01):
    cells = []
    for ai, a in enumerate(("bert", "llama", "xlnet")):
        for ti, t in enumerate(("cola", "mrpc", "rte", "stsb")):
            base = 0.5 + 0.01 * ti + (llama_shift if a == "llama" else 0.0)
            d = noise[(ai * 4 + ti) % len(noise)] if noise else leaner_shift
            cells += [{"arch": a, "pretrain": "leaner", "task": t, "mean": base + d, "std": std, "n": 3},
                      {"arch": a, "pretrain": "ori", "task": t, "mean": base, "std": std, "n": 3}]
    return {"cells": cells, "preset": None}


def test_exp1_verdicts_each_reachable():
    cfg = R.ReportConfig()
    v = lambda e1, p=PAPER: {c.id: c.verdict for c in R.claims_exp1(e1, p, cfg)}  # noqa: E731
    assert v(_exp1(0.03, 0.05)) == {"exp1_leaner_beats_ori": R.REPRODUCED, "exp1_llama_best": R.REPRODUCED}
    assert v(_exp1(-0.03, -0.05)) == {"exp1_leaner_beats_ori": R.NOT_REPRODUCED,
                                      "exp1_llama_best": R.NOT_REPRODUCED}
    # mixed signs: mean +0.005 but inside 1.96 se of the cell differences -> not reproduced (noise)
    noisy = R.claims_exp1(_exp1(0, 0.05, noise=[0.04, -0.03, 0.02, -0.01]), PAPER, cfg)[0]
    assert noisy.verdict == R.NOT_REPRODUCED and "noise" in noisy.why
    # LLaMA ahead by less than the seed noise
    assert v(_exp1(0.03, 0.001, std=0.05))["exp1_llama_best"] == R.NOT_REPRODUCED
    assert set(v(_exp1(0.03, 0.05), TINY).values()) == {R.NOT_AT_SCALE}
    assert set(v(None).values()) == {R.NOT_RUN}
    # the scale rule can be switched off (verdict at tiny scale, labelled as such)
    off = R.claims_exp1(_exp1(0.03, 0.05), TINY, R.ReportConfig(require_paper_scale=False))
    assert off[0].verdict == R.REPRODUCED and "below the study's scale" in off[0].why
    # the experiment's own preset decides when params.yaml lacks the key
    assert set(v({**_exp1(0.03, 0.05), "preset": "paper"}, {}).values()) == {R.REPRODUCED}


def _exp2(backend: str, ll: float, lo_: float, ol: float, oo: float, hw: float):
    m = "total" if backend == "openai" else "proxy_ref_ppl"
    means = {"leaner-leaner": ll, "leaner-ori": lo_, "ori-leaner": ol, "ori-ori": oo}
    return {"backend": backend, "source": "code_pairs", "scores": None,
            "recipes": {r: {m: {"mean": x, "lo": x - hw, "hi": x + hw}} for r, x in means.items()}}


def test_exp2_verdicts_each_reachable():
    cfg = R.ReportConfig()
    v = lambda e2, p=PAPER: [c.verdict for c in R.claims_exp2(e2, p, cfg)]  # noqa: E731
    assert v(_exp2("openai", 9.0, 8.5, 7.0, 6.5, 0.3)) == [R.REPRODUCED, R.REPRODUCED]
    # pretraining effect clear, tuning effect inside the bootstrap noise
    assert v(_exp2("openai", 9.0, 8.9, 7.0, 6.9, 0.5)) == [R.REPRODUCED, R.NOT_REPRODUCED]
    assert v(_exp2("openai", 6.0, 6.0, 8.0, 8.0, 0.2)) == [R.NOT_REPRODUCED, R.NOT_REPRODUCED]
    assert v(_exp2("proxy", 150, 160, 170, 180, 5)) == [R.NOT_MEASURED, R.NOT_MEASURED]
    assert v(_exp2("openai", 9.0, 8.5, 7.0, 6.5, 0.3), TINY) == [R.NOT_AT_SCALE, R.NOT_AT_SCALE]
    assert v(None) == [R.NOT_RUN, R.NOT_RUN]
    assert v({"backend": "openai", "recipes": {"leaner-leaner": {}}}) == [R.NOT_RUN, R.NOT_RUN]


def _exp3(lm: list, fr: list, tok: int = 2048):
    mk = lambda xs: {"steps": xs, "tokens": [None if x is None else x * tok for x in xs]}  # noqa: E731
    return {"strategies": {"lmloss": mk(lm), "full-random": mk(fr)}, "target_loss": 5.0, "preset": None}


def test_exp3_verdicts_each_reachable():
    cfg = R.ReportConfig()
    v = lambda e3, p=PAPER: R.claims_exp3(e3, p, cfg)[0].verdict  # noqa: E731
    assert v(_exp3([78, 80, 82], [100, 101, 99])) == R.REPRODUCED           # ~20% fewer
    assert v(_exp3([95, 96, 94], [100, 101, 99])) == R.NOT_REPRODUCED       # 5% < 10% threshold
    assert v(_exp3([60, 120, 80], [100, 101, 99])) == R.NOT_REPRODUCED      # inside the seed noise
    assert v(_exp3([80, None], [100, 100])) == R.NOT_REPRODUCED             # never reached the target
    assert v(_exp3([78, 80], [100, 100]), TINY) == R.NOT_AT_SCALE
    assert v(None) == R.NOT_RUN
    assert v({"strategies": {"lmloss": {"steps": [1]}}, "preset": None}) == R.NOT_RUN


def test_entropy_verdicts_each_reachable():
    ent = R.adapt_entropy(json.loads((FIXTURE / "reports" / "entropy.json").read_text()))
    cfg = R.ReportConfig()
    assert [c.verdict for c in R.claims_entropy(ent, cfg)] == [R.REPRODUCED, R.REPRODUCED]
    # the equal-budget setting has bpe_H4 level/above: deciding on it fails the entropy claim
    eq = R.claims_entropy(ent, R.ReportConfig(entropy_setting="equal_budget"))[1]
    assert eq.verdict == R.NOT_REPRODUCED and "bpe_H4" in eq.why
    swapped = {s: {"leaner": v["ori"], "ori": v["leaner"]} for s, v in ent.items()}
    assert [c.verdict for c in R.claims_entropy(swapped, cfg)] == [R.NOT_REPRODUCED, R.NOT_REPRODUCED]
    assert [c.verdict for c in R.claims_entropy(None, cfg)] == [R.NOT_RUN, R.NOT_RUN]


# ------------------------------------------------------------------------------------ adapters
def test_exp1_adapter_accepts_other_layouts():
    rows = {"rows": [{"arch": "llama", "pretrain": "leaner", "task": "cola", "mean": 0.2, "std": 0.02, "n": 3},
                     {"arch": "LLaMA", "corpus": "ori", "task": "cola", "score": 0.1}]}
    cells = {(c["arch"], c["pretrain"]): c for c in R.adapt_exp1(rows)["cells"]}
    assert cells[("llama", "leaner")]["std"] == 0.02 and cells[("llama", "ori")]["mean"] == 0.1
    combined = {"llama-leaner": {"mrpc": {"accuracy": 0.7, "f1": 0.8}, "stsb": {"mean": 0.3, "std": 0.1}},
                "bert/scratch": {"mrpc": 0.6}, "lr_grid": {"llama-leaner": {"mrpc": 9.9}}}
    cells = {(c["arch"], c["pretrain"], c["task"]): c for c in R.adapt_exp1(combined)["cells"]}
    assert cells[("llama", "leaner", "mrpc")]["mean"] == pytest.approx(0.75)  # GLUE: mean of acc and F1
    assert cells[("llama", "leaner", "stsb")]["std"] == 0.1
    assert cells[("bert", "scratch", "mrpc")]["mean"] == 0.6
    with pytest.raises(R.LayoutError, match="exp1.json"):
        R.adapt_exp1({"hello": 1})


def test_exp3_adapter_accepts_seed_maps_and_means():
    d = {"results": {"lmloss": {"steps": {"0": 80, "1": 82}, "final_loss": {"mean": 5.0, "std": 0.1}},
                     "full-random": {"steps_to_target": [100, None]}}}
    s = R.adapt_exp3(d)["strategies"]
    assert s["lmloss"]["steps"] == [80.0, 82.0] and s["lmloss"]["final_loss"] == [5.0]
    assert s["full-random"]["steps"] == [100.0, None]


def test_exp2_adapter_reads_the_stage_layout():
    e2 = R.adapt_exp2(json.loads((FIXTURE / "reports" / "exp2.json").read_text()))
    assert e2["backend"] == "proxy" and e2["recipes"]["ori-ori"]["proxy_ref_ppl"]["mean"] == 190.0
    with pytest.raises(R.LayoutError):
        R.adapt_exp2({"recipes": {}})


# ------------------------------------------------------------------------------------ timings hook
def test_stage_name_from_dvc_or_argv(monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "tokenizer@leaner")
    assert stage_name(["stages/tokenizer.py", "leaner"]) == "tokenizer@leaner"
    monkeypatch.delenv("DVC_STAGE")
    assert stage_name(["stages/tokenizer.py", "leaner"]) == "tokenizer@leaner"
    assert stage_name(["stages/instruct_tune.py", "--pretrain", "leaner", "--tune", "ori", "--params", "p.yaml"]
                      ) == "instruct_tune@leaner-ori"
    assert stage_name(["stages/entropy.py", "--params", "x.yaml"]) == "entropy"
