"""EXP3: curriculum learning with a ~1M-parameter LLaMA proxy on the leaner corpus.

Modules: ``config`` (params ``curriculum`` and ``exp3``), ``units`` (documents -> scored units),
``scorers`` (difficulty registry), ``pacing`` (iterative plateau schedule, linear/root/step),
``trainer`` (the proxy's training loop with a growing pool, resumable), ``runs`` (what the stages do),
``report`` (table strategy x seed, target-loss reductions, curves). README section: ``docs/exp3.md``.
"""
