"""Nothing lost on a failed or killed run. DVC deletes a stage's outputs before it runs the command, unless
they persist; the reports are `cache: false` outputs that only git holds, so every one of them persists
(dvc.yaml), and every stage writes them atomically. A bad params value fails at the first stage (`code`,
which every stage depends on), before DVC touches any other stage's outputs.

The DVC-level tests run `dvc exp run` / `dvc repro` in a temporary copy of the repository (its committed
reports included) with a small params set: the entropy chain on the fixture release is run once per module;
the EXP3 stages upstream of `exp3_report` are recorded as done with `dvc commit` on placeholder outputs
(what matters is which stage DVC reaches, not what they compute). Stage commands import the copy's code.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
# the small params set: a Hydra profile (`dvc exp run` composes params.yaml from conf/, as in a real clone)
PROFILE = """# @package _global_
data:
  local_dir: {data}
  max_words_per_genre: {{train: 3000, validation: 1000}}
  genres: [wiki, math, web]
entropy:
  genres: [wiki, web]
  pooled_genres: [wiki, web]
exp1:
  archs: [llama]
pretrain:
  threads: 1
  token_budget: 81920
  genres: [wiki, web]
  eval_tokens: 1024
  eval_every: 2
  log_every: 1
"""


# ------------------------------------------------------------------------------------ the declarations
def _outputs():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [(st.name, o) for st in repo.index.stages for o in st.outs], repo.index.stages


def test_every_report_persists_and_the_first_stage_validates_all_params():
    """Every output git holds (`cache: false`: reports, metrics, plots, DVCLive logs) persists, so DVC never
    deletes it before running its stage; so does data/code, the output of the stage that validates the
    whole params.yaml (a failed check leaves the checksums every stage depends on in place)."""
    from dvc.dependency.param import ParamsDependency

    from tinyhelen.pipeline import CODE_STAGE

    outs, stages = _outputs()
    uncached = [(s, str(o)) for s, o in outs if not o.use_cache]
    assert len(uncached) > 50
    assert [(s, str(o)) for s, o in outs if not o.use_cache and not o.persist] == [], \
        "a `cache: false` output needs `persist: true` (README: When a run fails or is killed)"
    code = next(st for st in stages if st.name == CODE_STAGE)
    assert [str(o) for o in code.outs if o.persist] == ["data/code"]
    whole = [d for d in code.deps if isinstance(d, ParamsDependency) and Path(d.def_path).name == "params.yaml"]
    assert whole and whole[0].params == []  # all of params.yaml
    # every other stage runs after it (depends on its data/code/<script>.sha256)
    code_deps = {st.name for st in stages
                 if any(str(d.def_path).startswith("data/code/") for d in st.deps)}
    assert code_deps == {st.name for st in stages} - {CODE_STAGE}


# ------------------------------------------------------------------------------------ helpers
def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "TINYHELEN_TIMINGS": "0", "PYTHONPATH": str(repo / "src"), **GIT_ENV}


def _dvc(repo: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([DVC, *args], cwd=repo, capture_output=True, text=True, env=_env(repo), check=False)
    if ok:
        assert res.returncode == 0, f"dvc {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def _snapshot(repo: Path, *tops: str) -> dict[str, bytes]:
    """Every file under ``tops`` (bytes), but for git/DVC-ignored temporaries and the LLM reply cache."""
    files = {}
    for top in tops:
        for p in sorted((repo / top).rglob("*")):
            rel = p.relative_to(repo).as_posix()
            if p.is_file() and not re.search(r"(^|/)\.[^/]*\.tmp/|^data/llm_cache/|^reports/timings/", rel):
                files[rel] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir) -> Path:
    """A committed copy of the repository (its reports included) in which the entropy chain (code, prepare,
    simplify, leaner_corpus, tokenizer, entropy) ran on the fixture release with the small params set."""
    repo = tmp_path_factory.mktemp("failures") / "repo"
    files = _git(REPO, "ls-files", "-co", "--exclude-standard").split()
    for f in files:
        if (REPO / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, repo / f)
    (repo / "dvc.lock").unlink(missing_ok=True)
    (repo / "conf/profile/default.yaml").write_text(PROFILE.format(data=data_dir))
    from tinyhelen import profiles

    (repo / "params.yaml").write_text(profiles.dump(profiles.compose("default", root=repo)))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "copy")
    _dvc(repo, "repro", "entropy")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "entropy")
    return repo


def _clone(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst, symlinks=True)
    return dst


def _mark_done(repo: Path, stages: list[str]) -> None:
    """Record ``stages`` as run (``dvc commit``), with a placeholder for each missing dep or output."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        by_name = {st.name: st for st in r.index.stages}
        paths = [str(x.def_path) for s in stages for x in [*by_name[s].deps, *by_name[s].outs]
                 if x.__class__.__name__ != "ParamsDependency"]
    for rel in paths:
        p = repo / rel
        if p.exists():
            continue
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}\n")
        else:
            p.mkdir(parents=True, exist_ok=True)
            (p / "placeholder").write_text("x\n")
    _dvc(repo, "commit", "-f", *stages)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "upstream done")


def _exp3_upstream(repo: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        names = [st.name for st in r.index.stages]
    return [n for n in names if n.split("@")[0] in {"exp3_units", "exp3_reference_lm", "exp3_difficulty",
                                                     "exp3_train", "leaner_glue", "exp3_glue"}]


# ------------------------------------------------------------------------------------ a bad -S value
BAD_VALUES = {  # key=value, the stage that reads it (the target), its report files (committed in the copy)
    "entropy": ("entropy.max_n=abc", "entropy", 6),
    "pretraining": ("pretrain.lr=[-0.001]", "pretrain_leaner@llama", 6),
    "curriculum": ("curriculum=nonsense", "exp3_report", 7),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_fails_before_any_output_is_touched(base, tmp_path, case):
    """`dvc exp run -S <bad value> <stage>`: the `code` stage fails with the key named and nothing else
    runs; every file under reports/ and data/ is still there, byte for byte; the bad value stays in
    params.yaml (DVC's `-S`) and `dvc status` shows the stage as changed; `git checkout params.yaml` undoes it."""
    override, target, n_reports = BAD_VALUES[case]
    repo = _clone(base, tmp_path / "repo")
    if case == "curriculum":
        _mark_done(repo, _exp3_upstream(repo))
    before = _snapshot(repo, "reports", "data")
    declared = _declared(repo, target)
    reports = [f for f in before if _declared_by(f, declared)]
    assert len(reports) == n_reports, reports

    res = _dvc(repo, "exp", "run", "-S", override, target, ok=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    after = _snapshot(repo, "reports", "data")
    assert after.keys() == before.keys(), sorted(before.keys() ^ after.keys())
    assert [f for f in before if before[f] != after[f]] == []
    key = override.split("=")[0]
    assert re.search(rf"error: params\.yaml: {re.escape(key)}: ", out), out[-3000:]
    assert "failed to reproduce 'code'" in out and _ran(out) == {"code"}, out[-3000:]
    assert "git checkout params.yaml" in out
    assert _git(repo, "status", "--porcelain").split() == ["M", "params.yaml"]
    status = _dvc(repo, "status", target).stdout
    assert f"{target}:" in status and "params.yaml" in status, status

    _git(repo, "checkout", "params.yaml")
    assert "code:" not in _dvc(repo, "status", "code").stdout


def _declared(repo: Path, stage: str) -> list[str]:
    """The outputs ``stage`` declares."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return [str(o.def_path) for s in r.index.stages if s.name == stage for o in s.outs]


def _declared_by(rel: str, outs: list[str]) -> bool:
    return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outs)


@pytest.mark.slow
def test_a_valid_change_after_a_bad_one_reruns_code_and_its_stage_only(base, tmp_path):
    """After a failed check, a valid value runs: the code stage (its checksums unchanged) and the stage that
    reads the key, whose persisted reports are rewritten (and only those)."""
    repo = _clone(base, tmp_path / "repo")
    before = _snapshot(repo, "reports", "data/code")
    _dvc(repo, "exp", "run", "-S", "entropy.max_n=abc", "entropy", ok=False)
    res = _dvc(repo, "exp", "run", "-S", "entropy.max_n=3", "entropy")
    assert _ran(res.stdout) == {"code", "entropy"}
    after = _snapshot(repo, "reports", "data/code")
    changed = {f for f in before if before[f] != after.get(f)}
    declared = _declared(repo, "entropy")
    assert changed and all(_declared_by(f, declared) for f in changed), changed
    assert "entropy.md" in " ".join(changed) and after.keys() == before.keys()
    assert "changed" not in _dvc(repo, "status", "entropy").stdout


# ------------------------------------------------------------------------------------ SIGKILL
def _stage_pids(pgid: int, script: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if script in cmd and os.getpgid(int(d.name)) == pgid:
                pids.append(int(d.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


KILLS = {  # stage, params change that makes it stale, what to wait for before the kill
    "entropy": ("entropy", {"entropy": {"max_n": 3}}, "process"),
    "pretraining": ("pretrain_leaner@llama", {"pretrain": {"lr": [0.002]}}, r"step \d+/\d+: train loss"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(KILLS))
def test_a_killed_stage_leaves_every_report(base, tmp_path, case):
    """`dvc repro <stage>` killed (SIGKILL to its process group) while the stage's command runs (for the
    pretraining: after it has logged training steps): every report is still there, byte for byte, and
    `dvc status` shows the stage as changed."""
    stage, change, wait_for = KILLS[case]
    repo = _clone(base, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in change.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = _snapshot(repo, "reports")
    script = f"stages/{stage.split('@')[0].split('_')[0]}.py"
    log = tmp_path / "repro.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([DVC, "repro", stage], cwd=repo, env=_env(repo), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            running = _stage_pids(proc.pid, script)
            if running and (wait_for == "process" or re.search(wait_for, log.read_text(errors="replace"))):
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the stage ended before the kill:\n{log.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after = _snapshot(repo, "reports")
    assert after.keys() == before.keys(), sorted(before.keys() ^ after.keys())
    assert [f for f in before if before[f] != after[f]] == []
    assert f"{stage}:" in _dvc(repo, "status", stage).stdout


# ------------------------------------------------------------------------------------ the DVCLive log
def test_a_training_log_is_replaced_only_when_the_run_ends(tmp_path):
    """The DVCLive log of a run (a persisted output: reports/<...>/metrics.json, plots/metrics/) is written
    to a temporary sibling: while the run goes on, and after it dies without ending, the previous complete
    log is in place byte for byte; when it ends, the new log replaces it as a whole."""
    from tinyhelen.train.live import TrainLog

    live = tmp_path / "reports" / "run"

    def rows(log, n, loss):
        for step in range(1, n + 1):
            log.on_row({"step": step, "tokens": step * 8, "train_loss": loss / step, "val_loss": None, "lr": 0.1})

    first = TrainLog(live)
    first.on_start(None, False, [])
    rows(first, 3, 4.0)
    first.on_end()
    previous = _snapshot(tmp_path, "reports")
    assert {"reports/run/metrics.json", "reports/run/plots/metrics/train_loss.tsv"} <= previous.keys()

    killed = TrainLog(live)
    killed.on_start(None, False, [])
    rows(killed, 2, 9.0)  # ...and the process dies here: on_end never comes
    assert _snapshot(tmp_path, "reports") == previous

    again = TrainLog(live)  # the next run (of another process in practice) writes the whole log anew
    again.on_start(None, False, [{"step": 1, "tokens": 8, "train_loss": 7.0, "val_loss": None, "lr": 0.1}])
    assert _snapshot(tmp_path, "reports") == previous
    again.on_end()
    now = _snapshot(tmp_path, "reports")
    assert now.keys() == {"reports/run/metrics.json", "reports/run/plots/metrics/train_loss.tsv",
                          "reports/run/plots/metrics/lr.tsv"}
    assert now["reports/run/plots/metrics/train_loss.tsv"].decode().splitlines()[1:] == ["1\t7.0"]


def test_a_replaced_directory_keeps_no_stale_file_and_survives_a_failed_block(tmp_path):
    """``atomic_path`` on a directory: a failed block leaves the previous directory as it was; a successful
    one replaces it as a whole (a file the new version does not write is gone: persisted directory outputs
    such as reports/simplify hold no stale genre)."""
    from tinyhelen.io import atomic_path

    out = tmp_path / "simplify"
    out.mkdir()
    for g in ("wiki", "web"):
        (out / f"{g}.json").write_text(g)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "wiki.json").write_text("new")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["web.json", "wiki.json"] and (out / "wiki.json").read_text() == "wiki"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "wiki.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["wiki.json"] and (out / "wiki.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["simplify"]  # no temporary left


STALE = {  # stage: (its directory output, params, the files it writes there)
    "simplify": ("reports/simplify", {"data": {"genres": ["wiki"]}, "llm": {"backend": "replay", "progress": False},
                                      "simplify": {"max_docs_per_genre": 5}}, ["wiki.json"]),
    "exp3_glue": ("reports/exp3/glue", {"exp3": {"strategies": ["full-random"], "seeds": [0],
                                                 "glue": {"enabled": False}}},
                  ["full-random-s0.json", "untrained-s0.json"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STALE))
def test_a_persisted_directory_output_holds_no_file_of_an_earlier_run(tmp_path, prepared, stage):
    """DVC no longer empties a persisted directory output before its stage runs: the stage replaces it as a
    whole, so a file of an earlier run (a genre, a strategy no longer in the params) does not stay inside."""
    from conftest import stage_argv

    out, params, expected = STALE[stage]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/prepared").symlink_to(prepared)
    (tmp_path / out).mkdir(parents=True)
    (tmp_path / out / "stale-s9.json").write_text("{}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = subprocess.run(stage_argv(stage), cwd=tmp_path, capture_output=True, text=True, check=False,
                         env={**os.environ, "TINYHELEN_TIMINGS": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / out).iterdir()) == expected
