"""Profiles: defaults live in the section models; conf/config.yaml is rendered from them, params.yaml is the
`default` profile composed by Hydra (as `dvc exp run` does), and every profile composes and validates."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from tinyhelen import profiles

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_conf_config_is_rendered_from_the_section_models():
    assert (REPO / "conf/config.yaml").read_text() == profiles.render(), \
        "conf/config.yaml is stale: run `python -m tinyhelen.profiles render`"


def test_params_yaml_is_the_default_profile():
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == profiles.compose("default"), \
        "params.yaml differs from the default profile: `python -m tinyhelen.profiles compose > params.yaml`"


def test_every_profile_composes_and_validates():
    assert set(profiles.profiles()) >= {"default", "cpu-study", "gpu-study"}
    assert profiles.check() == []


def test_a_profile_changes_its_keys_only():
    base, cpu = profiles.compose("default"), profiles.compose("cpu-study")
    assert cpu["profile"] == "cpu-study" and base["profile"] == "default"
    assert cpu["exp3"]["train"]["max_steps"] == 2500 and len(cpu["exp3"]["seeds"]) >= 3
    assert cpu["exp1"]["archs"] == ["llama"]
    assert cpu["data"] == base["data"] and cpu["entropy"] == base["entropy"]


def test_an_override_on_top_of_a_profile_and_a_bad_value_fails(tmp_path):
    p = profiles.compose("cpu-study", ["glue.epochs=5"])
    assert p["glue"]["epochs"] == 5 and p["profile"] == "cpu-study"
    bad = profiles.compose("default", ["glue.epochs=-1"])
    path = tmp_path / "params.yaml"
    path.write_text(profiles.dump(bad))
    from tinyhelen.config import ParamsError
    from tinyhelen.params import validate_all

    with pytest.raises(ParamsError, match="glue.epochs"):
        validate_all(path)


def test_dvc_composes_params_with_hydra():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc/config")
    assert cfg.get("hydra", "enabled", fallback="false").strip() == "true"


def test_a_field_comment_in_the_model_documents_the_rendered_key():
    text = profiles.render()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("token_budget:"))
    assert "#" in line and "tokens" in line


def test_save_keeps_a_runs_results_and_lists_it_in_the_report_card(tmp_path):
    from tinyhelen.report.provenance import read_profile_runs

    reports = tmp_path / "reports"
    (reports / "figures").mkdir(parents=True)
    (reports / "README.md").write_text("# card\n")
    (reports / "summary.json").write_text('{"claims": {"exp3_lmloss_fewer_steps": {"verdict": "inconclusive"}}}')
    (reports / "figures" / "exp3.png").write_bytes(b"png")
    (tmp_path / "params.yaml").write_text("profile: cpu-study\n")
    dest = profiles.save("cpu-study", "dvc exp run -S profile=cpu-study", 61.4, tmp_path)
    assert (dest / "README.md").read_text() == "# card\n" and (dest / "figures/exp3.png").read_bytes() == b"png"
    assert (dest / "params.yaml").exists()
    (run,) = read_profile_runs(tmp_path / "results")
    assert run["profile"] == "cpu-study" and run["wall_seconds"] == 61
    assert run["command"] == "dvc exp run -S profile=cpu-study"
    assert run["verdicts"] == {"exp3_lmloss_fewer_steps": "inconclusive"}
    assert "reports/exp1.json" in run["missing"]
    (reports / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="report stage"):
        profiles.save("cpu-study", "x", 1, tmp_path)
    assert (dest / "README.md").exists(), "a failed save leaves the earlier one in place"


def test_save_leaves_out_run_files_of_stages_this_run_does_not_have(tmp_path):
    """dvc.lock keeps the entry of a matrix stage the params no longer produce (an earlier run with more
    architectures): its run file is not this run's and is not saved; neither is a file no stage wrote."""
    import subprocess

    import yaml

    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("archs: [llama]\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"glue": {"foreach": "${archs}", "do": {
        "cmd": "true", "outs": [{"reports/runs/glue/${item}.tsv": {"cache": False}}]}}}}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        f"glue@{a}": {"cmd": "true", "outs": [{"path": f"reports/runs/glue/{a}.tsv", "hash": "md5",
                                                   "md5": "d41d8cd98f00b204e9800998ecf8427e", "size": 2}]}
        for a in ("llama", "bert")}}))
    runs = tmp_path / "reports" / "runs" / "glue"
    runs.mkdir(parents=True)
    for name in ("llama", "bert", "stray"):
        (runs / f"{name}.tsv").write_text("x\n")
    (tmp_path / "reports" / "README.md").write_text("# card\n")
    (tmp_path / "reports" / "summary.json").write_text("{}")
    dest = profiles.save("cpu-study", "x", 1, tmp_path)
    assert sorted(p.name for p in (dest / "runs" / "glue").iterdir()) == ["llama.tsv"]


def test_a_resumed_run_reports_the_wall_time_of_every_invocation(tmp_path, monkeypatch):
    """`profiles run` interrupted, failed, then rerun: run.json sums the invocations of that command."""
    import json
    import subprocess
    import time

    (tmp_path / "conf/profile").mkdir(parents=True)
    (tmp_path / "conf/profile/cpu-study.yaml").write_text("# @package _global_\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/README.md").write_text("# card\n")
    clock = iter([0.0, 100.0, 200.0, 230.0, 300.0, 305.0, 400.0, 460.0])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    outcomes = iter([KeyboardInterrupt, 1, 1, 0])

    def dvc(cmd, cwd):
        out = next(outcomes)
        if out is KeyboardInterrupt:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(subprocess, "call", dvc)
    with pytest.raises(KeyboardInterrupt):
        profiles.run("cpu-study", root=tmp_path)  # 100 s, interrupted
    assert profiles.run("cpu-study", root=tmp_path) == 1  # 30 s, failed
    assert profiles.run("cpu-study", ["exp3.seeds=[0]"], root=tmp_path) == 1  # 5 s: another command
    assert profiles.run("cpu-study", root=tmp_path) == 0  # 60 s: done
    run = json.loads((tmp_path / "results/cpu-study/run.json").read_text())
    assert run["wall_seconds"] == 190 and run["wall_seconds_by_invocation"] == [100, 30, 60]
    (left,) = json.loads((tmp_path / profiles.PENDING_DIR / "cpu-study.json").read_text())
    assert left["command"].endswith("-S 'exp3.seeds=[0]'") and left["exit"] == 1


# ------------------------------------------------------------------------------------ estimate
def test_estimate_counts_steps_tokens_and_time_of_the_training_stages(prepared, capsys):
    """The steps and tokens of the estimate are the params' arithmetic (GLUE's from the files it reads); a GPU's
    time is FLOPs / (peak x MFU) but at least the step floor, a CPU's the FLOPs over the measured rate."""
    import math

    from tinyhelen import estimate

    params = profiles.compose("default")
    by = {ln.stage: ln for ln in estimate.lines(params, prepared / "glue")}
    pre, glue = params["pretrain"], params["glue"]
    steps = pre["token_budget"] // (pre["batch_size"] * pre["seq_len"])
    llama = by["pretrain_{leaner,ori}@llama"]
    assert (llama.runs, llama.steps, llama.tokens) == (2, 2 * steps, 2 * steps * pre["batch_size"] * pre["seq_len"])
    n = {t: min(sum(1 for _ in open(prepared / "glue" / f"{t}_train.jsonl")), glue["max_train_examples"])
         for t in glue["tasks"]}
    fine_tunes = 3 * len(glue["lr"]) * len(glue["seeds"])  # inits leaner, ori, scratch
    epochs = glue["epochs"]  # per task at the CPU default
    assert isinstance(epochs, dict) and len(set(epochs.values())) > 1
    assert by["glue@llama-{leaner,ori,scratch}"].steps == fine_tunes * sum(
        epochs[t] * math.ceil(k / glue["batch_size"]) for t, k in n.items())
    tr = params["exp3"]["train"]
    exp3 = by["exp3_train@{strategies}-{seeds}"]
    assert exp3.steps == len(params["exp3"]["strategies"]) * len(params["exp3"]["seeds"]) * tr["max_steps"]
    secs, basis = estimate.seconds(llama, "h100")
    assert secs == max(llama.flops / (989e12 * estimate.ASSUMED_MFU), llama.steps * estimate.ASSUMED_STEP_FLOOR_S)
    assert basis.startswith("ESTIMATE")
    assert estimate.seconds(llama, "h100", latency={"pretrain": 0.5}) == (llama.steps * 0.5, "0.5 s/step given")
    secs, basis = estimate.seconds(llama, "cpu", rates={("lm", "llama", "tiny"): 1e9})
    assert secs == llama.flops / 1e9 and basis.startswith("measured")
    assert profiles.main(["estimate", "default", "--device", "h100", "--glue-dir", str(prepared / "glue")]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATE" in out and out.count("\n") == len(by) + 3 and "glue@mamba" in out
