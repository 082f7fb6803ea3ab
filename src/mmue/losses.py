"""The symmetric InfoNCE (CLIP) loss on L2-normalised features."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    return logit_scale * image_features @ text_features.T


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              reduction: str = "mean") -> torch.Tensor:
    """(CE(I·Tᵀ, arange) + CE(T·Iᵀ, arange)) / 2. ``reduction='none'`` gives the per-pair loss."""
    logits = clip_logits(image_features, text_features, logit_scale)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels, reduction=reduction)
            + F.cross_entropy(logits.T, labels, reduction=reduction)) / 2


def clip_loss_options(image_features: torch.Tensor, text_options: torch.Tensor,
                      logit_scale: torch.Tensor) -> torch.Tensor:
    """Batch CLIP loss of each text option: image [B,D], texts [O,B,D] -> [O]."""
    logits = logit_scale * torch.einsum("bd,ocd->obc", image_features, text_options)   # [O,B,B]
    o, b, _ = logits.shape
    labels = torch.arange(b, device=logits.device).repeat(o)
    i2t = F.cross_entropy(logits.reshape(o * b, b), labels, reduction="none").view(o, b).mean(1)
    t2i = F.cross_entropy(logits.transpose(1, 2).reshape(o * b, b), labels, reduction="none").view(o, b).mean(1)
    return (i2t + t2i) / 2
