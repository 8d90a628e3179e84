"""Model zoo of EXP1: one registered ``ArchSpec`` per architecture; everything else reads the registry.

An ``ArchSpec`` says everything the pipeline needs to know about an architecture: its ``transformers``
config class and shape per size preset, its pretraining objective (``tinyhelen.train.objectives``), its LM
and classifier classes, whether it takes ``token_type_ids``, how a (text a, text b) pair is laid out for
classification (``PairLayout``) and on which side it is padded, and its FLOPs formula. Pretraining
(``tinyhelen.exp1.pretrain``), GLUE fine-tuning (``tinyhelen.exp1.glue``), the EXP1 report and the validation of
``exp1.archs`` all look architectures up here. Adding an architecture = ``register(ArchSpec(...))`` plus
its name in ``exp1.archs`` (``docs/extending.md``); ``arch_names()`` lists the registered ones.

Size presets, with the vocabulary of the 2K byte-level BPE tokenizer:

- ``tiny``: about 1M non-embedding parameters (the CPU default; minutes for the whole EXP1 block). LLaMA's
  tiny preset is the study's EXP3 proxy shape (d=128, 4 layers, 4 heads, FFN 512); tiny Mamba2 has d=192,
  2 layers, state 32, MLP 448;
- ``paper``: about 14M non-embedding parameters, the study's shapes (LLaMA d=336, 8 layers, 8 heads,
  FFN 1344, untied, RoPE theta 500,000; BERT d=384, 8 layers, FFN 1536; XLNet d=376, 8 layers, FFN 1440;
  Mamba2 d=768, 2 layers, state 128, gated MLP 1536: 14.61M as in the study). ``mamba1`` (Mamba-1, an option
  outside the default matrix) keeps the earlier shapes (tiny d=392 expand 1 state 8; paper d=744 expand 4).

"Non-embedding parameters" (``non_embedding_params``) = all parameters of the model with its pretraining
head, minus token/position/segment embedding tables and an *untied* output embedding matrix (tied ones
are the input table). ``tests/test_models.py`` asserts each preset within 5% of ``TARGET_NON_EMBEDDING``.

Input layout and pooling for classification (``encode_pair`` in ``tinyhelen.exp1.glue`` applies the layout):

=======  ==========================================  ==========  =========================================
arch     input layout                                padding     pooled token
=======  ==========================================  ==========  =========================================
bert     ``<cls> a <sep> [b <sep>]``                 right       first (``<cls>``, BERT pooler)
xlnet    ``a <sep> [b <sep>] <cls>``                 left        last position (``<cls>``; summary "last")
llama    ``a <sep> [b] <eos>``                       right       last non-pad token (``<eos>``)
mamba    ``a <sep> [b] <eos>``                       right       last non-pad token (``<eos>``)
=======  ==========================================  ==========  =========================================

Right padding is required for Mamba (no attention mask inside the recurrence: pads *after* the pooled
token cannot influence it) and XLNet's "last" summary requires left padding. The study's Mamba2 block (with
its gated MLP), the Mamba classification heads and Mamba-1's PyTorch scan are in ``tinyhelen.exp1.models.mamba``
(transformers has none of them); the mamba-ssm / causal-conv1d CUDA kernels are used automatically when
installed and the model runs on CUDA.
"""
from tinyhelen.exp1.models import archs  # noqa: F401  (registers the architectures)
from tinyhelen.exp1.models.registry import (ARCHITECTURES, MAX_POSITIONS, PRESETS, TARGET_NON_EMBEDDING, ArchSpec,
                                            PairLayout, arch_names, build_classifier, build_config, build_lm,
                                            default_arch_names, flops_per_token, get, non_embedding_params, register,
                                            resolve, total_params)

__all__ = ["ARCHITECTURES", "MAX_POSITIONS", "PRESETS", "TARGET_NON_EMBEDDING", "ArchSpec", "PairLayout", "arch_names",
           "build_classifier", "build_config", "build_lm", "default_arch_names", "flops_per_token", "get",
           "non_embedding_params", "register", "resolve", "total_params"]
