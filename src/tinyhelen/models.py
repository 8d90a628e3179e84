"""Model zoo of EXP1: BERT (masked LM), LLaMA (causal LM), XLNet (permutation LM) and Mamba (causal LM).

Every architecture is built from a size *preset* with the vocabulary of the 2K byte-level BPE tokenizer:

- ``tiny``: about 1M non-embedding parameters (the CPU default; minutes for the whole EXP1 block). Tiny
  Mamba uses ``expand=1, d_state=8`` (d=392, 2 layers): the selective scan is a sequential loop on CPU whose
  cost grows with ``d_inner * d_state``; this shape is ~2x faster than ``expand=2, d_state=16`` at 1M;
- ``paper``: about 14M non-embedding parameters, the size used in the study (LLaMA d=336, 8 layers,
  8 heads, FFN 1344; BERT d=384, 8 layers, FFN 1536; XLNet d=376, 8 layers, FFN 1440; Mamba 2 layers,
  d=744 with expand 4: the study's "d=768, 2 layers" has 7.5M non-embedding parameters with
  transformers' default expand 2 and 15.1M with expand 4, so the width is trimmed to land on 14M).

"Non-embedding parameters" (``non_embedding_params``) = all parameters of the model with its pretraining
head, minus token/position/segment embedding tables and an *untied* output embedding matrix (tied ones
are the input table). ``tests/test_models.py`` asserts each preset within 5% of ``TARGET_NON_EMBEDDING``.

Pretraining heads (``build_lm``) and fine-tuning heads (``build_classifier``) are the ``transformers``
classes, except Mamba's classification head (``MambaForSequenceClassification`` below; transformers has
none). Mamba uses the ``mamba-ssm``/``causal-conv1d`` CUDA kernels automatically when they are installed
and the model runs on CUDA (``requirements-gpu.txt``), and the pure PyTorch path otherwise.

Padding side and pooling used for classification (``encode_pair`` in ``tinyhelen.glue`` follows it):

=======  ==========================================  ==========  =========================================
arch     input layout                                padding     pooled token
=======  ==========================================  ==========  =========================================
bert     ``<cls> a <sep> [b <sep>]``                 right       first (``<cls>``, BERT pooler)
xlnet    ``a <sep> [b <sep>] <cls>``                 left        last position (``<cls>``; summary "last")
llama    ``a <sep> [b] <eos>``                       right       last non-pad token (``<eos>``)
mamba    ``a <sep> [b] <eos>``                       right       last non-pad token (``<eos>``)
=======  ==========================================  ==========  =========================================

Right padding is required for Mamba (no attention mask inside the recurrence: pads *after* the pooled
token cannot influence it) and XLNet's "last" summary requires left padding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tinyhelen.config import Section

ARCHS: tuple[str, ...] = ("bert", "llama", "xlnet", "mamba")
PRESETS: tuple[str, ...] = ("tiny", "paper")
CAUSAL_ARCHS = frozenset({"llama", "mamba"})
PADDING_SIDE = {"bert": "right", "xlnet": "left", "llama": "right", "mamba": "right"}
OBJECTIVE = {"bert": "mlm", "llama": "clm", "xlnet": "plm", "mamba": "clm"}

# target non-embedding parameter count per preset (the test allows +-5%)
TARGET_NON_EMBEDDING = {"tiny": 1_000_000, "paper": 14_000_000}

# architecture hyper-parameters per preset (everything else: transformers defaults / _common below)
PRESET_SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "bert": dict(hidden_size=128, num_hidden_layers=5, num_attention_heads=4, intermediate_size=512),
        "llama": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=480),
        "xlnet": dict(d_model=128, n_layer=5, n_head=4, d_inner=448),
        "mamba": dict(hidden_size=392, num_hidden_layers=2, state_size=8, expand=1),
    },
    "paper": {
        "bert": dict(hidden_size=384, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1536),
        "llama": dict(hidden_size=336, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1344),
        "xlnet": dict(d_model=376, n_layer=8, n_head=8, d_inner=1440),
        "mamba": dict(hidden_size=744, num_hidden_layers=2, state_size=16, expand=4),
    },
}

class ModelsConfig(Section):
    """``models:`` section: the size preset of every EXP1 model (tiny on CPU, paper on GPU)."""

    preset: Literal["tiny", "paper"] = "tiny"


MAX_POSITIONS = 512  # absolute position table of BERT (LLaMA: RoPE, XLNet: relative, Mamba: none)


def _check(arch: str, preset: str | None = None) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id,
           "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}; build it with tinyhelen.tokenizer")
    return ids


def build_config(arch: str, preset: str, tokenizer: Any):
    """``transformers`` config of ``arch`` at size ``preset`` with the tokenizer's vocabulary/special ids."""
    from transformers import BertConfig, LlamaConfig, MambaConfig, XLNetConfig

    _check(arch, preset)
    ids = _special_ids(tokenizer)
    shape = dict(PRESET_SHAPES[preset][arch])
    common = dict(vocab_size=len(tokenizer), pad_token_id=ids["pad"], eos_token_id=ids["eos"],
                  bos_token_id=ids["bos"])
    if arch == "bert":
        return BertConfig(**common, **shape, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                          hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    if arch == "llama":
        return LlamaConfig(**common, **shape, num_key_value_heads=shape["num_attention_heads"],
                           max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5)
    if arch == "xlnet":
        return XLNetConfig(**common, **shape, mem_len=None, dropout=0.1, ff_activation="gelu",
                           summary_type="last", summary_use_proj=True)
    return MambaConfig(**common, **shape, tie_word_embeddings=True, use_cache=False)


def _cpu_selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, **_: Any):
    """Pure PyTorch selective scan with the semantics of transformers' ``mamba_selective_scan``.

    transformers' reference loop indexes ``discrete_A[:, :, t]`` at every step, whose backward allocates a
    full-size zero gradient per step (O(L^2) memory traffic: ~70 s per tiny training step on 2 CPU cores).
    Here the per-step slices come from one ``unbind`` (one gradient buffer), which is ~100x faster on CPU.
    Shapes: hidden_states/dt/z (b, d, L); A (d, n); B, C (b, n, L); D (d,)."""
    import torch.nn.functional as F

    dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    dt = dt.float()
    # (L, b, d, n) contiguous so that unbind(0) yields contiguous per-step views
    dA = torch.exp(A.float()[None, :, None, :] * dt[..., None]).permute(2, 0, 1, 3).contiguous()
    dBu = (dt[..., None] * B.float().transpose(1, 2)[:, None] * hidden_states.float()[..., None])
    dBu = dBu.permute(2, 0, 1, 3).contiguous()
    Cs = C.float().permute(2, 0, 1).contiguous()  # (L, b, n)
    state = torch.zeros_like(dBu[0])
    outs = []
    for a_t, b_t, c_t in zip(dA.unbind(0), dBu.unbind(0), Cs.unbind(0)):
        state = a_t * state + b_t
        outs.append(torch.einsum("bdn,bn->bd", state, c_t))
    y = torch.stack(outs, dim=-1)
    if D is not None:
        y = y + hidden_states.float() * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, state.to(dtype)) if return_last_state else y


def _install_cpu_scan() -> None:
    """Route Mamba's selective scan to ``_cpu_selective_scan`` for CPU tensors (CUDA: unchanged, i.e. the
    mamba-ssm kernel when installed)."""
    from transformers.models.mamba import modeling_mamba as mm

    original = mm.mamba_selective_scan
    if getattr(original, "_tinyhelen", False):
        return

    def scan(hidden_states, *args, **kwargs):
        if hidden_states.device.type == "cpu":
            return _cpu_selective_scan(hidden_states, *args, **kwargs)
        return original(hidden_states, *args, **kwargs)

    scan._tinyhelen = True  # type: ignore[attr-defined]
    mm.mamba_selective_scan = scan


def build_lm(arch: str, config):
    """Randomly initialised model with its pretraining head (BERT MLM, LLaMA/Mamba CLM, XLNet PLM)."""
    from transformers import BertForMaskedLM, LlamaForCausalLM, MambaForCausalLM, XLNetLMHeadModel

    _check(arch)
    if arch == "mamba":
        _install_cpu_scan()
    cls = {"bert": BertForMaskedLM, "llama": LlamaForCausalLM, "xlnet": XLNetLMHeadModel,
           "mamba": MambaForCausalLM}[arch]
    return cls(config)


class MambaForSequenceClassification(nn.Module):
    """Mamba backbone + linear head on the hidden state of the last non-pad token (right padding).

    transformers has no Mamba classification class; this mirrors ``LlamaForSequenceClassification``:
    ``num_labels == 1`` is regression (MSE), otherwise single-label classification (cross-entropy).
    ``save_pretrained``/``from_pretrained`` use the same file layout as the transformers classes
    (``config.json`` with ``num_labels`` + ``model.safetensors``)."""

    def __init__(self, config):
        super().__init__()
        from transformers import MambaModel

        _install_cpu_scan()
        self.config = config
        self.backbone = MambaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.score.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.backbone(input_ids=input_ids).last_hidden_state
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        # rightmost non-pad position (right padding: pads after it cannot influence it in a causal model)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (pos * attention_mask.to(torch.long)).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = self.score(pooled.to(self.score.weight.dtype))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, path: Path | str) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(path))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))


def _load_mamba_backbone(model: MambaForSequenceClassification, checkpoint: Path) -> None:
    """Copy a pretrained ``MambaForCausalLM`` checkpoint's backbone into the classifier."""
    from transformers import MambaModel

    model.backbone = MambaModel.from_pretrained(str(checkpoint), config=model.config)


def build_classifier(arch: str, config_or_checkpoint: Any, num_labels: int):
    """Sequence classification (``num_labels >= 2``) or regression (``num_labels == 1``) model.

    ``config_or_checkpoint``: a config from ``build_config`` (random init = from-scratch baseline) or the
    directory of a pretrained LM (``data/models/pretrain/<arch>-<side>/final``): the backbone weights are
    loaded, the pretraining head is dropped and a fresh classification head is added."""
    from transformers import (AutoConfig, BertForSequenceClassification, LlamaForSequenceClassification,
                              XLNetForSequenceClassification)

    _check(arch)
    from_dir = isinstance(config_or_checkpoint, (str, Path))
    config = AutoConfig.from_pretrained(str(config_or_checkpoint)) if from_dir else config_or_checkpoint
    config = config.__class__.from_dict(config.to_dict())  # private copy
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    expected = {"bert": "bert", "llama": "llama", "xlnet": "xlnet", "mamba": "mamba"}[arch]
    if config.model_type != expected:
        raise ValueError(f"{config_or_checkpoint}: checkpoint is a {config.model_type!r} model, not {arch!r}")
    if arch == "mamba":
        model = MambaForSequenceClassification(config)
        if from_dir:
            _load_mamba_backbone(model, Path(config_or_checkpoint))
        return model
    cls = {"bert": BertForSequenceClassification, "llama": LlamaForSequenceClassification,
           "xlnet": XLNetForSequenceClassification}[arch]
    if from_dir:
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # "newly initialised head" warning is expected
        try:
            return cls.from_pretrained(str(config_or_checkpoint), config=config)
        finally:
            transformers.logging.set_verbosity(verbosity)
    return cls(config)


def _embedding_params(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            ids.update(id(p) for p in mod.parameters())
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    if out is not None:
        ids.add(id(out.weight))  # tied: already counted as the input table; untied: the output table
    return ids


def non_embedding_params(model: nn.Module) -> int:
    """Number of parameters outside token/position/segment embeddings and the output embedding matrix.

    Biases of an output layer (e.g. BERT's MLM decoder bias, XLNet's lm_loss bias) are counted."""
    emb = _embedding_params(model)
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in emb:
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def flops_per_token(model: nn.Module, seq_len: int, arch: str) -> float:
    """Approximate training FLOPs per token (forward + backward = 6 N + attention term).

    N = all matrix-multiply parameters incl. the output projection (``total_params`` minus position
    tables is close enough); attention adds 12 * layers * d * seq_len (PaLM appendix B). XLNet's
    two-stream attention roughly doubles the attention part; Mamba has no attention term (its scan is
    O(d_inner * d_state) per token, counted as 6 * 9 * d_inner * d_state per layer, negligible)."""
    cfg = model.config
    n = total_params(model)
    if arch == "mamba":
        inner = cfg.intermediate_size
        return 6.0 * n + 6.0 * 9 * inner * cfg.state_size * cfg.num_hidden_layers
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.d_model
    attn = 12.0 * layers * d * seq_len
    return 6.0 * n + attn * (2.0 if arch == "xlnet" else 1.0)
