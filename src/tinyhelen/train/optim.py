"""The one optimiser builder and the one learning-rate schedule of every training run."""
from __future__ import annotations

import math

import torch

from tinyhelen.train.config import OptimConfig


def decays(name: str, param: torch.Tensor) -> bool:
    """``weight_decay_scope: matrices``: 2-D (or larger) weights decay; biases, norms and embeddings do not."""
    lowered = name.lower()
    return param.ndim >= 2 and "embed" not in lowered and "norm" not in lowered


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` with peak learning rate ``lr``.

    ``weight_decay_scope: all`` puts every parameter into one group with ``weight_decay``; ``matrices``
    makes two groups (decaying matrices, then everything else with no decay), in parameter order."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.weight_decay_scope == "all":
        groups = [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    else:
        groups = [{"params": [p for n, p in params if decays(n, p)], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)


def lr_at(step: int, lr: float, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based) of ``total_steps``, peak ``lr``.

    Warm-up: ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps. Then ``constant``:
    ``lr``; ``cosine`` / ``linear``: ``lr * (m + (1 - m) * d)`` with ``m = min_lr_ratio`` and ``d`` falling
    from 1 to 0 over the remaining steps (``0.5 * (1 + cos(pi * t))`` or ``1 - t``)."""
    warmup = cfg.warmup_steps
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return lr
    frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.lr_schedule == "cosine" else 1 - frac
    return lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)
