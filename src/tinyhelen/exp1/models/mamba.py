"""Mamba pieces that transformers lacks: the study's Mamba2 block, a fast selective scan and
sequence-classification heads.

- ``Mamba2MLPForCausalLM``: transformers' ``Mamba2`` with the block of the study's mamba-ssm model (mixer, then
  RMSNorm + gated MLP, ``config.mlp_intermediate_size``); transformers' ``Mamba2Block`` has the mixer only.
  Its SSM runs transformers' chunked PyTorch scan (``mamba2_chunk_scan``) or the mamba-ssm kernels when
  installed;
- ``install_cpu_scan`` routes transformers' Mamba-1 selective scan to ``selective_scan`` (a parallel scan,
  any device) unless the mamba-ssm kernel serves it (transformers' fallback is a per-timestep Python loop);
- ``MambaForSequenceClassification`` / ``Mamba2ForSequenceClassification`` pool the hidden state of the last
  non-pad token (right padding).

All are used through the ``mamba`` (Mamba2) and ``mamba1`` entries of the architecture registry
(``tinyhelen.exp1.models``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.models.mamba2 import modeling_mamba2 as m2


def linear_scan(a: torch.Tensor, b: torch.Tensor, parallel: bool) -> torch.Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = 0``) along dim -2.

    ``parallel``: recursive doubling (Hillis-Steele), ``ceil(log2 L)`` rounds of whole-tensor multiply-adds
    (O(L log L) work in few large kernels: the GPU path without mamba-ssm); otherwise a loop over time steps
    whose slices come from one ``unbind`` (O(L) work; the faster one on CPU, ~2.5x at 16 x 128). Only products
    of the decays ``a`` (in [0, 1]) are formed, so both are as stable as the sequential recurrence."""
    length = a.shape[-2]
    if not parallel:
        state, outs = torch.zeros_like(b[..., 0, :]), []
        for a_t, b_t in zip(a.unbind(-2), b.unbind(-2)):
            state = a_t * state + b_t
            outs.append(state)
        return torch.stack(outs, dim=-2)
    k = 1
    while k < length:
        b = torch.cat([b[..., :k, :], b[..., k:, :] + a[..., k:, :] * b[..., :-k, :]], dim=-2)
        if 2 * k < length:
            a = torch.cat([a[..., :k, :], a[..., k:, :] * a[..., :-k, :]], dim=-2)
        k *= 2
    return b


def selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, parallel: bool | None = None, **_: Any):
    """Mamba-1 selective scan in PyTorch with the semantics of transformers' ``mamba_selective_scan``, on any
    device (``linear_scan``; ``parallel`` None: the parallel scan on an accelerator, the loop on CPU).

    transformers' fallback is a per-timestep Python loop (L steps of small ops, whose backward allocates a
    full-size gradient per step): slow on CPU, and on CUDA without the mamba-ssm kernel. Shapes:
    hidden_states/dt/z (b, d, L); A (d, n); B, C (b, n, L); D (d,). Computed in fp32."""
    import torch.nn.functional as F

    dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    dt = dt.float()
    dA = torch.exp(A.float()[None, :, None, :] * dt[..., None])  # (b, d, L, n)
    dBu = dt[..., None] * B.float().transpose(1, 2)[:, None] * hidden_states.float()[..., None]
    if parallel is None:
        parallel = hidden_states.device.type != "cpu"
    states = linear_scan(dA, dBu, parallel)
    y = torch.einsum("bdln,bnl->bdl", states, C.float())
    if D is not None:
        y = y + hidden_states.float() * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, states[:, :, -1].to(dtype)) if return_last_state else y


def has_mamba_kernels() -> bool:
    """Whether the mamba-ssm CUDA kernels are importable (transformers then uses them on CUDA)."""
    import importlib.util

    return importlib.util.find_spec("mamba_ssm") is not None


def install_cpu_scan() -> None:
    """Route transformers' Mamba-1 selective scan to ``selective_scan`` unless the mamba-ssm kernel serves
    the tensor (a CUDA tensor with mamba-ssm installed)."""
    from transformers.models.mamba import modeling_mamba as mm

    original = mm.mamba_selective_scan
    if getattr(original, "_tinyhelen", False):
        return
    kernels = has_mamba_kernels()

    def scan(hidden_states, *args, **kwargs):
        if kernels and hidden_states.device.type == "cuda":
            return original(hidden_states, *args, **kwargs)
        return selective_scan(hidden_states, *args, **kwargs)

    scan._tinyhelen = True  # type: ignore[attr-defined]
    mm.mamba_selective_scan = scan


class GatedMLP(nn.Module):
    """The gated MLP of mamba-ssm's ``GatedMLP``: ``fc2(y * silu(gate))`` with ``(y, gate) = fc1(x)``, no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.fc2 = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * nn.functional.silu(gate))


class Mamba2MLPBlock(m2.Mamba2Block):
    """transformers' ``Mamba2Block`` (RMSNorm, mixer, residual) followed by the study's MLP sub-block (RMSNorm,
    ``GatedMLP``, residual) when ``config.mlp_intermediate_size`` > 0."""

    def __init__(self, config, layer_idx):
        super().__init__(config, layer_idx)
        d_mlp = getattr(config, "mlp_intermediate_size", 0) or 0
        self.norm2 = m2.Mamba2RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon) if d_mlp else None
        self.mlp = GatedMLP(config.hidden_size, d_mlp) if d_mlp else None

    def forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        hidden_states = super().forward(hidden_states, cache_params=cache_params, attention_mask=attention_mask,
                                        **kwargs)
        if self.mlp is None:
            return hidden_states
        return hidden_states + self.mlp(self.norm2(hidden_states.to(dtype=self.norm2.weight.dtype)))


class Mamba2MLPModel(m2.Mamba2Model):
    """``Mamba2Model`` whose layers are ``Mamba2MLPBlock``s."""

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList([Mamba2MLPBlock(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.post_init()


class Mamba2MLPForCausalLM(m2.Mamba2ForCausalLM):
    """``Mamba2ForCausalLM`` on a ``Mamba2MLPModel`` backbone (the study's Mamba2 LM)."""

    def __init__(self, config):
        super().__init__(config)
        self.backbone = Mamba2MLPModel(config)
        self.post_init()


class LastTokenClassifier(nn.Module):
    """A recurrent backbone + linear head on the hidden state of the last non-pad token (right padding).

    transformers has no Mamba classification class; this mirrors ``LlamaForSequenceClassification``:
    ``num_labels == 1`` is regression (MSE), otherwise single-label classification (cross-entropy).
    ``save_pretrained``/``from_pretrained`` use the same file layout as the transformers classes
    (``config.json`` with ``num_labels`` + ``model.safetensors``). Subclasses name the backbone class."""

    @staticmethod
    def backbone_class():
        raise NotImplementedError

    def __init__(self, config):
        super().__init__()
        install_cpu_scan()
        self.config = config
        self.backbone = self.backbone_class()(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.score.weight.device

    @staticmethod
    def pooled_position(attention_mask: torch.Tensor) -> torch.Tensor:
        """Per row the rightmost non-pad position (right padding: pads after it cannot influence it in a
        causal model)."""
        pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        return (pos * attention_mask.to(torch.long)).argmax(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.backbone(input_ids=input_ids, use_cache=False).last_hidden_state
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.pooled_position(attention_mask)]
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

    @classmethod
    def from_pretrained(cls, path: Path | str, config) -> "LastTokenClassifier":
        """A fresh head on the backbone of a pretrained causal-LM directory (its LM head is dropped)."""
        model = cls(config)
        model.backbone = cls.backbone_class().from_pretrained(str(path), config=model.config)
        return model


class MambaForSequenceClassification(LastTokenClassifier):
    """Mamba-1 (transformers' ``MambaModel``) with a last-token head."""

    @staticmethod
    def backbone_class():
        from transformers import MambaModel

        return MambaModel


class Mamba2ForSequenceClassification(LastTokenClassifier):
    """Mamba2 with the study's gated-MLP block (``Mamba2MLPModel``) with a last-token head."""

    @staticmethod
    def backbone_class():
        return Mamba2MLPModel
