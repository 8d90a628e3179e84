"""EXP2's run files, as the judge stages write them (the typed result reads them: ``tinyhelen.exp2.result``):
``runs/exp2/inner.tsv`` (``judge_inner``: every checkpoint's judged inner-comparison answers) and
``runs/exp2/answers.tsv`` (``judge``: the selected checkpoints' judged Leaner-Eval answers), one row per answer
with every metric of the judge backend. The instruction-tuning curves (``runs/instruct/<recipe>.tsv``) are
training curves (``tinyhelen.runfiles.curve_rows``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyhelen import runfiles
from tinyhelen.exp2.judge import metrics_of

SCORE_KEYS = ["set", "recipe", "step", "qid", "bin"]  # the identifying columns of a scores run file


def write_scores(target: Path | str, kind: str, scores: list[dict[str, Any]], backend: str) -> Path:
    """A judge stage's run file: one row per judged answer (set, recipe, step, question, bin) with every
    metric of the backend."""
    metrics = list(metrics_of(backend))
    rows = [{k: s.get(k) for k in (*SCORE_KEYS, *metrics)} for s in scores]
    for r in rows:
        r["qid"] = None if r["qid"] is None else str(r["qid"])
    return runfiles.write(target, kind, {"backend": backend}, rows, [*SCORE_KEYS, *metrics])
