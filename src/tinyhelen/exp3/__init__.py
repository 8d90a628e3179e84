"""EXP3: curriculum learning with a ~1M-parameter LLaMA proxy on the leaner corpus.

Modules: ``config`` (params ``curriculum`` and ``exp3``), ``units`` (documents -> scored units),
``scorers`` (difficulty registry), ``pacing`` (iterative plateau schedule, linear/root/step),
``curriculum`` (the growing pool as the training loop's batch source and callback: one proxy run, resumable),
``runs`` (what the stages do), ``result`` (table strategy x seed, target-loss reductions, curves).
README section: ``docs/exp3.md``.
"""
