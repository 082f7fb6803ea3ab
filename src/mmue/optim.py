"""One CLIP optimisation step and its optimiser (AdamW, no decay on gains/biases/norms/logit scale, warm-up +
cosine), shared by victim training and the protection engine's surrogate."""
from __future__ import annotations

import math

import torch

from . import distributed
from .device import autocast
from .losses import clip_loss

MAX_LOGIT_SCALE = math.log(100.0)


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """No weight decay on gains, biases, norms and the logit scale (as open_clip and the reference)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, lr: float, wd: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, wd), lr=lr, betas=(0.9, 0.98), eps=1e-6)


def clip_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, ids: torch.Tensor,
                    device: torch.device) -> float:
    """One optimiser step on a batch; gradients are zeroed first (the reference forgets to).

    ``model`` may be DDP-wrapped: each rank then passes its slice of the global batch, and the loss is over
    the features gathered from all ranks (the same value on every rank, the single-process loss of the batch).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        img, txt, scale = model(pixels, ids)
    img, txt = distributed.gather_features(img.float(), txt.float())
    loss = clip_loss(img, txt, scale.float())
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        distributed.unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss.item()
