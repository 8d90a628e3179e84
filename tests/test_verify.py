"""Run files and ``python -m tinyhelen.report verify``: the run-file format (typed cells, errors naming file and
line, the layout dvc.yaml writes), and verify on the report fixture (tests/fixtures/report: run files under
reports/runs/ and the typed results built from them): it passes as written, and fails naming the claim, the file
and the figure when a number of a run file, a typed result or summary.json is edited; a saved profile keeps its
run files and verifies."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyhelen import profiles, runfiles
from tinyhelen import report as R
from tinyhelen.io import InputError
from tinyhelen.report.verify import main, verify

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "report"


@pytest.fixture()
def tree(tmp_path) -> Path:
    """The fixture as a workspace whose report stage has run (reports/summary.json written)."""
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    R.run(root, "params.yaml", R.ReportConfig())
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, (path, old)
    path.write_text(text.replace(old, new, 1))


def _row_of(path: Path, **match) -> str:
    """The first line of a run file whose cells match ``match``."""
    rf = runfiles.read(path)
    lines = path.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")][1:]
    for line, row in zip(body, rf.rows):
        if all(row[k] == v for k, v in match.items()):
            return line
    raise AssertionError(f"no row {match} in {path}")


# ------------------------------------------------------------------------------------ the format
def test_run_file_round_trip_and_typed_cells(tmp_path):
    p = runfiles.write(tmp_path / "x.tsv", "glue", {"arch": "llama", "examples": {"mrpc": 3}},
                       [{"task": "mrpc", "lr": 0.001, "seed": 1, "epoch": 2, "val_score": 1 / 3, "test_score": None}],
                       ["task", "lr", "seed", "epoch", "val_score", "test_score"])
    rf = runfiles.read(p, "glue")
    assert rf.meta == {"arch": "llama", "examples": {"mrpc": 3}}
    assert rf.rows == [{"task": "mrpc", "lr": 0.001, "seed": 1, "epoch": 2, "val_score": 0.333333333333,
                        "test_score": None}]
    assert p.read_text().splitlines()[0] == '# kind: "glue"'
    with pytest.raises(InputError, match="kind 'glue', expected 'curve'"):
        runfiles.read(p, "curve")


@pytest.mark.parametrize("body, message", [
    ("step\tval_loss\n1\tx\n", r"x.tsv:3: column 'val_loss': 'x' is not a number"),
    ("step\tval_loss\n1.5\t2\n", r"x.tsv:3: column 'step': '1.5' is not an integer"),
    ("step\tval_loss\n1\n", r"x.tsv:3: 1 cells for 2 columns"),
])
def test_a_bad_run_file_names_file_and_line(tmp_path, body, message):
    (tmp_path / "x.tsv").write_text('# kind: "curve"\n' + body)
    with pytest.raises(InputError, match=message):
        runfiles.read(tmp_path / "x.tsv")
    (tmp_path / "x.tsv").write_text("# kind curve\n" + body)
    with pytest.raises(InputError, match=r"x.tsv:1: header line"):
        runfiles.read(tmp_path / "x.tsv")


def test_a_run_file_holds_no_wall_clock_figure(tmp_path):
    for bad in ({"tokens_per_s": 1.0}, {"seconds": 2.0}, {"mfu": 0.3}):
        with pytest.raises(ValueError, match="wall-clock"):
            runfiles.write(tmp_path / "x.tsv", "curve", {}, [{"step": 1, **bad}], ["step", *bad])
    with pytest.raises(ValueError, match="wall-clock"):
        runfiles.write(tmp_path / "x.tsv", "curve", {"wall_time": 3}, [], ["step"])
    assert not (tmp_path / "x.tsv").exists()
    for f in (FIXTURE / "reports/runs").rglob("*.tsv"):
        rf = runfiles.read(f)
        assert not [k for k in [*rf.columns, *rf.meta] if runfiles.WALL_CLOCK.search(k)], f


def test_curve_rows_keep_the_evaluations_and_the_last_row():
    hist = [{"step": 0, "val_loss": 5.0, "pool_fraction": 0.1}, {"step": 4, "val_loss": None},
            {"step": 8, "val_loss": 4.0}, {"step": 10, "val_loss": None}]
    rows = runfiles.curve_rows(hist, {"pool_fraction": "pool_share"}, peak_lr=0.1)
    assert [r["step"] for r in rows] == [0, 8, 10] and rows[0]["pool_share"] == 0.1 and rows[0]["peak_lr"] == 0.1


def test_dvc_yaml_writes_the_run_files_where_the_layout_says():
    """Every run-file path in dvc.yaml's commands follows runfiles.LAYOUT (the builders read that layout)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    pattern = {k: re.compile("^reports/runs/" + re.escape(v).replace(r"\{", "{").replace(r"\}", "}")
                             .replace("{arch}", "[^/]+").replace("{side}", "[^/]+").replace("{init}", "[^/]+")
                             .replace("{recipe}", "[^/]+").replace("{strategy}", "[^/]+").replace("{seed}", "[^/]+")
                             .replace("{name}", "[^/]+") + "$") for k, v in runfiles.LAYOUT.items()}
    written = set()
    for name, st in stages.items():
        for m in re.finditer(r"--run-files? (\S+)", st["cmd"]):
            path = m.group(1)
            if path == "reports/runs":
                continue
            kinds = [k for k, p in pattern.items() if p.match(path.replace("${item.", "").replace("}", ""))]
            if path.endswith("/glue") and "exp3_glue" in st["cmd"] + name:
                kinds = ["exp3_glue"] if path == "reports/runs/" + runfiles.LAYOUT["exp3_glue"].rsplit("/", 1)[0] \
                    else []
            assert kinds, f"{name}: {path} is not a run-file path of runfiles.LAYOUT"
            written |= set(kinds)
            outs = [next(iter(o)) if isinstance(o, dict) else o for o in st.get("outs", [])]
            assert path in outs, f"{name}: {path} is not declared as an output"
    assert written == set(runfiles.LAYOUT), set(runfiles.LAYOUT) - written


# ------------------------------------------------------------------------------------ verify
def test_verify_passes_on_the_fixture(tree, capsys):
    rep = verify(tree / "reports")
    assert rep.ok, rep.text()
    assert rep.run_files == len(list((tree / "reports" / "runs").rglob("*.tsv"))) > 50
    assert main([str(tree / "reports")]) == 0
    assert "every result, figure and verdict recomputed from" in capsys.readouterr().out


def test_an_edited_glue_score_fails_naming_the_claims_file_and_figure(tree):
    run = tree / "reports/runs/glue/llama-leaner.tsv"
    line = _row_of(run, task="rte", seed=0, lr=0.001, epoch=1)
    cells = line.split("\t")
    val, test = float(cells[5]), float(cells[6])
    other = _row_of(run, task="rte", seed=0, lr=0.001, epoch=2).split("\t")
    best = line if val >= float(other[5]) else "\t".join(other)
    edited = best.split("\t")
    edited[6] = str(float(edited[6]) + 0.25)
    _edit(run, best, "\t".join(edited))
    rep = verify(tree / "reports")
    text = rep.text()
    assert not rep.ok
    assert "exp1 claims exp1_leaner_beats_ori, exp1_llama_best: results/exp1.json cells[llama/leaner/rte].test" \
        in text, text
    assert "claim exp1_leaner_beats_ori: summary.json effect is" in text
    assert main([str(tree / "reports")]) == 1
    del test


def test_the_decoy_epoch_is_not_what_is_scored(tree):
    """Editing the test score of the epoch NOT selected (lower validation score) changes no figure: only the
    run file's digest in the typed result differs."""
    run = tree / "reports/runs/glue/llama-leaner.tsv"
    a = _row_of(run, task="rte", seed=0, lr=0.001, epoch=1).split("\t")
    b = _row_of(run, task="rte", seed=0, lr=0.001, epoch=2).split("\t")
    decoy = a if float(a[5]) < float(b[5]) else b
    edited = list(decoy)
    edited[6] = "0.999"
    _edit(run, "\t".join(decoy), "\t".join(edited))
    problems = verify(tree / "reports").problems
    assert problems and all("results/exp1.json run_files.glue/llama-leaner.tsv is" in p for p in problems), problems


@pytest.mark.parametrize("path, match, column, claim", [
    ("exp3/lmloss-s1.tsv", {"step": 60}, "val_loss", "exp3 claims exp3_lmloss_fewer_steps, exp3_lmloss_less_data"),
    ("exp3/full-random-s0.tsv", {"step": 120}, "val_loss", "exp3 claims exp3_lmloss_fewer_steps"),
    ("exp2/answers.tsv", {"recipe": "ori-ori", "qid": "q5"}, "proxy_ref_ppl", "exp2 claims exp2_leaner_pretraining"),
    ("entropy.tsv", {"setting": "equal_budget", "side": "leaner", "figure": "vocab"}, "value",
     "entropy claims entropy_vocab, entropy_ngram"),
    ("pretrain/bert-ori.tsv", {"step": 128}, "val_loss", "exp1 claims exp1_leaner_beats_ori"),
])
def test_an_edited_run_file_number_fails_naming_the_claim(tree, path, match, column, claim):
    run = tree / "reports/runs" / path
    line = _row_of(run, **match)
    cols = [ln for ln in run.read_text().splitlines() if not ln.startswith("#")][0].split("\t")
    cells = line.split("\t")
    i = cols.index(column)
    cells[i] = str(round(float(cells[i]) * 0.9, 5))
    _edit(run, line, "\t".join(cells))
    rep = verify(tree / "reports")
    assert not rep.ok and claim in rep.text(), rep.text()


def test_an_edited_summary_or_result_fails_naming_the_claim(tree):
    s = tree / "reports/summary.json"
    good = s.read_text()
    data = json.loads(good)
    data["claims"]["exp3_lmloss_less_data"]["verdict"] = "reproduced"
    data["claims"]["entropy_vocab"]["vocab_ratio"] = 0.5
    s.write_text(json.dumps(data))
    text = verify(tree / "reports").text()
    assert "claim exp3_lmloss_less_data: summary.json verdict is reproduced, recomputed inconclusive" in text
    assert "claim entropy_vocab: summary.json vocab_ratio is 0.5, recomputed" in text
    s.write_text(good)
    res = tree / "reports/results/exp2.json"
    _edit(res, '"selected_step": 100', '"selected_step": 75')
    text = verify(tree / "reports").text()
    assert "exp2 claims exp2_leaner_pretraining, exp2_leaner_tuning: results/exp2.json recipes[leaner-leaner]." \
           "selected_step is 75, recomputed 100" in text, text


def test_a_directory_without_run_files_cannot_be_verified(tree):
    shutil.rmtree(tree / "reports/runs")
    rep = verify(tree / "reports")
    assert not rep.ok and "no run files" in rep.text()


def test_a_saved_profile_keeps_its_run_files_and_verifies(tree):
    """``profiles.save`` copies the run files the stages of dvc.lock wrote (not a stale one left by an earlier
    run with other params) and the inputs the verdicts are qualified by; the copy verifies on its own."""
    runs = tree / "reports/runs"
    outs = [{"path": p.relative_to(tree).as_posix()} for p in sorted(runs.rglob("*.tsv"))]
    (tree / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"all": {"cmd": "x", "outs": outs}}}))
    shutil.copy(runs / "glue/llama-leaner.tsv", runs / "glue/gpt2-leaner.tsv")  # stale: in no stage of the lock
    dest = profiles.save("fixture", "dvc exp run -S profile=fixture", 1.0, tree)
    assert (dest / "runs/glue/llama-leaner.tsv").read_bytes() == (runs / "glue/llama-leaner.tsv").read_bytes()
    assert not (dest / "runs/glue/gpt2-leaner.tsv").exists()
    assert (dest / "prepare.json").exists() and (dest / "judge.json").exists() and (dest / "params.yaml").exists()
    rep = verify(dest)
    assert rep.ok, rep.text()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["exp1_report", "exp2_report"])
def test_the_report_stage_builds_the_same_result_from_the_run_files(tree, stage):
    """The stage, run with its dvc.yaml command on the fixture's run files, writes the typed result and metrics
    that verify recomputes (byte for byte), and its tables."""
    from conftest import stage_argv

    name = stage.removesuffix("_report")
    before = {f: (tree / "reports" / f).read_bytes() for f in (f"results/{name}.json", f"{name}.json")}
    (tree / "data/judge").mkdir(parents=True)
    (tree / "data/judge/summary.json").write_text('{"model": null}')
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": str(Path(sys.executable).parent), "TINYHELEN_TIMINGS": "0"}
    res = subprocess.run(stage_argv(stage), cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {f: (tree / "reports" / f).read_bytes() for f in before} == before
    md = (tree / "reports" / f"{name}.md").read_text()
    assert md.startswith(f"# {name.upper()}:") and "| ---" in md.replace("|:---", "| ---").replace("|---", "| ---")
    assert verify(tree / "reports").ok


@pytest.mark.slow
def test_the_command_line(tree):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": str(Path(sys.executable).parent)}
    ok = subprocess.run([sys.executable, "-m", "tinyhelen.report", "verify", "reports"], cwd=tree, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tree / "reports/summary.json").write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "tinyhelen.report", "verify"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "summary.json" in bad.stdout
