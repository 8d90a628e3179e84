"""The study's two LLM-made benchmarks, one module per stage.

* ``leaner_glue`` (stage ``leaner_glue``): Leaner-GLUE, GLUE items rewritten in leaner English and kept
  only if an independent call still reaches the gold label (replay: the released items);
* ``leaner_eval`` (stage ``leaner_eval``): Leaner-Eval, simple questions binned by their TF-IDF similarity
  to the instruction data (replay: the released questions).

Each module's entry point has the module's name (``leaner_glue.leaner_glue``, ``leaner_eval.leaner_eval``);
the package names the modules and their config sections.
"""
from tinyhelen.benchmarks import leaner_eval, leaner_glue
from tinyhelen.benchmarks.leaner_eval import LeanerEvalConfig
from tinyhelen.benchmarks.leaner_glue import LeanerGlueConfig

__all__ = ["leaner_eval", "leaner_glue", "LeanerEvalConfig", "LeanerGlueConfig"]
