"""Step-wise training metrics through DVCLive.

``TrainLog(dir)`` writes DVCLive's layout: ``<dir>/plots/metrics/<name>.tsv`` (one ``step, value`` row per
logged step of every figure: DVC plots, ``x: step``) and ``<dir>/metrics.json`` (the latest train and
validation loss and the step: a DVC metrics file, so ``dvc exp show`` lists each run's losses; the other
figures are plots only, to keep ``dvc metrics diff`` short). The stage's
``dvc.yaml`` entry declares both (``dvcyaml=False``: DVCLive does not edit ``dvc.yaml``).

Only deterministic figures are logged (losses, learning rate, a callback's figures such as the curriculum
pool): the files are git-tracked and the same params give byte-identical files. Wall-clock figures
(tokens/s, MFU) never go here; the loop returns them and the stage records them with
``tinyhelen.timing.record`` (``reports/timings/<stage>.json``, git-ignored).

A resumed run starts a fresh log and replays the history saved in its checkpoint, so an interrupted and
resumed run writes exactly the files of an uninterrupted one. ``TrainLog`` is a callback of the training loop
(``tinyhelen.train.loop``), called on the main process only.

The log is written step by step to a temporary sibling of ``dir`` (``tinyhelen.io.atomic_path``: named after
the process, git- and DVC-ignored) and replaces ``dir`` as a whole when the run ends. A failed, interrupted
or killed run leaves the previous complete log in place (the stage's outputs persist in ``dvc.yaml``; the
next run removes the temporary log of a dead process). The cost: ``dvc exp show`` does not follow a running
experiment's losses; ``dvc queue logs <exp>`` and the stage's own log lines do.
"""
from __future__ import annotations

import contextlib
import numbers
from pathlib import Path
from typing import Any

from tinyhelen.io import atomic_path
from tinyhelen.train.loop import Callback

NOT_LOGGED = frozenset({"step", "tokens"})  # the x axis, and a figure that is step x batch x length
SUMMARY = ("train_loss", "val_loss")  # figures in metrics.json (the others: plots only)


class TrainLog(Callback):
    """DVCLive log of one training run's history rows (``{"step": ..., "train_loss": ..., ...}``): a callback of
    the loop, on the main process only. A resumed run starts a fresh log and replays the rows so far."""

    main_process_only = True

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.live = None
        self._commit = contextlib.ExitStack()  # the open atomic_path of the log: closing it moves the log into place

    def on_start(self, model: Any, resumed: bool, history: list[dict[str, Any]]) -> None:
        from dvclive import Live

        tmp = self._commit.enter_context(atomic_path(self.directory))
        self.live = Live(dir=str(tmp), dvcyaml=False, save_dvc_exp=False, report=None)
        for r in history:
            self.on_row(r)

    def on_row(self, row: dict[str, Any]) -> None:
        """Log every numeric figure of a history row at its step (None values are skipped)."""
        self.live.step = int(row["step"])
        for key, val in row.items():
            if key in NOT_LOGGED or val is None or isinstance(val, bool) or not isinstance(val, numbers.Number):
                continue
            self.live.log_metric(key, val)
            if key not in SUMMARY:
                self.live.summary.pop(key, None)
        self.live.next_step()

    def on_end(self) -> None:
        self.live.end()
        self._commit.close()  # the complete log replaces the previous one
