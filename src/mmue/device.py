"""Which device to run on, and mixed precision there (bf16 autocast on CUDA, nothing on CPU)."""
from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no grad scaler needed); a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
