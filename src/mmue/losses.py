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
