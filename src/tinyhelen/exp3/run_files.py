"""EXP3's run files, as the training stages write them (the typed result reads them: ``tinyhelen.exp3.result``,
``from_runs``). Imports nothing but the run-file format, so that editing the report never reruns a training stage.

* ``runs/exp3/<strategy>-s<seed>.tsv`` (written by ``exp3_train``): the proxy's curve per evaluation (step,
  tokens, unique pool tokens seen, pool share, units and tokens in the pool, lr, train and validation loss);
  the header has the pool's size, the proxy's non-embedding parameters and the number of expansions;
* ``runs/exp3/reference_lm.tsv`` (written by ``exp3_reference_lm``): the reference LM's curve;
* ``runs/exp3/glue/<name>-s<seed>.tsv`` (written by ``exp3_glue``): Leaner-GLUE of each proxy checkpoint, a row
  per checkpoint x task x lr x fine-tuning seed x epoch (EXP1's GLUE run-file columns plus ``checkpoint``).

``tinyhelen.exp3.result.from_runs`` turns them back into what ``build`` takes (the curve under its own column
names, the summary figures from the curve): the report stage and ``verify`` build the same result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyhelen import runfiles
from tinyhelen.io import InputError

# the EXP3 curve's own column names -> the run files' standard ones
RENAME = {"seen_tokens": "unique_tokens", "pool_fraction": "pool_share"}
BACK = {v: k for k, v in RENAME.items()}


def write_run(target: Path | str, curve: list[dict[str, Any]], summary: dict[str, Any],
              non_embedding_params: int | None, **meta: Any) -> Path:
    """The run file of one proxy run (``exp3_train``) from its curve and summary."""
    rows = runfiles.curve_rows(curve, RENAME)
    head = {**meta, "pool_units_total": summary.get("total_units"), "pool_tokens_total": summary.get("total_tokens"),
            "expansions": summary.get("expansions"), "non_embedding_params": non_embedding_params}
    return runfiles.write(target, "exp3", head, rows, runfiles.curve_columns(rows))


def read_curve(path: Path) -> list[dict[str, Any]]:
    """``exp3_train``'s own ``curve.tsv`` (every figure a float; empty cells None)."""
    if not path.exists():
        raise InputError(path, "file not found (run the exp3_train stages)")
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    rows = []
    for ln, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != len(head):
            raise InputError(path, f"{len(cells)} cells for {len(head)} columns", ln)
        rows.append({k: (float(v) if v != "" else None) for k, v in zip(head, cells)})
    return rows
