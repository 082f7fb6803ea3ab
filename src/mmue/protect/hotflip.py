"""HotFlip for the text trigger: a first-order candidate scorer (pure) and the exact-loss re-ranking.

The scorer ranks replacement tokens by -g·e (the linear estimate of the loss change when the embedding at a
trigger position is swapped for e; the current token's term is constant per position). Re-ranking then
evaluates the real loss of the best few, position by position (greedy, beam 1), as in the reference.
"""
from __future__ import annotations

from typing import Callable

import torch


def hotflip_candidates(grad: torch.Tensor, embedding: torch.Tensor, allowed: torch.Tensor, top_c: int) -> torch.Tensor:
    """Token ids [B,k,top_c] with the most negative first-order loss change.

    grad: dLoss/d(embedding) at the trigger positions [B,k,D]; embedding: the vocabulary matrix [V,D];
    allowed: ids a trigger may use [A].
    """
    scores = -(grad.float() @ embedding[allowed].float().T)          # [B,k,A]
    idx = scores.topk(min(top_c, allowed.numel()), dim=-1).indices
    return allowed.to(idx.device)[idx]


def trigger_options(triggers: torch.Tensor, candidates: torch.Tensor, position: int) -> torch.Tensor:
    """[C+1,B,k]: option 0 keeps the triggers, option c+1 puts candidate rank c (per sample) at ``position``."""
    c = candidates.shape[-1]
    opts = triggers.unsqueeze(0).repeat(c + 1, 1, 1)
    opts[1:, :, position] = candidates[:, position, :].T
    return opts


def greedy_rerank(triggers: torch.Tensor, candidates: torch.Tensor,
                  batch_loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Position by position, keep the option (current or a candidate rank) with the lowest exact batch loss.

    ``batch_loss`` maps options [O,B,k] to their batch losses [O]. Returns the new triggers and their loss.
    """
    best_loss = None
    for j in range(triggers.shape[1]):
        opts = trigger_options(triggers, candidates, j)
        losses = batch_loss(opts)
        pick = int(losses.argmin())
        triggers = opts[pick]
        best_loss = float(losses[pick])
    return triggers, best_loss
