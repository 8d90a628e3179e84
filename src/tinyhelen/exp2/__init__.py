"""EXP2: instruction tuning of the pretrained LLaMA of each corpus side on each side's instructions (four
recipes), answers to Leaner-Eval, judged by an LLM (or offline proxy metrics) (``docs/exp2.md``).

Modules: ``config`` (params ``instruct`` and ``exp2``), ``instruct_data`` (the instruction sets and the
template), ``tune`` (instruction tuning), ``generate`` (answers of every checkpoint / the selected one),
``judge`` (judge backends, checkpoint selection, the report) with ``llm_judge`` and ``proxy_judge``.
"""
