"""One report card for the whole study (the ``report`` stage, last in the DAG): the study's claims beside our
measurements with verdicts, the "Protocol vs study" table, each experiment's tables and the inputs.

Modules: ``card`` (``collect`` everything under a directory, ``summary``, ``run``: write the card),
``verdicts`` (the pre-registered verdict rules and intervals), ``claims`` (each claim measured and decided), ``protocol`` (the study's protocol vs the params in effect),
``provenance`` (git, hardware, params, timings, data and LLM inputs), ``render`` (Markdown).
"""
from tinyhelen.report.card import collect, run, summary
from tinyhelen.report.claims import (Claim, ReportConfig, claims_entropy, claims_exp1, claims_exp2, claims_exp3,
                                     exp1_vs_scratch, scale_text)
from tinyhelen.report.provenance import LLM_INPUTS
from tinyhelen.report.render import render
from tinyhelen.report.verdicts import (CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, NOT_RUN, REPRODUCED, SIZE_DIFFERS,
                                       VERDICTS, Interval, decide, decide_definitions, verdict_key)

__all__ = ["ReportConfig", "VERDICTS", "REPRODUCED", "SIZE_DIFFERS", "CONTRADICTED", "INCONCLUSIVE", "NOT_MEASURED",
           "NOT_RUN", "Claim", "Interval", "decide", "decide_definitions", "verdict_key", "scale_text",
           "claims_entropy", "claims_exp1", "claims_exp2", "claims_exp3", "exp1_vs_scratch", "collect", "render",
           "summary", "run", "LLM_INPUTS"]
