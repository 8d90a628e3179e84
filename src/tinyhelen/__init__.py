"""TinyHelen's First Curriculum: a reproducible DVC implementation of arXiv 2501.00522.

Library modules, one per study component (see README "Where things are"):
config, io, data, tokenizer, entropy, llm, simplify, benchmarks, models, train, glue, curriculum,
instruct, judge, report.
"""
__version__ = "0.1.0"
