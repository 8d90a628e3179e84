"""DVC semantics: every stage declares exactly the params it reads, so a change reruns only what
depends on it; a no-op `dvc repro` is fast. Runs the real data stages in a temporary copy of the repo."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tinyhelen.pipeline import stage_params, stages_affected_by

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
DATA_STAGES = {"code", "prepare", "tokenizer", "entropy"}


def _downstream_only(stages: set[str]) -> set[str]:
    """The report stage (last in the DAG) legitimately reruns after any change."""
    return {s for s in stages if not s.startswith("report")}


@pytest.mark.slow
def test_params_changes_affect_only_their_stages():
    assert _downstream_only(stages_affected_by(["entropy.max_n"], REPO)) == {"entropy"}
    tok = _downstream_only(stages_affected_by(["tokenizer.vocab_size"], REPO))
    assert {"tokenizer", "entropy"} <= tok and "prepare" not in tok
    assert "prepare" in stages_affected_by(["data.max_words_per_genre"], REPO)


def test_every_params_key_a_stage_declares_exists():
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def exists(key: str) -> bool:
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = {s: k for s, keys in stage_params(REPO).items() for k in keys if not exists(k)}
    assert missing == {}


def _copy_repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    for f in ("dvc.lock",):
        (dst / f).unlink(missing_ok=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run(["git", "commit", "-qm", "copy"], cwd=dst, check=True, env=env)
    return dst


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"dvc {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.mark.slow
def test_dvc_reruns_only_what_changed(tmp_path, data_dir):
    repo = _copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["local_dir"] = str(data_dir)
    params["data"]["max_words_per_genre"] = {"train": 3000, "validation": 1000}
    params["data"]["genres"] = ["wiki", "math", "web"]
    params["entropy"]["genres"] = ["wiki", "web"]
    params["entropy"]["pooled_genres"] = ["wiki", "web"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _dvc(repo, "repro", "entropy")
    assert "Running stage 'entropy'" in out and (repo / "reports/entropy.json").exists()

    t = time.time()
    out = _dvc(repo, "repro", "entropy")
    assert "Running stage" not in out
    assert time.time() - t < 15, "a no-op dvc repro must take seconds"

    params["entropy"]["max_n"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(repo, "status", "entropy")
    assert "entropy:" in status and "prepare:" not in status and "tokenizer" not in status
    dry = _dvc(repo, "repro", "--dry", "entropy")
    ran = {line.split("'")[1] for line in dry.splitlines() if line.startswith("Running stage")}
    assert ran == {"code", "entropy"}  # code: validates params.yaml (its checksums stay the same)
    _dvc(repo, "repro", "entropy")

    # editing a module reruns the code stage, then exactly the stages whose code checksums changed
    # (results.py: imported by entropy, not by the stages upstream of it)
    module = repo / "src/tinyhelen/results.py"
    module.write_text(module.read_text() + "# edited\n")
    out = _dvc(repo, "repro", "entropy")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"code", "entropy"}


# ------------------------------------------------------------------------------------ code deps
def _problems(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    from tinyhelen.pipeline import code_deps

    return {name: (d, e) for name, (d, e) in code_deps(root).items() if d != e}


def test_every_stage_depends_on_its_script_and_its_code_checksums():
    """Every stage declares its script and data/code/<script>.sha256 (and no module file: the checksums
    stand for them); the code stage that writes the checksums depends on all the code (and validates the
    whole params.yaml first: tests/test_failures.py)."""
    bad = _problems(REPO)
    assert bad == {}, "dvc.yaml code deps are stale; run `python -m tinyhelen.pipeline deps --write`"
    code = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["code"]
    assert code["cmd"] == "python stages/code.py --out data/code"
    assert code["deps"] == ["stages", "src/tinyhelen"] and code["outs"] == [{"data/code": {"persist": True}}]


def test_code_checksums_list_the_script_and_exactly_its_import_closure():
    from tinyhelen.pipeline import code_checksums, import_closure

    lines = code_checksums("stages/entropy.py", REPO).splitlines()
    paths = [line.split("  ", 1)[1] for line in lines]
    assert paths[0] == "stages/entropy.py" and set(paths[1:]) == import_closure("stages/entropy.py", REPO)
    assert "src/tinyhelen/tokenizer.py" in paths and "src/tinyhelen/llm/client.py" not in paths
    digest, path = lines[1].split("  ", 1)
    assert digest == hashlib.sha256((REPO / path).read_bytes()).hexdigest()


def test_editing_a_module_changes_the_checksums_of_exactly_the_stages_that_import_it(tmp_path):
    from tinyhelen.pipeline import import_closure, write_code_checksums

    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    before = {Path(f).name: Path(f).read_text() for f in write_code_checksums(tmp_path / "a", tmp_path)}
    assert len(before) == len(list((REPO / "stages").glob("*.py")))
    module = tmp_path / "src/tinyhelen/tokenizer.py"
    module.write_text(module.read_text() + "# edited\n")
    after = {Path(f).name: Path(f).read_text() for f in write_code_checksums(tmp_path / "b", tmp_path)}
    changed = {name.removesuffix(".sha256") for name in before if before[name] != after[name]}
    importers = {s.stem for s in (REPO / "stages").glob("*.py")
                 if "src/tinyhelen/tokenizer.py" in import_closure(s.relative_to(REPO), REPO)}
    assert changed == importers
    assert {"tokenizer", "entropy", "glue"} <= changed and not {"prepare", "judge"} & changed


def test_a_section_default_is_part_of_the_report_stages_code(tmp_path):
    """The report card compares the params in effect with every section's defaults, which it loads through
    the params registry (``importlib``, no import statement): the registry's module names count as imports,
    so editing a default (here ``glue.epochs``, in a module no import statement of the report reaches)
    changes the report stage's code checksums and `dvc repro` reruns the report."""
    from tinyhelen.params import SECTIONS
    from tinyhelen.pipeline import import_closure, write_code_checksums

    closure = import_closure("stages/report.py", REPO)
    for section, target in SECTIONS.items():
        module = "src/" + target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in closure or f"{module}/__init__.py" in closure, section
    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    before = {Path(f).name: Path(f).read_text() for f in write_code_checksums(tmp_path / "a", tmp_path)}
    module = tmp_path / "src/tinyhelen/exp1/glue.py"
    text = module.read_text()
    assert 'CPU_EPOCHS = {"cola": 4, "stsb": 4}' in text
    module.write_text(text.replace('CPU_EPOCHS = {"cola": 4, "stsb": 4}', 'CPU_EPOCHS = {"cola": 5, "stsb": 4}'))
    after = {Path(f).name: Path(f).read_text() for f in write_code_checksums(tmp_path / "b", tmp_path)}
    changed = {name.removesuffix(".sha256") for name in before if before[name] != after[name]}
    assert "report" in changed and "glue" in changed and not {"entropy", "prepare", "judge"} & changed


def test_a_missing_code_dep_is_caught(tmp_path):
    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    text = (REPO / "dvc.yaml").read_text()
    # drop the entropy stage's code checksums from its deps only
    head, rest = text.split("\n  entropy:\n", 1)
    body, tail = rest.split("\n\n", 1)
    line = re.search(r"^ *- data/code/entropy.sha256\n", body + "\n", re.M)
    assert line is not None
    (tmp_path / "dvc.yaml").write_text(head + "\n  entropy:\n" + (body + "\n").replace(line.group(0), "", 1)
                                       + "\n" + tail)
    bad = _problems(tmp_path)
    assert list(bad) == ["entropy"]
    declared, expected = bad["entropy"]
    assert set(expected) - set(declared) == {"data/code/entropy.sha256"}
    from tinyhelen.pipeline import write_code_deps

    assert write_code_deps(tmp_path) == ["entropy"] and _problems(tmp_path) == {}


def test_no_import_cycles_in_the_library():
    """The module graph of src/tinyhelen (module-level and lazy imports alike) has no cycle."""
    import graphlib

    from tinyhelen.pipeline import module_graph

    graph = module_graph(REPO)
    assert len(graph) > 30
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def _missing_module_attributes(path: Path) -> list[str]:
    """`module.name` uses in one file (stage script or library module) where `module` is a tinyhelen module
    bound by `from tinyhelen[.pkg] import module` or `import tinyhelen.x as module` and has no `name`."""
    import ast
    import importlib

    tree = ast.parse(path.read_text(), filename=str(path))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tinyhelen"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                try:
                    importlib.import_module(full)
                except ModuleNotFoundError:
                    continue                     # a function or class, not a submodule
                bound[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tinyhelen") and a.asname:
                    bound[a.asname] = a.name
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            module = importlib.import_module(bound[node.value.id])
            if not hasattr(module, node.attr):
                missing.append(f"{path.name}:{node.lineno}: {bound[node.value.id]} has no "
                               f"{node.attr!r}")
    return missing


def test_every_module_attribute_a_stage_or_library_module_uses_exists(tmp_path):
    """A moved class or function (`judge.Exp2Config` after the config moved to `tinyhelen.exp2.config`) fails
    here, not hours into `dvc repro` when the stage that uses it finally runs."""
    files = sorted((REPO / "stages").glob("*.py")) + sorted((REPO / "src" / "tinyhelen").rglob("*.py"))
    assert len(files) > 40
    assert [m for f in files for m in _missing_module_attributes(f)] == []
    broken = tmp_path / "judge_stage.py"
    broken.write_text("from tinyhelen.exp2 import judge\n\ncfg = judge.Exp2Config\n")
    assert _missing_module_attributes(broken) == ["judge_stage.py:3: tinyhelen.exp2.judge has no 'Exp2Config'"]


def _tracked_inside_outputs(cached: bool | None = None) -> dict[str, str]:
    """git-tracked file -> the stage output (cached or not; None: either) that is it or holds it."""
    from dvc.repo import Repo

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.split()
    with Repo(str(REPO)) as repo:
        outs = {str(o.def_path).rstrip("/") for st in repo.index.stages for o in st.outs
                if cached is None or o.use_cache == cached}
    return {f: o for o in outs for f in tracked if f == o or f.startswith(o + "/")}


def test_no_cached_output_holds_a_file_tracked_by_git():
    """DVC refuses to run a stage whose cached output (a file or a directory) git already tracks, e.g. a
    .gitignore left inside a folder that has become one directory output."""
    bad = _tracked_inside_outputs(cached=True)
    assert bad == {}, "git-tracked files inside DVC outputs (git rm --cached them)"


def test_the_lock_file_holds_only_stages_that_dvc_yaml_defines(tmp_path):
    """Every dvc command parses the whole dvc.lock: entries of renamed or folded stages (DVC keeps them)
    slow every no-op `dvc repro`. The committed lock has none, and `pipeline lock --prune` removes them and
    their outputs left in the workspace (one inside a directory a stage depends on changes its hash), but
    never a path that a current stage declares."""
    from tinyhelen.pipeline import prune_lock, stale_lock_entries

    assert stale_lock_entries(REPO) == []
    for rel in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(REPO / rel, tmp_path / rel)
    (tmp_path / ".dvc").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    kept = dict(lock["stages"])
    stale_run = "data/curriculum/runs/lmloss-s9"  # a seed the matrix no longer runs
    lock["stages"]["simplify@web"] = {"cmd": "python stages/simplify.py web",  # a stage that was folded
                                      "outs": [{"path": "data/leaner/genres"}, {"path": "reports/simplify/web.json"}]}
    lock["stages"]["exp3_train@lmloss-9"] = {"cmd": "python stages/exp3_train.py",
                                             "outs": [{"path": stale_run}, {"path": "reports/gone.json"}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    for rel in (f"{stale_run}/final/model.safetensors", "data/leaner/genres/web.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "reports/simplify").mkdir(parents=True)
    (tmp_path / "reports/simplify/web.json").write_text("{}")
    assert stale_lock_entries(tmp_path) == ["simplify@web", "exp3_train@lmloss-9"]
    assert prune_lock(tmp_path) == {"simplify@web": [], "exp3_train@lmloss-9": [stale_run]}
    assert stale_lock_entries(tmp_path) == []
    assert yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"] == kept
    assert not (tmp_path / stale_run).exists()
    # outputs (or parents/children of outputs) of current stages stay
    assert (tmp_path / "data/leaner/genres/web.jsonl").exists() and (tmp_path / "reports/simplify/web.json").exists()


def test_dvc_reads_yaml_with_the_c_parser():
    """DVC parses params.yaml once per stage and dvc.lock twice per command. ruamel.yaml only requires its C
    extension below Python 3.11; without it (requirements.txt pins it) every parse is ~5x slower and a no-op
    `dvc repro` takes about twice as long (benchmarks/bench_noop_repro.py)."""
    import ruamel.yaml.main

    assert ruamel.yaml.main.CParser is not None, "pip install -r requirements.txt (ruamel.yaml.clib)"


WALL_CLOCK_KEY = re.compile(r"^seconds$|_seconds$|^wall|_per_s$|^mfu$|^started$")


def _keys(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}", k
            yield from _keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _keys(v, f"{path}[{i}]")


def test_committed_stage_outputs_hold_no_wall_clock_figures():
    """Stage outputs kept in git (metrics, tables, detail files) must be the same for the same params, or
    every rerun shows up in `git diff` / `dvc metrics diff` and changes the hash downstream stages see.
    Wall time and throughput go to reports/timings (tinyhelen.timing)."""
    files = [f for f in _tracked_inside_outputs(cached=False) if f.endswith(".json")]
    assert len(files) > 50
    bad = [f"{f}: {path}" for f in files for path, key in _keys(json.loads((REPO / f).read_text()))
           if WALL_CLOCK_KEY.search(key)]
    assert bad == []


def test_every_committed_report_is_written_by_a_stage():
    """A file under reports/ that no stage of dvc.yaml declares (itself or a directory holding it) is left over
    from a renamed or removed output: stale, and never rewritten by `dvc repro`."""
    tracked = subprocess.run(["git", "ls-files", "reports"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.split()
    inside = _tracked_inside_outputs()
    assert len(tracked) > 50
    assert [f for f in tracked if f not in inside] == []
