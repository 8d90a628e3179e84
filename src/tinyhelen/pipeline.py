"""What DVC will rerun, and whether ``dvc.yaml`` declares every stage's code.

* ``stages_affected_by`` (``python -m tinyhelen.pipeline affected glue.lr``): the stage graph of
  ``dvc.yaml`` seen through DVC's own API; tests pin the pipeline's semantics with it ("changing ``glue.lr``
  reruns only the GLUE stages").
* ``write_code_checksums`` (the ``code`` stage, ``stages/code.py``): for every stage script, the file
  ``data/code/<script>.sha256`` lists (``sha256sum`` format) the sha256 of the script and of every module
  of its import closure inside ``src/tinyhelen`` (every module it can import, directly or through other
  modules, lazy imports inside functions included, ``TYPE_CHECKING``-only imports excluded). Dynamic loads
  count as imports: a string constant that names a module of the package (``"tinyhelen.exp1.config"`` or
  ``"tinyhelen.exp1.config:ModelsConfig"``, as the params registry ``tinyhelen.params`` and the
  architecture registry write them for ``importlib``) makes that module part of the closure. Each stage
  depends on its script and its own list, so editing a module reruns exactly the stages that can execute
  it, while ``dvc.yaml``/``dvc.lock`` carry two code entries per stage instead of ~25 (a no-op ``dvc
  repro`` reads, hashes and locks every dependency of every stage: fewer entries, faster no-op).
* ``code_deps`` (``python -m tinyhelen.pipeline deps [--write]``): checks that every stage declares exactly
  those two code deps; ``--write`` rewrites the code entries of each stage's ``deps`` in place (comments
  and other deps kept); without it, the differences are printed.
* ``stale_lock_entries`` (``python -m tinyhelen.pipeline lock [--prune]``): ``dvc.lock`` entries of stages
  that ``dvc.yaml`` no longer defines (DVC keeps them when a stage is renamed or folded into another).
  Every ``dvc`` command parses the whole lock file, so they slow every no-op ``dvc repro``; ``--prune``
  removes them, and their outputs still in the workspace (see ``prune_lock``).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "tinyhelen"
SRC = Path("src")
STAGES = Path("stages")
CODE_DIR = Path("data/code")  # the code stage's output: one <script>.sha256 per stage script
CODE_STAGE = "code"
_SCRIPT_RE = re.compile(r"\bpython3?\s+(stages/[\w/]+\.py)")
# a string constant naming a module of the package, optionally with an attribute: a target of importlib
_DYNAMIC_RE = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")


# ------------------------------------------------------------------------------------ import closure
def _module_file(module: str, root: Path) -> Path | None:
    """``tinyhelen.a.b`` -> ``src/tinyhelen/a/b.py`` or ``.../b/__init__.py`` (None: not a module of ours)."""
    base = root / SRC / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imported_names(path: Path, package: str | None) -> set[str]:
    """Absolute module names a file imports (candidates: ``from p import x`` yields ``p`` and ``p.x``), and
    the modules its string constants name for a dynamic import (``"tinyhelen.a.b:Name"`` yields
    ``tinyhelen.a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                if package is None:
                    continue
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DYNAMIC_RE.match(node.value):
            out.add(node.value.split(":")[0])
    return out


def import_closure(script: Path | str, root: Path | str = ".") -> set[str]:
    """Repo-relative paths of every ``src/tinyhelen`` file that ``script`` can import (packages'
    ``__init__.py`` included: importing ``tinyhelen.llm.client`` runs ``tinyhelen/__init__.py`` and
    ``tinyhelen/llm/__init__.py`` first)."""
    root = Path(root)
    todo: list[tuple[Path, str | None]] = [(root / script, None)]
    seen: set[Path] = set()
    while todo:
        path, package = todo.pop()
        for name in _imported_names(path, package):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the module and every enclosing package
                mod = ".".join(parts[:i])
                f = _module_file(mod, root)
                if f is None or f in seen:
                    continue
                seen.add(f)
                pkg = mod if f.name == "__init__.py" else ".".join(parts[: i - 1])
                todo.append((f, pkg))
    return {f.relative_to(root).as_posix() for f in seen}


def module_graph(root: Path | str = ".") -> dict[str, set[str]]:
    """Module -> the modules of ``src/tinyhelen`` it imports directly (enclosing packages' ``__init__`` not
    counted: an edge is an import statement, so a package importing its own submodules is no cycle)."""
    root = Path(root)
    graph: dict[str, set[str]] = {}
    for f in sorted((root / SRC / PACKAGE).rglob("*.py")):
        rel = f.relative_to(root / SRC).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        mod = ".".join(parts)
        pkg = mod if rel.name == "__init__" else ".".join(parts[:-1])
        deps = set()
        for name in _imported_names(f, pkg):
            if not name.startswith(PACKAGE + ".") or _module_file(name, root) is None:
                continue
            if name != mod and not mod.startswith(name + "."):
                deps.add(name)
        graph[mod] = deps
    return graph


# ------------------------------------------------------------------------------------ code checksums
def checksums_path(script: Path | str) -> str:
    """``stages/glue.py`` -> ``data/code/glue.sha256`` (the dependency a stage declares for its code)."""
    return (CODE_DIR / f"{Path(script).stem}.sha256").as_posix()


def code_checksums(script: Path | str, root: Path | str = ".") -> str:
    """``sha256sum``-format lines for ``script`` and its import closure (script first, then by path)."""
    root = Path(root)
    files = [Path(script).as_posix(), *sorted(import_closure(script, root))]
    return "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)


def write_code_checksums(out: Path | str = CODE_DIR, root: Path | str = ".") -> list[str]:
    """Write ``<out>/<script>.sha256`` for every ``stages/*.py``; returns the files written."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for script in sorted((root / STAGES).glob("*.py")):
        rel = script.relative_to(root)
        target = out / f"{rel.stem}.sha256"
        target.write_text(code_checksums(rel, root), encoding="utf-8")
        written.append(target.as_posix())
    return written


# ------------------------------------------------------------------------------------ dvc.yaml
def _load_dvc_yaml(path: Path):
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the file's own style: "- " indented under its key
    return yaml, yaml.load(path.read_text(encoding="utf-8"))


def _is_code_dep(dep: str, root: Path = Path(".")) -> bool:
    """A code checksums file, a Python file of ``stages/`` or ``src/tinyhelen``, or a package directory there
    (all replaced by the script and its checksums file)."""
    if dep.startswith(f"{CODE_DIR.as_posix()}/") and dep.endswith(".sha256"):
        return True
    if not (dep.startswith("stages/") or dep.startswith(f"{SRC}/{PACKAGE}/")):
        return False
    return dep.endswith(".py") or (root / dep / "__init__.py").is_file()


def _dep_name(entry) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else str(entry)


def code_deps(root: Path | str = ".") -> dict[str, tuple[list[str], list[str]]]:
    """stage definition name -> (declared code deps, expected code deps: its script and the script's
    checksums file), in ``dvc.yaml`` order. The ``code`` stage itself depends on the ``stages`` and
    ``src/tinyhelen`` directories and is not listed."""
    root = Path(root)
    _, doc = _load_dvc_yaml(root / "dvc.yaml")
    out: dict[str, tuple[list[str], list[str]]] = {}
    for name, st in (doc.get("stages") or {}).items():
        if name == CODE_STAGE:
            continue
        body = st.get("do", st)
        m = _SCRIPT_RE.search(str(body.get("cmd", "")))
        declared = [_dep_name(d) for d in (body.get("deps") or []) if _is_code_dep(_dep_name(d), root)]
        expected = [m.group(1), checksums_path(m.group(1))] if m else []
        out[name] = (declared, expected)
    return out


def write_code_deps(root: Path | str = ".") -> list[str]:
    """Rewrite every stage's code deps to its script + import closure. Returns the stages changed."""
    root = Path(root)
    yaml, doc = _load_dvc_yaml(root / "dvc.yaml")
    changed = []
    for name, (declared, expected) in code_deps(root).items():
        if declared == expected:
            continue
        body = doc["stages"][name].get("do", doc["stages"][name])
        deps = body.get("deps")
        if deps is None:
            body["deps"] = deps = []
        keep = [d for d in deps if not _is_code_dep(_dep_name(d), root)]
        deps.clear()
        deps.extend([*expected, *keep])
        changed.append(name)
    if changed:
        with open(root / "dvc.yaml", "w", encoding="utf-8") as fh:
            yaml.dump(doc, fh)
    return changed


# ------------------------------------------------------------------------------------ params -> stages
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


def stale_lock_entries(root: Path | str = ".") -> list[str]:
    """Names in ``dvc.lock`` of stages that ``dvc.yaml`` does not define (any more)."""
    return list(_stale_entries(root))


def _stale_entries(root: Path | str) -> dict[str, list[str]]:
    """Stale ``dvc.lock`` entries -> their outputs that are still in the workspace and that no stage of
    ``dvc.yaml`` declares (equal to, inside or around a current output)."""
    import yaml
    from dvc.repo import Repo

    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    with Repo(str(root)) as repo:  # names, not addressing: addressing is relative to the working directory
        dvc_yaml = lock.resolve().with_name("dvc.yaml")
        defined = {st.name for st in repo.index.stages if Path(st.dvcfile.path).resolve() == dvc_yaml}
        current = [str(o.def_path).rstrip("/") for st in repo.index.stages for o in st.outs]
    entries = yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"]

    def orphan(path: str) -> bool:
        path = path.rstrip("/")
        return (Path(root) / path).exists() and not any(
            path == c or path.startswith(c + "/") or c.startswith(path + "/") for c in current)

    return {name: [o["path"] for o in entry.get("outs", []) if orphan(o["path"])]
            for name, entry in entries.items() if name not in defined}


def prune_lock(root: Path | str = ".") -> dict[str, list[str]]:
    """Remove the stale entries from ``dvc.lock`` (written as DVC writes it) and their outputs from the
    workspace; returns ``{stage name: removed outputs}``.

    A stale output left in the workspace is not harmless: inside a directory that a current stage depends
    on (``data/curriculum/runs/<run>`` of a seed the matrix dropped), it changes that directory's hash, so
    the lock no longer matches a fresh clone. Cached outputs stay in the DVC cache and ``dvc.lock`` in git
    history names them; uncached ones (reports) are in git history."""
    import shutil

    from ruamel.yaml import YAML

    stale = _stale_entries(root)
    if stale:
        from tinyhelen.io import atomic_open

        path = Path(root) / "dvc.lock"
        yaml = YAML()
        yaml.width = 4096
        lock = yaml.load(path.read_text(encoding="utf-8"))
        for name in stale:
            del lock["stages"][name]
        with atomic_open(path) as fh:
            yaml.dump(lock, fh)
        for outs in stale.values():
            for out in outs:
                target = Path(root) / out
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    return stale


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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in ("affected", "deps", "lock") and not argv[0].startswith("-"):
        argv = ["affected", *argv]  # `python -m tinyhelen.pipeline glue.lr` keeps working
    p = argparse.ArgumentParser(prog="python -m tinyhelen.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("affected", help="stages a params change reruns")
    a.add_argument("keys", nargs="+")
    d = sub.add_parser("deps", help="check (or --write) every stage's code deps: its script and data/code/<script>.sha256")
    d.add_argument("--write", action="store_true")
    k = sub.add_parser("lock", help="list (or --prune) dvc.lock entries of stages dvc.yaml no longer defines, "
                                    "and their outputs")
    k.add_argument("--prune", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "lock":
        stale = prune_lock() if args.prune else _stale_entries(".")
        for name, outs in stale.items():
            print(f"dvc.lock: {name}: {'removed' if args.prune else 'no such stage in dvc.yaml'}")
            for out in outs:
                print(f"  {out}: {'removed' if args.prune else 'still in the workspace'}")
        return 1 if stale and not args.prune else 0
    if args.cmd == "affected":
        for name in sorted(stages_affected_by(args.keys)):
            print(name)
        return 0
    if args.write:
        for name in write_code_deps():
            print(f"dvc.yaml: {name}: code deps rewritten")
        return 0
    bad = 0
    for name, (declared, expected) in code_deps().items():
        missing, extra = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
        if missing or extra:
            bad += 1
            print(f"{name}: missing {missing or '-'}; not expected {extra or '-'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
