"""Recompute every verdict of a reports directory from its run files alone, and fail on any difference.

``python -m tinyhelen.report verify [DIR ...]`` (default: every saved profile ``results/<profile>/`` and the
workspace's ``reports/``). For each directory:

1. rebuild every experiment's typed result from ``DIR/runs/`` and the params the run used (``DIR/params.yaml``
   for a saved profile, the workspace's ``params.yaml`` for ``reports/``) with the same function the report
   stage used (``BUILDERS``);
2. compare it with ``DIR/results/<name>.json`` and its metrics ``DIR/<name>.json``, figure by figure;
3. decide every claim on the rebuilt results (``tinyhelen.report.card.collect``) and compare the verdicts and
   numbers with ``DIR/summary.json``.

Every difference is reported with the claims it touches and the file and figure it is in, e.g.
``EXP1 claims exp1_leaner_beats_ori, exp1_llama_best: results/exp1.json cells[llama/leaner/mrpc].test is 0.75,
recomputed 0.5``. Nothing is written.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyhelen import runfiles
from tinyhelen.results import RESULTS_DIR

SUMMARY = "summary.json"
IDS = ("setting", "arch", "init", "side", "task", "recipe", "strategy", "seed", "step")  # what names a list item


def builders() -> dict[str, Callable[[Path, Path], Any]]:
    """Each experiment's typed result from ``(runs directory, params file)``: the functions its report stage
    calls."""
    from tinyhelen.entropy.result import from_runs as entropy
    from tinyhelen.exp1.result import from_runs as exp1
    from tinyhelen.exp2.result import from_runs as exp2
    from tinyhelen.exp3.rebuild import from_runs as exp3

    return {"entropy": entropy, "exp1": exp1, "exp2": exp2, "exp3": exp3}


@dataclass
class Report:
    directory: Path
    run_files: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        if self.ok:
            return f"{self.directory}: every result, figure and verdict recomputed from {self.run_files} run files"
        return "\n".join([f"{self.directory}: {len(self.problems)} problem(s): not recomputable from its run files"]
                         + [f"  - {p}" for p in self.problems])


# ------------------------------------------------------------------------------------ comparing
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _label(i: int, item: Any) -> str:
    if isinstance(item, dict):
        ids = [str(item[k]) for k in IDS if k in item and not isinstance(item[k], (dict, list))]
        if ids:
            return "/".join(ids)
    return str(i)


def differences(stored: Any, rebuilt: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """``(path, stored, rebuilt)`` for every figure that differs (list items named by their identifying keys)."""
    if isinstance(stored, dict) and isinstance(rebuilt, dict):
        out = []
        for k in list(stored) + [k for k in rebuilt if k not in stored]:
            sub = f"{where}.{k}" if where else str(k)
            if k not in stored or k not in rebuilt:
                out.append((sub, stored.get(k, "absent"), rebuilt.get(k, "absent")))
            else:
                out += differences(stored[k], rebuilt[k], sub)
        return out
    if isinstance(stored, list) and isinstance(rebuilt, list) and len(stored) == len(rebuilt):
        return [d for i, (a, b) in enumerate(zip(stored, rebuilt))
                for d in differences(a, b, f"{where}[{_label(i, a)}]")]
    return [] if _same(stored, rebuilt) else [(where or "(whole file)", stored, rebuilt)]


def _load(path: Path) -> tuple[Any, str | None]:
    if not path.exists():
        return None, f"{path.name} absent"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except json.JSONDecodeError as exc:
        return None, f"{path.name}:{exc.lineno}: malformed JSON ({exc.msg})"


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


def _diff_lines(prefix: str, stored: Any, rebuilt: Any, limit: int = 5) -> list[str]:
    diffs = differences(stored, rebuilt)
    out = [f"{prefix} {path} is {_short(a)}, recomputed {_short(b)}" for path, a, b in diffs[:limit]]
    if len(diffs) > limit:
        out.append(f"{prefix} ... and {len(diffs) - limit} more figure(s)")
    return out


# ------------------------------------------------------------------------------------ one directory
def locate(directory: Path | str) -> tuple[Path, Path, Path]:
    """``(root, reports, params)`` of a reports directory: a saved profile has its own ``params.yaml``; the
    workspace's ``reports/`` uses the ``params.yaml`` beside it."""
    d = Path(directory)
    own = d / "params.yaml"
    params = own if own.exists() else d.parent / "params.yaml"
    return d.parent, d, params


def verify(directory: Path | str) -> Report:
    """Rebuild, recompute and compare one reports directory (module docstring)."""
    from tinyhelen.config import load_section
    from tinyhelen.report.card import RESULTS, collect, summary
    from tinyhelen.report.claims import ReportConfig

    root, reports, params = locate(directory)
    runs = reports / runfiles.RUNS_DIR
    n_files = len(list(runs.rglob(f"*{runfiles.SUFFIX}"))) if runs.is_dir() else 0
    if not n_files:
        return Report(reports, 0, [f"no run files in {runs}: its verdicts cannot be recomputed (saved before the "
                                   "stages wrote run files; rerun the pipeline)"])
    problems: list[str] = []
    rebuilt: dict[str, tuple[Any, str | None]] = {}
    for name, build in builders().items():
        try:
            rebuilt[name] = (build(runs, params), None)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a run file without a column it needs: KeyError
            rebuilt[name] = (None, f"cannot be rebuilt from {runs.name}/: {type(exc).__name__}: {exc}")
    cfg = load_section("report", ReportConfig, params)
    ctx = collect(root, params.resolve(), cfg, reports.name, results=rebuilt)
    claims = {name: [c.id for c in ctx["claims"] if c.experiment.lower() == name] for name in RESULTS}
    for name, (res, problem) in rebuilt.items():
        touches = f"{name} claims {', '.join(claims[name]) or '(none)'}:"
        if problem:
            problems.append(f"{touches} {RESULTS[name].name} {problem}")
            continue
        fresh = json.loads(json.dumps(res.model_dump(mode="json")))
        for label, path, value in ((f"{RESULTS_DIR}/{name}.json", RESULTS[name].file(reports), fresh),
                                   (f"{name}.json", reports / f"{name}.json", json.loads(json.dumps(res.metrics())))):
            stored, bad = _load(path)
            problems += [f"{touches} {bad}"] if bad else _diff_lines(f"{touches} {label}", stored, value)
    stored, bad = _load(reports / SUMMARY)
    fresh = json.loads(json.dumps(summary(ctx)))
    if bad:
        problems.append(f"{SUMMARY}: {bad}")
    else:
        claims_stored = stored.get("claims") if isinstance(stored, dict) else None
        claims_stored = claims_stored if isinstance(claims_stored, dict) else {}
        for cid in list(claims_stored) + [c for c in fresh["claims"] if c not in claims_stored]:
            problems += _diff_lines(f"claim {cid}: {SUMMARY}", claims_stored.get(cid, "absent"),
                                    fresh["claims"].get(cid, "absent"))
        rest = ({k: v for k, v in (stored if isinstance(stored, dict) else {}).items() if k != "claims"},
                {k: v for k, v in fresh.items() if k != "claims"})
        problems += _diff_lines(f"{SUMMARY}:", *rest)
    return Report(reports, n_files, problems)


def targets(root: Path | str = ".") -> list[Path]:
    """The default directories: every saved profile (``results/<profile>/`` with a summary) and ``reports/``."""
    from tinyhelen.profiles import RESULTS_DIR as PROFILES

    root = Path(root)
    saved = sorted(p.parent for p in (root / PROFILES).glob(f"*/{SUMMARY}"))
    return saved + ([root / "reports"] if (root / "reports" / SUMMARY).exists() else [])


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tinyhelen.report verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directories", nargs="*", help="results/<profile> or reports (default: all of them)")
    args = p.parse_args(argv)
    dirs = [Path(d) for d in args.directories] or targets()
    if not dirs:
        print("nothing to verify: no results/<profile>/summary.json and no reports/summary.json")
        return 1
    reports = [verify(d) for d in dirs]
    for r in reports:
        print(r.text())
    return 0 if all(r.ok for r in reports) else 1
