"""The report card: what the ``report`` stage reads and writes.

Reads the typed results of every experiment (``reports/results/{entropy,exp1,exp2,exp3}.json``, each
schema in its experiment's ``result`` module), the data summary ``reports/prepare.json``, the LLM stages' metrics (their
provenance), the params in effect, ``dvc.lock`` and the stage timings, and writes

* ``reports/README.md``: the claims of the study with verdicts qualified by the scale run, the
  "Protocol vs study" table (``tinyhelen.report.protocol``), each experiment's tables, the inputs (unverified
  data, LLM provenance), the params that differ from the defaults and the wall time per stage;
* ``reports/summary.json`` (DVC metrics): per claim its verdict, effect, interval and scale fractions, the
  verdict counts and the number of protocol differences; deterministic (no commit, no timings).

A missing or invalid result never fails the stage: its section says "Not run" with the reason and its
claims get ``not run``.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from tinyhelen.io import atomic_open, write_json
from tinyhelen.report.protocol import compare
from tinyhelen.report.claims import (Claim, ReportConfig, claims_entropy, claims_exp1, claims_exp2, claims_exp3,
                                    exp1_vs_scratch)
from tinyhelen.report.provenance import (UNVERIFIED, git_info, hardware, llm_marks, params_vs_defaults,
                                         read_llm_stages, read_lock, read_prepare, read_profile_runs, read_timings,
                                         resolved_params)
from tinyhelen.report import scale
from tinyhelen.report.render import render
from tinyhelen.report.verdicts import NOT_MEASURED, NOT_RUN, VERDICTS, decide, verdict_key
from tinyhelen.entropy.result import EntropyResult
from tinyhelen.exp1.result import Exp1Result
from tinyhelen.exp2.result import Exp2Result
from tinyhelen.exp3.result import Exp3Result
from tinyhelen.results import read

log = logging.getLogger(__name__)

RESULTS = {"entropy": EntropyResult, "exp1": Exp1Result, "exp2": Exp2Result, "exp3": Exp3Result}
STAGE = {"entropy": "entropy", "exp1": "exp1_report", "exp2": "exp2_report", "exp3": "exp3_report"}


def collect(root: Path | str = ".", params_path: Path | str = "params.yaml", cfg: ReportConfig | None = None,
            reports: Path | str = "reports", profiles: Path | str = "results",
            results: dict[str, tuple[Any, str | None]] | None = None) -> dict[str, Any]:
    """Read everything the report needs: under ``root`` (a workspace), the stages' reports in ``reports``
    (typed results in ``results/<experiment>.json``), the saved profile runs in ``profiles``, ``dvc.lock`` and
    git. Never raises for missing or invalid results. ``results``: ``{name: (result, problem)}`` to use instead
    of reading the files (``verify`` passes the results it rebuilt from the run files)."""
    root = Path(root)
    reports, profiles = root / reports, root / profiles
    params_path = Path(params_path) if Path(params_path).is_absolute() else root / params_path
    cfg = cfg or ReportConfig()
    found: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, model in RESULTS.items():
        res, problem = results[key] if results is not None else \
            read(model, model.file(reports), f"{reports.name}/{model.file(Path())}")
        if problem:
            log.warning("%s", problem)
            problems[key] = problem + (f" (stage `{STAGE[key]}` not run)" if problem.endswith("absent") else "")
        found[key] = res
    prepare, prep_problem = read_prepare(reports)
    if prep_problem:
        problems["prepare"] = prep_problem
    llm, input_problems = read_llm_stages(reports)
    claims = (claims_entropy(found["entropy"], problems.get("entropy"))
              + claims_exp1(found["exp1"], cfg, problems.get("exp1"))
              + claims_exp2(found["exp2"], cfg, problems.get("exp2"))
              + claims_exp3(found["exp3"], cfg, problems.get("exp3")))
    for c in claims:
        if c.verdict != NOT_RUN:
            checks = llm_marks(c.experiment, llm)
            c.marks += checks + ([UNVERIFIED] if prepare and not prepare.verified else [])
            if checks and c.verdict != NOT_MEASURED:  # a pipeline check gives no verdict, its numbers stay
                c.verdict, c.why = decide(None, measurable=False, reason=f"{checks[0]}: a model below "
                                          f"llm.pipeline_check_below_params; without it: {c.verdict}, {c.why}")
    params = resolved_params(params_path)
    return {"cfg": cfg, "root": root, "reports": reports, "params": params, "results": found, "problems": problems,
            "prepare": prepare, "llm": llm, "input_problems": input_problems, "claims": claims,
            "vs_scratch": exp1_vs_scratch(found["exp1"], cfg), "protocol": compare(params, found),
            "params_diff": params_vs_defaults(params_path),
            "lock": read_lock(root / "dvc.lock"), "timings": read_timings(reports), "git": git_info(root),
            "hardware": hardware(), "profile_runs": read_profile_runs(profiles),
            "scale": scale.points(claims, scale.read_summaries(profiles)),
            "generated": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def summary(ctx: dict[str, Any]) -> dict[str, Any]:
    """``reports/summary.json`` (DVC metrics): verdict counts, per claim its verdict and numbers, the number
    of protocol differences and the input flags. Deterministic: no commit, no timings."""
    claims: list[Claim] = ctx["claims"]
    prep = ctx["prepare"]
    return {"verdicts": {verdict_key(v): sum(c.verdict == v for c in claims) for v in VERDICTS},
            "claims": {c.id: {"verdict": c.verdict, **c.numbers, "marks": len(c.marks)} for c in claims},
            "protocol_differences": sum(r.differs for r in ctx["protocol"]),
            "checksums_verified": None if prep is None else prep.checksums_verified}


def run(root: Path | str = ".", params_path: Path | str = "params.yaml", cfg: ReportConfig | None = None, *,
        reports: Path | str = "reports", profiles: Path | str = "results", card: Path | str | None = None,
        summary_path: Path | str | None = None, scale_figures: Path | str | None = None,
        scale_plot: Path | str | None = None) -> dict[str, Any]:
    """Write the card (default ``<reports>/README.md``), its summary (default ``<reports>/summary.json``) and
    each claim against scale (default ``<reports>/figures/scale/<claim>.png`` and ``<reports>/plots/scale.tsv``)
    under ``root``; return the context."""
    ctx = collect(root, params_path, cfg, reports, profiles)
    root = Path(root)
    card_path = root / (card or Path(reports) / "README.md")
    figures = root / (scale_figures or Path(reports) / "figures" / "scale")
    scale.write(ctx["scale"], {c.id: c.claim for c in ctx["claims"]}, figures,
                root / (scale_plot or Path(reports) / "plots" / "scale.tsv"))
    ctx["scale_href"] = Path(os.path.relpath(figures, card_path.parent)).as_posix()
    with atomic_open(card_path) as fh:
        fh.write(render(ctx))
    write_json(root / (summary_path or Path(reports) / "summary.json"), summary(ctx))
    for c in ctx["claims"]:
        log.info("%-26s %-34s %s", c.id, c.verdict, c.scale)
    return ctx
