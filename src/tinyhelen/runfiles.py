"""Run files: the raw evidence every verdict is recomputed from, one small text file per training run (or per
set of runs), committed with the reports and copied into each saved profile (``results/<profile>/runs/``).

A run file is a TSV with a header of ``# key: <JSON value>`` lines (``kind`` first, then what the run is:
architecture, corpus side, sizes) and one row per evaluation (training curves) or per scored item::

    # kind: "curve"
    # arch: "llama"
    step	tokens	unique_tokens	lr	train_loss	val_loss
    0	0	0	0.0001666666667		7.63218
    32	65536	65536	0.0008	6.3	6.35381

Cells: empty = no value; integers as integers; floats with 12 significant digits (the same value gives the same
text on every machine: no wall-clock figure is ever in a run file). Column types are declared once
(``STR_COLUMNS``, ``INT_COLUMNS``; every other column is a float), so a bad cell fails with its file and line.

``LAYOUT`` says where each kind of run file lives under a runs directory (``reports/runs/`` in the workspace,
``results/<profile>/runs/`` in a saved profile); the stages' paths in ``dvc.yaml`` follow it (a test checks).
Each experiment's typed result is built from these files alone (``tinyhelen.<exp>.result.from_runs``), by the
report stage and by ``python -m tinyhelen.report verify``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyhelen.io import InputError, atomic_open

RUNS_DIR = "runs"  # inside a reports directory or a saved profile
SUFFIX = ".tsv"

# where each kind of run lives under a runs directory (dvc.yaml writes exactly these paths)
LAYOUT = {
    "entropy": "entropy.tsv",
    "pretrain": "pretrain/{arch}-{side}.tsv",
    "glue": "glue/{arch}-{init}.tsv",
    "instruct": "instruct/{recipe}.tsv",
    "exp2_inner": "exp2/inner.tsv",
    "exp2_answers": "exp2/answers.tsv",
    "exp3": "exp3/{strategy}-s{seed}.tsv",
    "exp3_reference_lm": "exp3/reference_lm.tsv",
    "exp3_glue": "exp3/glue/{name}-s{seed}.tsv",
}

# names that say a figure is wall-clock (never in a run file: the same params give the same file)
WALL_CLOCK = re.compile(r"(^|_)(seconds|wall|mfu|time|timestamp|started|host)(_|$)|per_s$")
STR_COLUMNS = frozenset({"task", "setting", "scope", "side", "figure", "recipe", "qid", "bin", "set"})
INT_COLUMNS = frozenset({"step", "tokens", "unique_tokens", "seed", "epoch", "pool_units", "pool_tokens",
                         "checkpoint"})
# the curve of a training run, per evaluation (a run adds what it has: pool figures, per-genre losses)
CURVE = ("step", "tokens", "unique_tokens", "pool_share", "lr", "train_loss", "val_loss")


def path(runs: Path | str, kind: str, **names: Any) -> Path:
    """The run file of ``kind`` (``LAYOUT``) for ``names`` under the runs directory ``runs``."""
    return Path(runs) / LAYOUT[kind].format(**names)


def root_of(target: Path | str, kind: str, **names: Any) -> Path:
    """The runs directory a run file of ``kind`` at ``target`` lies in (``target`` must follow ``LAYOUT``)."""
    rel = LAYOUT[kind].format(**names)
    text = Path(target).as_posix()
    if text != rel and not text.endswith("/" + rel):
        raise ValueError(f"{target}: a {kind} run file must be <runs>/{rel} (tinyhelen.runfiles.LAYOUT)")
    return Path(text[:-len(rel)] or ".")


@dataclass(frozen=True)
class RunFile:
    """One run file: its ``kind``, header (``meta``), columns and rows (cells typed, None = empty)."""

    path: Path
    kind: str
    meta: dict[str, Any]
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]

    def need(self, *keys: str) -> None:
        """Fail (naming the file) unless every key is in the header."""
        missing = [k for k in keys if k not in self.meta]
        if missing:
            raise InputError(self.path, f"header lacks {missing} (a run file of kind {self.kind!r})")


# ----------------------------------------------------------------------------------------- writing
def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        raise ValueError(f"a run file holds numbers and names, not booleans ({v!r})")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(v, ".12g") if math.isfinite(v) else str(v)
    text = str(v)
    if "\t" in text or "\n" in text:
        raise ValueError(f"a run file cell cannot hold a tab or newline ({text!r})")
    return text


def write(target: Path | str, kind: str, meta: Mapping[str, Any], rows: Iterable[Mapping[str, Any]],
          columns: Sequence[str]) -> Path:
    """Write a run file atomically; every row's keys must be among ``columns``; no column or header key may
    name a wall-clock figure (``WALL_CLOCK``)."""
    columns = list(columns)
    clocks = [k for k in [*columns, *meta] if WALL_CLOCK.search(k)]
    if clocks:
        raise ValueError(f"{target}: wall-clock figures {clocks} do not go into a run file (tinyhelen.timing)")
    with atomic_open(target) as fh:
        fh.write(f"# kind: {json.dumps(kind)}\n")
        for k, v in meta.items():
            fh.write(f"# {k}: {json.dumps(v, sort_keys=True, ensure_ascii=False)}\n")
        fh.write("\t".join(columns) + "\n")
        for row in rows:
            extra = set(row) - set(columns)
            if extra:
                raise ValueError(f"{target}: row has columns {sorted(extra)} not in {columns}")
            fh.write("\t".join(cell(row.get(c)) for c in columns) + "\n")
    return Path(target)


def curve_rows(history: Sequence[Mapping[str, Any]], rename: Mapping[str, str] | None = None,
               **constant: Any) -> list[dict[str, Any]]:
    """The evaluation rows of a training loop's history (those with a validation loss, and the last row),
    with ``rename`` applied to column names (e.g. ``pool_fraction`` -> ``pool_share``) and ``constant``
    columns added (e.g. the peak learning rate of a sweep)."""
    rename = dict(rename or {})
    out = []
    for i, r in enumerate(history):
        if r.get("val_loss") is None and i != len(history) - 1:
            continue
        out.append({**constant, **{rename.get(k, k): v for k, v in r.items()}})
    return out


def curve_columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """``first``, then the standard ``CURVE`` columns, then every other column the rows have (in order of
    appearance); a standard column no row has is left out."""
    seen = list(dict.fromkeys(k for r in rows for k in r))
    std = [c for c in CURVE if c in seen]
    return [*first, *std, *[c for c in seen if c not in std and c not in first]]


# ----------------------------------------------------------------------------------------- reading
def _typed(col: str, text: str, where: Path, line: int) -> Any:
    if text == "":
        return None
    if col in STR_COLUMNS:
        return text
    try:
        return int(text) if col in INT_COLUMNS else float(text)
    except ValueError:
        want = "an integer" if col in INT_COLUMNS else "a number"
        raise InputError(where, f"column {col!r}: {text!r} is not {want}", line) from None


_READ: ContextVar[dict[Path, str] | None] = ContextVar("run_files_read", default=None)


@contextlib.contextmanager
def recording(runs: Path | str) -> Iterator[dict[str, str]]:
    """Collect the sha256 of every run file read inside the block, by path relative to ``runs`` (a typed result
    keeps them as ``run_files``: an edit of any number of its run files is then seen, even one that changes no
    figure)."""
    out: dict[str, str] = {}
    token = _READ.set({})
    try:
        yield out
        root = Path(runs).resolve()
        for p, digest in sorted(_READ.get().items()):
            out[p.resolve().relative_to(root).as_posix()] = digest
    finally:
        _READ.reset(token)


def built_from(build: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a ``from_runs(runs, ...)`` builder: its typed result keeps the digests of the run files it read
    (``run_files``)."""

    @functools.wraps(build)
    def wrapper(runs: Path | str, *args: Any, **kwargs: Any) -> Any:
        with recording(runs) as files:
            res = build(runs, *args, **kwargs)
        return res.model_copy(update={"run_files": files})
    return wrapper


def read(target: Path | str, kind: str | None = None) -> RunFile:
    """Read a run file (of ``kind``, when given); a malformed line fails naming the file and line."""
    target = Path(target)
    if not target.is_file():
        raise InputError(target, "run file not found (run the stage that writes it)")
    data = target.read_bytes()
    if (seen := _READ.get()) is not None:
        seen[target] = hashlib.sha256(data).hexdigest()
    meta: dict[str, Any] = {}
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if columns is None and line.startswith("#"):
            key, sep, value = line[1:].strip().partition(":")
            try:
                if not sep:
                    raise ValueError("no ':'")
                meta[key.strip()] = json.loads(value)
            except ValueError as exc:
                raise InputError(target, f"header line is not '# key: <JSON>' ({exc})", n) from None
            continue
        if columns is None:
            columns = line.split("\t")
            if len(set(columns)) != len(columns) or "" in columns:
                raise InputError(target, f"bad column names {columns}", n)
            continue
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise InputError(target, f"{len(cells)} cells for {len(columns)} columns", n)
        rows.append({c: _typed(c, x, target, n) for c, x in zip(columns, cells)})
    found = meta.pop("kind", None)
    if columns is None or found is None:
        raise InputError(target, "not a run file (no '# kind:' header or no column line)")
    if kind is not None and found != kind:
        raise InputError(target, f"a run file of kind {found!r}, expected {kind!r}")
    return RunFile(target, found, meta, columns, rows)


def read_kind(runs: Path | str, kind: str, **names: Any) -> RunFile:
    """``read(path(runs, kind, **names), kind)``."""
    return read(path(runs, kind, **names), kind)
