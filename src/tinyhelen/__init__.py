"""TinyHelen's First Curriculum: a reproducible DVC implementation of arXiv 2501.00522.

Library modules, one per study component (see README "Where things are"):
config, io, data, tokenizer, entropy, llm, simplify, leaner_glue, leaner_eval, models, train, glue, curriculum,
instruct, judge, report.

Reproducible CPU math. Importing the package pins the CPU kernels of ATen, MKL and oneDNN to AVX2 (unless
the variables are already set), before torch is loaded: AVX-512 machines otherwise take other kernels, which
round differently, so the same params gave different training figures (4th-5th digit) on different hosts
of the same machine kind. The pin costs no measurable speed on the CPU-scale models. Set
``TINYHELEN_CPU_ISA=native`` to keep each machine's fastest kernels. GPU math is not affected.
"""
import os as _os

__version__ = "0.1.0"

CPU_ISA = _os.environ.get("TINYHELEN_CPU_ISA", "avx2").lower()
if CPU_ISA == "avx2":
    for _name, _value in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        _os.environ.setdefault(_name, _value)
elif CPU_ISA != "native":
    raise ValueError(f"TINYHELEN_CPU_ISA={CPU_ISA!r}: use 'avx2' (default, reproducible) or 'native'")
