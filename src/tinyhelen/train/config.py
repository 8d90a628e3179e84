"""Params shared by every training section: one name per concept.

``OptimConfig`` holds the optimiser and learning-rate schedule keys, ``ComputeConfig`` the device, precision
and CPU thread count. The params sections of pretraining (``pretrain``), GLUE fine-tuning (``glue``),
instruction tuning (``instruct.tune``) and the curriculum proxy (``exp3.train``, ``exp3.reference_lm``;
compute keys at ``exp3``) subclass them and set their own defaults. The peak learning rate is not here:
it is a number in most sections and a grid in ``glue.lr``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tinyhelen.config import Section


class OptimConfig(Section):
    """AdamW, linear warm-up then a decay to ``min_lr_ratio`` x the peak lr, gradient-norm clipping."""

    weight_decay: float = Field(0.01, ge=0)
    weight_decay_scope: Literal["matrices", "all"] = Field(
        "matrices", description="matrices: weight decay on 2-D weights only (not on biases, norms and "
                                "embedding tables); all: on every parameter")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine", description="after warm-up: constant, or cosine / linear decay to min_lr_ratio x lr at the "
                              "last step")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from lr/warmup_steps to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr / peak lr (cosine, linear)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clipping threshold")


class ComputeConfig(Section):
    """Where and how a training run computes (not part of a run's identity: resuming on another device is fine)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU that supports it, fp32 otherwise")
    compile: bool = Field(False, description="torch.compile the model (GPU runs)")
    threads: int = Field(2, ge=1, description="torch CPU threads (fixed, so that the same params give the same "
                                              "figures on any machine)")


COMPUTE_KEYS = frozenset(ComputeConfig.model_fields)
