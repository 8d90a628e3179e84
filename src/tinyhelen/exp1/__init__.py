"""EXP1: ~14M-parameter BERT (MLM), LLaMA (CLM), XLNet (PLM) and Mamba2 pretrained on the leaner vs the original
corpus with the same token budget, then fine-tuned on Leaner-GLUE (``docs/exp1.md``).

Modules: ``config`` (params ``models`` and ``exp1``), ``models`` (the architecture registry), ``pretrain``
(one pretraining run per arch x corpus side, learning-rate sweep), ``glue`` (fine-tuning and scoring on
Leaner-GLUE) and ``glue_metrics`` (GLUE's task metrics), ``result`` (the EXP1 table and figure).
"""
