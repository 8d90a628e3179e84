"""Each claim against scale (tinyhelen.report.scale): points of this run and the saved profiles by tokens per run,
the study's stated point, the figures and the card's section."""
from __future__ import annotations

import json
import shutil

import pytest

from tinyhelen import report as R
from tinyhelen.report import scale
from tinyhelen.report.claims import Claim
from tinyhelen.study import STUDY_SCALE

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "report"


def _claim(cid: str, effect: float, frac: float | None, verdict: str = "inconclusive") -> Claim:
    numbers = {"effect": effect, "lo": effect - 0.1, "hi": effect + 0.1, "n": 5}
    if frac is not None:
        numbers["scale_tokens"] = frac
    return Claim(cid, cid.split("_")[0].upper(), cid, verdict, "-", "-", numbers=numbers)


def test_points_place_every_run_at_its_tokens_per_run():
    claims = [_claim("exp3_lmloss_fewer_steps", 0.3, 1e-4), _claim("exp1_leaner_beats_ori", 0.01, 5e-5),
              _claim("entropy_vocab", 1.0, None)]
    profiles = {"cpu-study-exp3": {"claims": {"exp3_lmloss_fewer_steps": {
        "verdict": "direction reproduced, size differs", "effect": 0.5, "lo": 0.4, "hi": 0.6, "n": 5,
        "scale_tokens": 1e-3}}}, "broken": {}}
    pts = scale.points(claims, profiles)
    assert set(pts) == {"exp3_lmloss_fewer_steps", "exp1_leaner_beats_ori"}  # entropy: no model scale
    exp3 = pts["exp3_lmloss_fewer_steps"]
    assert [p.source for p in exp3] == [scale.WORKSPACE, "cpu-study-exp3", scale.STUDY]  # by tokens per run
    assert exp3[0].tokens_per_run == pytest.approx(1e-4 * STUDY_SCALE["EXP3"].tokens_per_run)
    assert exp3[1].verdict == "direction reproduced, size differs" and exp3[1].effect == 0.5
    assert exp3[2].effect == 0.20 and exp3[2].tokens_per_run == STUDY_SCALE["EXP3"].tokens_per_run
    assert [p.source for p in pts["exp1_leaner_beats_ori"]] == [scale.WORKSPACE]  # the study states no size


def test_the_card_draws_each_claim_against_scale(tmp_path):
    tree = tmp_path / "repo"
    shutil.copytree(FIXTURE, tree)
    saved = tree / "results" / "cpu-study-exp3"
    saved.mkdir(parents=True)
    (saved / "summary.json").write_text(json.dumps({"claims": {"exp3_lmloss_fewer_steps": {
        "verdict": "inconclusive", "effect": 0.1, "lo": -0.2, "hi": 0.3, "n": 5, "scale_tokens": 0.01}}}))
    R.run(tree, "params.yaml")
    md = (tree / "reports" / "README.md").read_text()
    assert "### Each claim against scale" in md
    assert "![exp3_lmloss_fewer_steps](figures/scale/exp3_lmloss_fewer_steps.png)" in md
    assert (tree / "reports/figures/scale/exp3_lmloss_fewer_steps.png").stat().st_size > 1000
    rows = (tree / "reports/plots/scale.tsv").read_text().splitlines()
    assert rows[0].split("\t") == scale.COLUMNS
    mine = [r.split("\t") for r in rows[1:] if r.startswith("exp3_lmloss_fewer_steps\t")]
    assert [r[1] for r in mine] == ["workspace", "cpu-study-exp3", "study (stated)"]
