"""Device, precision, CPU threads and model FLOPs utilisation of a training run (``ComputeConfig``)."""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

import torch

from tinyhelen.train.config import ComputeConfig

log = logging.getLogger(__name__)

_PEAK_BF16_TFLOPS = {  # dense bf16 tensor-core peak per GPU
    "H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "A100": 312.0, "A800": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "A6000": 155.0,
    "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def set_threads(threads: int) -> None:
    """Fix torch's CPU threads (results depend on them) and flush denormals (Mamba's decaying scan states
    hit denormals: 10x slower CPU math). Stage scripts call this once with their section's ``threads``."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def device_of(compute: ComputeConfig) -> torch.device:
    if compute.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    if compute.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(compute.device)


def uses_bf16(compute: ComputeConfig, device: torch.device) -> bool:
    """bf16 autocast: asked for, or ``auto`` on a device that supports it (a bf16-capable GPU)."""
    if compute.precision != "auto":
        return compute.precision == "bf16"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def accelerator(compute: ComputeConfig) -> tuple[Any, bool]:
    """An ``accelerate.Accelerator`` for ``compute`` (one process, or each process of ``torchrun``) and whether
    it autocasts to bf16. Several processes: DDP looks for parameters without a gradient in each step (XLNet
    leaves its segment parameters unused in pretraining and its mask embedding in fine-tuning; one traversal
    of the autograd graph per step)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device = device_of(compute)
    bf16 = uses_bf16(compute, device)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=device.type == "cpu",
                       kwargs_handlers=[ddp]), bf16


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``; to a GPU from pinned host memory without blocking (no host synchronisation;
    CUDA orders the copy before the kernels that read it)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: (v.pin_memory() if v.device.type == "cpu" else v).to(device, non_blocking=True)
            for k, v in batch.items()}


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast for inference outside the training loop (a no-op when ``bf16`` is false)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def peak_bf16_tflops(name: str) -> float:
    """Dense bf16 peak of a GPU named like a key of the table above (``h100``, ``A100``, ...)."""
    for key, val in _PEAK_BF16_TFLOPS.items():
        if key.lower() == name.lower():
            return val
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(k.lower() for k in _PEAK_BF16_TFLOPS)}")


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """Dense bf16 peak of the accelerator (MFU denominator); None on CPU or an unknown GPU."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in _PEAK_BF16_TFLOPS.items():
        if key in name:
            if key == "H100" and "PCIe" in name:
                return 756.0
            return val
    log.warning("unknown GPU %r: set peak_tflops to report model FLOPs utilisation", name)
    return None
