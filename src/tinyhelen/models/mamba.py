"""Mamba pieces that transformers lacks: a fast CPU selective scan and a sequence-classification head.

``install_cpu_scan`` routes transformers' Mamba selective scan to ``cpu_selective_scan`` for CPU tensors
(CUDA tensors keep the mamba-ssm kernel when it is installed). ``MambaForSequenceClassification`` pools the
hidden state of the last non-pad token (right padding). Both are used through the ``mamba`` entry of the
architecture registry (``tinyhelen.models``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def cpu_selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
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


def install_cpu_scan() -> None:
    """Route Mamba's selective scan to ``cpu_selective_scan`` for CPU tensors (CUDA: unchanged, i.e. the
    mamba-ssm kernel when installed)."""
    from transformers.models.mamba import modeling_mamba as mm

    original = mm.mamba_selective_scan
    if getattr(original, "_tinyhelen", False):
        return

    def scan(hidden_states, *args, **kwargs):
        if hidden_states.device.type == "cpu":
            return cpu_selective_scan(hidden_states, *args, **kwargs)
        return original(hidden_states, *args, **kwargs)

    scan._tinyhelen = True  # type: ignore[attr-defined]
    mm.mamba_selective_scan = scan



class MambaForSequenceClassification(nn.Module):
    """Mamba backbone + linear head on the hidden state of the last non-pad token (right padding).

    transformers has no Mamba classification class; this mirrors ``LlamaForSequenceClassification``:
    ``num_labels == 1`` is regression (MSE), otherwise single-label classification (cross-entropy).
    ``save_pretrained``/``from_pretrained`` use the same file layout as the transformers classes
    (``config.json`` with ``num_labels`` + ``model.safetensors``)."""

    def __init__(self, config):
        super().__init__()
        from transformers import MambaModel

        install_cpu_scan()
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

    @classmethod
    def from_pretrained(cls, path: Path | str, config) -> "MambaForSequenceClassification":
        """A fresh head on the backbone of a pretrained ``MambaForCausalLM`` directory (its LM head is dropped)."""
        from transformers import MambaModel

        model = cls(config)
        model.backbone = MambaModel.from_pretrained(str(path), config=model.config)
        return model
