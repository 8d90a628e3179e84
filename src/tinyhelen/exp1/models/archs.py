"""The registered architectures: the study's four (BERT, LLaMA, XLNet, Mamba2) and the ``mamba1`` option
(shapes per size preset, objectives, pair layouts; see the package docstring)."""
from __future__ import annotations

from functools import partial

from tinyhelen.exp1.models.registry import (MAX_POSITIONS, ArchSpec, PairLayout, mamba2_flops, mamba_flops, register,
                                            transformer_flops)


def _mamba_setup() -> None:
    from tinyhelen.exp1.models.mamba import install_cpu_scan

    install_cpu_scan()


_BIDIRECTIONAL = dict(after_b=("sep",), segments=True)
_CAUSAL = PairLayout(start=(), after_a=("sep",), after_b=(), end=("eos",))

register(ArchSpec(
    name="bert", description="BERT, masked LM (15%, 80/10/10)",
    config_class="transformers:BertConfig", lm_class="transformers:BertForMaskedLM",
    classifier_class="transformers:BertForSequenceClassification", objective="mlm", padding_side="right",
    layout=PairLayout(start=("cls",), end=(), **_BIDIRECTIONAL), token_type_ids=True,
    presets={"tiny": dict(hidden_size=128, num_hidden_layers=5, num_attention_heads=4, intermediate_size=512),
             "paper": dict(hidden_size=384, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1536)},
    config_kwargs=dict(max_position_embeddings=MAX_POSITIONS, type_vocab_size=2, hidden_dropout_prob=0.1,
                       attention_probs_dropout_prob=0.1)))
register(ArchSpec(
    name="llama", description="LLaMA, causal LM",
    config_class="transformers:LlamaConfig", lm_class="transformers:LlamaForCausalLM",
    classifier_class="transformers:LlamaForSequenceClassification", objective="clm", padding_side="right",
    layout=_CAUSAL,
    presets={"tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                          intermediate_size=512),
             "paper": dict(hidden_size=336, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                           intermediate_size=1344)},
    config_kwargs=dict(max_position_embeddings=2048, tie_word_embeddings=False, rms_norm_eps=1e-5,
                       rope_theta=500_000.0, attn_implementation="sdpa")))
register(ArchSpec(
    name="xlnet", description="XLNet, permutation LM (span masking, predicted spans only)",
    config_class="transformers:XLNetConfig", lm_class="transformers:XLNetLMHeadModel",
    classifier_class="transformers:XLNetForSequenceClassification", objective="plm", padding_side="left",
    layout=PairLayout(start=(), end=("cls",), end_segment=2, **_BIDIRECTIONAL), token_type_ids=True,
    presets={"tiny": dict(d_model=128, n_layer=5, n_head=4, d_inner=448),
             "paper": dict(d_model=376, n_layer=8, n_head=8, d_inner=1440)},
    config_kwargs=dict(mem_len=None, dropout=0.1, ff_activation="gelu", summary_type="last",
                       summary_use_proj=True),
    flops=partial(transformer_flops, attention_factor=2.0)))
register(ArchSpec(
    name="mamba", description="Mamba2 mixer + gated MLP (the study's mamba-ssm block), causal LM",
    config_class="transformers:Mamba2Config", lm_class="tinyhelen.exp1.models.mamba:Mamba2MLPForCausalLM",
    classifier_class="tinyhelen.exp1.models.mamba:Mamba2ForSequenceClassification", objective="clm",
    padding_side="right", layout=_CAUSAL,
    presets={"tiny": dict(hidden_size=192, num_hidden_layers=2, state_size=32, head_dim=32, num_heads=12,
                          mlp_intermediate_size=448, chunk_size=64),
             "paper": dict(hidden_size=768, num_hidden_layers=2, state_size=128, head_dim=64, num_heads=24,
                           mlp_intermediate_size=1536, chunk_size=256)},
    config_kwargs=dict(expand=2, n_groups=1, conv_kernel=4, use_conv_bias=True, use_bias=False,
                       tie_word_embeddings=False, use_cache=False),
    flops=mamba2_flops))
register(ArchSpec(
    name="mamba1", description="Mamba-1 (transformers' MambaForCausalLM), causal LM; not the study's model",
    config_class="transformers:MambaConfig", lm_class="transformers:MambaForCausalLM",
    classifier_class="tinyhelen.exp1.models.mamba:MambaForSequenceClassification", objective="clm",
    padding_side="right", layout=_CAUSAL,
    presets={"tiny": dict(hidden_size=392, num_hidden_layers=2, state_size=8, expand=1),
             "paper": dict(hidden_size=744, num_hidden_layers=2, state_size=16, expand=4)},
    config_kwargs=dict(tie_word_embeddings=True, use_cache=False), flops=mamba_flops, setup=_mamba_setup,
    default=False))
