"""One report card for the whole study (the ``report`` stage, last in the DAG): the study's claims beside our
measurements with verdicts, the "Protocol vs study" table, each experiment's tables and the inputs.

Modules: ``card`` (``collect`` everything under a directory, ``summary``, ``run``: write the card),
``claims`` (the claims and their verdicts), ``protocol`` (the study's protocol vs the params in effect),
``provenance`` (git, hardware, params, timings, data and LLM inputs), ``render`` (Markdown).
"""
from tinyhelen.report.card import collect, run, summary
from tinyhelen.report.claims import (CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, NOT_RUN, REPRODUCED, VERDICTS, Claim,
                                     Interval, ReportConfig, claims_entropy, claims_exp1, claims_exp2, claims_exp3,
                                     decide, scale_text, t_interval)
from tinyhelen.report.provenance import LLM_INPUTS
from tinyhelen.report.render import render

__all__ = ["ReportConfig", "VERDICTS", "REPRODUCED", "CONTRADICTED", "INCONCLUSIVE", "NOT_MEASURED", "NOT_RUN",
           "Claim", "Interval", "decide", "t_interval", "scale_text", "claims_entropy", "claims_exp1",
           "claims_exp2", "claims_exp3", "collect", "render", "summary", "run", "LLM_INPUTS"]
