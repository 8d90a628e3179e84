"""The base of the experiments' typed results: the declared schema each report step writes and the report card
reads. Each experiment defines its result next to its code (``tinyhelen.entropy.result.EntropyResult``,
``tinyhelen.exp1.result.Exp1Result``, ``tinyhelen.exp2.result.Exp2Result``, ``tinyhelen.exp3.result.Exp3Result``);
its report stage builds it, which validates it, and ``write`` puts it in two files (paths from ``dvc.yaml``):

* ``reports/results/<name>.json`` (a plain DVC output): the typed result, with the per-seed, per-task and
  per-run detail the report card's intervals need;
* ``reports/<name>.json`` (DVC metrics): ``result.metrics()``, the few figures a reviewer compares across
  experiments. No wall-clock figure is in either (those go to ``tinyhelen.timing.record``).

The report card reads these results (``read``) plus two kinds of upstream inputs
(``tinyhelen.report.provenance``). A result that is absent or does not validate is reported by ``read`` as a
problem string, never raised: the report still renders.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tinyhelen.io import write_json

RESULTS_DIR = "results"  # inside the reports directory: <reports>/results/<name>.json


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(Schema):
    """Base of the typed experiment results (``name``: the experiment, the file name the card reads).
    ``run_files``: the sha256 of every run file the result was built from (path relative to the runs
    directory; ``tinyhelen.runfiles.recording``)."""

    name: ClassVar[str]
    run_files: dict[str, str] = {}

    @classmethod
    def file(cls, reports: Path | str) -> Path:
        """Where the card reads this result: ``<reports>/results/<name>.json``."""
        return Path(reports) / RESULTS_DIR / f"{cls.name}.json"

    def metrics(self) -> dict[str, Any]:  # pragma: no cover - every result defines it
        raise NotImplementedError


R = TypeVar("R", bound=BaseModel)


def rounded(x: float | None, nd: int = 5) -> float | None:
    return None if x is None else round(float(x), nd)


def mean_or_none(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def write(result: Result, path: Path | str, metrics_path: Path | str) -> None:
    """Write the typed result to ``path`` and its metrics (``result.metrics()``) to ``metrics_path``, both
    atomically."""
    write_json(path, result.model_dump(mode="json"))
    write_json(metrics_path, result.metrics())


def write_report(result: Result, path: Path | str, metrics_path: Path | str, md_path: Path | str,
                 document: str) -> None:
    """``write`` plus the experiment's tables (``document``, rendered from ``result``) to ``md_path``."""
    from tinyhelen.io import atomic_open

    write(result, path, metrics_path)
    with atomic_open(md_path) as fh:
        fh.write(document)


def read(model: type[R], path: Path | str, name: str | None = None) -> tuple[R | None, str | None]:
    """``(result, None)``, or ``(None, problem)`` when the file is absent, malformed or off-schema; the
    problem names the file (as ``name``, default the path) and, for JSON errors, the line."""
    path = Path(path)
    name = name or str(path)
    if not path.exists():
        return None, f"{name} absent"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return None, f"{name}:{exc.lineno}: malformed JSON ({exc.msg})"
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return None, f"{name}: not a valid {model.__name__}: {where}: {first['msg']}{more}"
