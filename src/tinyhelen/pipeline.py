"""What DVC will rerun: the stage graph of ``dvc.yaml`` seen through DVC's own API.

Used by tests that pin the pipeline's semantics ("changing ``glue.lr`` reruns only the GLUE stages") and
handy interactively::

    python -m tinyhelen.pipeline entropy.max_n curriculum
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path


def _covers(declared: str, changed: str) -> bool:
    return declared == changed or declared.startswith(changed + ".") or changed.startswith(declared + ".")


def stage_params(root: Path | str = ".") -> dict[str, set[str]]:
    """stage address (e.g. ``tokenizer@leaner``) -> params.yaml keys it declares."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out: dict[str, set[str]] = {}
        for st in repo.index.stages:
            keys: set[str] = set()
            for dep in st.deps:
                if dep.__class__.__name__ == "ParamsDependency":
                    keys.update(dep.params)
            out[st.addressing] = keys
        return out


def stages_affected_by(changed: Iterable[str], root: Path | str = ".") -> set[str]:
    """Stages that declare one of the ``changed`` params keys (or an enclosing section / a sub-key),
    plus every stage downstream of them: exactly what ``dvc repro`` would rerun for that change."""
    import networkx as nx
    from dvc.repo import Repo

    changed = list(changed)
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        hit = set()
        for st in repo.index.stages:
            for dep in st.deps:
                if dep.__class__.__name__ == "ParamsDependency" and any(
                        _covers(d, c) for d in dep.params for c in changed):
                    hit.add(st)
        affected = set(hit)
        for st in hit:
            affected |= nx.ancestors(graph, st)
        return {st.addressing for st in affected}


def main(argv: list[str] | None = None) -> int:
    keys = sys.argv[1:] if argv is None else argv
    for name in sorted(stages_affected_by(keys)):
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
