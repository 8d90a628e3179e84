"""EXP3: `dvc exp run -S curriculum=...` reruns only EXP3 stages.

Uses DVC's own view of the pipeline (``dvc.repo.Repo(...).index``): which stages declare a params
dependency that covers the key ``curriculum`` (the key itself, or the whole params file), and every stage
downstream of those in DVC's stage graph. Those are the stages a change of ``curriculum`` makes stale.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tinyhelen.pipeline import CODE_STAGE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index():
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    try:
        yield repo.index
    finally:
        repo.close()


def _reads_key(stage, key: str) -> bool:
    from dvc.dependency.param import ParamsDependency

    for dep in stage.deps:
        if isinstance(dep, ParamsDependency) and Path(dep.def_path).name == "params.yaml":
            keys = list(dep.params or [])
            if not keys or any(k == key or k.startswith(key + ".") for k in keys):
                return True
    return False


def _stale_after_change(index, key: str) -> set[str]:
    import networkx as nx

    graph = index.graph
    direct = [s for s in index.stages if _reads_key(s, key)]
    stale = set(direct)
    for s in direct:
        if s.addressing != CODE_STAGE:  # it validates all of params.yaml; its outputs (code checksums) stay the same
            stale |= nx.ancestors(graph, s)  # edges point from a stage to the stages it depends on
    return {s.addressing for s in stale}


def test_changing_curriculum_reruns_only_exp3(index):
    names = {s.addressing for s in index.stages}
    stale = _stale_after_change(index, "curriculum")
    assert "exp3_report" in stale  # the key is wired to the selected-strategy report
    # the report card depends on params.yaml as a whole by design, the code stage validates it; everything
    # else must be EXP3
    assert {n for n in stale if not n.startswith("exp3_")} <= {"report", "code"}
    assert not any(n.startswith("exp3_train@") or n == "exp3_difficulty" for n in stale)
    upstream = {n for n in names if n.split("@")[0] in {"prepare", "tokenizer", "entropy", "simplify",
                                                        "leaner_corpus", "leaner_glue", "leaner_eval"}}
    other_exps = {n for n in names if n.startswith(("exp1", "exp2", "pretrain", "finetune", "glue",
                                                    "instruct", "generate", "judge"))}
    assert upstream and not (upstream | other_exps) & stale


def test_exp3_matrix_covers_all_strategies_and_seeds(index):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = {s.addressing for s in index.stages}
    assert {"exp3_difficulty", "exp3_glue"} <= names  # one stage each, over every strategy (and seed)
    for strategy in params["exp3"]["strategies"]:
        for seed in params["exp3"]["seeds"]:
            assert f"exp3_train@{strategy}-{seed}" in names
    # each run depends on its own strategy's scores file only (a changed scorer reruns only its runs)
    train = {s.addressing: s for s in index.stages}["exp3_train@sentlen-0"]
    assert {d.def_path for d in train.deps} >= {"data/curriculum/difficulty/sentlen.jsonl"}
    assert not any(d.def_path.startswith("data/curriculum/difficulty/") and "sentlen" not in d.def_path
                   for d in train.deps)
    assert params["curriculum"] in params["exp3"]["strategies"]
    # the training stages do not read the selected strategy, the report does not read training internals
    train = next(s for s in index.stages if s.addressing.startswith("exp3_train@"))
    assert not _reads_key(train, "curriculum") and _reads_key(train, "exp3.train")
