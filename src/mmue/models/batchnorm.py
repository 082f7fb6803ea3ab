"""Re-estimating a model's BatchNorm statistics on other images.

A model trained (or fine-tuned) in train mode keeps running statistics of the images it saw; if those were noisy
and the images it is used on are clean, every BatchNorm layer normalises with the wrong mean and variance. Anyone
holding the weights undoes that without labels or gradients: reset the statistics and re-estimate them on clean
images of the same kind. The bench measures it as the attacker ``bn-clean`` (see ``mmue.defenses``).
"""
from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.images import to_float


def has_batchnorm(model) -> bool:
    """Whether ``model`` has a BatchNorm layer that keeps running statistics (what ``recalibrate_batchnorm`` resets)."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model, images_u8: torch.Tensor, batch_size: int = 256) -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` by passing ``images_u8`` (uint8,
    N x 3 x H x W) through its image tower: a cumulative average over all of them, not a momentum. The weights stay
    as they are and each layer's momentum is put back; ``model`` is left in eval mode. Returns the number of layers
    re-estimated (0 for a model without BatchNorm, which is then unchanged)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    model.eval()
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = next(model.parameters()).device
    for s in range(0, images_u8.shape[0], batch_size):
        model.encode_image(to_float(images_u8[s:s + batch_size].to(device)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return len(norms)
