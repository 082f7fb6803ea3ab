"""The reference code's naive MEM formulation, kept outside the library for the speed benchmark and the
equivalence test: both encoders (with weight gradients) are recomputed for every PGD step and every HotFlip
candidate. ``NaiveMEMEngine`` gives the same noise and triggers as ``MEMEngine``, only slower.
"""
from __future__ import annotations

import torch

from mmue.device import autocast
from mmue.losses import clip_loss
from mmue.protect import MEMEngine
from mmue.protect.pgd import sign_step


class NaiveMEMEngine(MEMEngine):
    def _options_loss(self, batch, delta, img_f, scale):
        m = self.model

        def batch_loss(options: torch.Tensor) -> torch.Tensor:
            out = []
            for opt in options:  # both encoders again for every candidate
                with torch.no_grad(), autocast(self.device):
                    i = m.encode_image(self._pixels(batch, delta)).float()
                    t = m.encode_text(batch.ids(opt), trim=False).float()
                out.append(clip_loss(i, t, scale))
            return torch.stack(out)
        return batch_loss

    def image_step(self, batch, delta, triggers, g, state=None, negatives=None):
        if negatives is not None:
            raise NotImplementedError("the naive reference has no public negatives")
        m, cfg = self.model, self.cfg
        x = batch.x_u8.float() / 255
        rows = self._step_rows(batch, triggers, g)
        loss = torch.tensor(float("nan"))
        for s in range(cfg.pgd_steps):  # both encoders, with weight gradients, every step
            delta = delta.detach().requires_grad_(True)
            with autocast(self.device):
                img_f = m.encode_image(self.view(x + delta, g))
                txt_f = m.encode_text(rows[s % len(rows)], trim=False)
                scale = m.logit_scale.exp()
            loss = clip_loss(img_f.float(), txt_f.float(), scale.float().detach())
            m.zero_grad(set_to_none=True)
            loss.backward()
            delta = sign_step(delta.detach(), self.grad_filter(delta.grad), cfg.alpha, x, cfg.eps)
        m.zero_grad(set_to_none=True)
        return delta.detach(), float(loss.detach())
