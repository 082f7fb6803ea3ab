"""Multi-step Error Minimization (MEM), as in shared/docs/method.md.

    for each round:
        train the surrogate CLIP on the currently protected data      (surrogate_steps steps)
        one shuffled pass over the images, per batch:
            text step  (first text_rounds rounds): HotFlip on the k trigger tokens
            image step: PGD on the noise, caption bodies shuffled within the batch, triggers kept

Robustness options (issue #5, off in the faithful presets): triggers at a random word boundary of each caption
instead of the prefix (``trigger_position``), captions seen without their trigger at a rate (``trigger_dropout``,
so the noise must carry the shortcut on its own), PGD through random crops and flips or a differentiable JPEG
(``eot``, see ``jpeg.py``), a Gaussian-smoothed PGD direction (``grad_blur``: low-frequency noise), trigger words
drawn only from the dataset's own frequent words (``trigger_vocab_min_images``, see ``vocab.py``).

Under torchrun, surrogate training is data parallel (DDP over slices of each global batch, features gathered)
and the data pass is sharded by image: each rank optimises the noise and triggers of its own images.

The engine reads no files and parses no flags: it takes a surrogate, encoded pairs and a ``ProtectConfig``,
and works on a ``ProtectionState`` (int8 noise + trigger ids) that the caller checkpoints and exports.

Efficient formulation (default): image features are constant during the text step and text features are
constant during the image step, so each is computed once per batch; all candidates of a trigger position go
through the text tower in one batched forward, and all shuffled texts of a PGD visit in another.
The ``naive`` formulation recomputes both encoders for every candidate and every PGD step, as the reference
code does; it exists for the benchmark and the equivalence test.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..data.encoded import EncodedPairs
from ..losses import clip_loss
from ..models import ClipModel
from ..train import autocast, clip_train_step, make_optimizer, rrc_flip
from .hotflip import greedy_rerank, hotflip_candidates
from .jpeg import diff_jpeg
from .methods import ProtectConfig
from .placement import trigger_positions
from .pgd import apply_noise, quantise, random_noise, sign_step
from .store import ProtectionState
from .vocab import dataset_vocab

log = logging.getLogger(__name__)


def clip_loss_options(image_features: torch.Tensor, text_options: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Batch CLIP loss of each text option: image [B,D], texts [O,B,D] -> [O]."""
    logits = logit_scale * torch.einsum("bd,ocd->obc", image_features, text_options)   # [O,B,B]
    o, b, _ = logits.shape
    labels = torch.arange(b, device=logits.device).repeat(o)
    i2t = F.cross_entropy(logits.reshape(o * b, b), labels, reduction="none").view(o, b).mean(1)
    t2i = F.cross_entropy(logits.transpose(1, 2).reshape(o * b, b), labels, reduction="none").view(o, b).mean(1)
    return (i2t + t2i) / 2


def _loss_text(x: float, digits: int = 4) -> str:
    """A loss for the log; a step that did not run this round (nan) shows as "-"."""
    return "-" if x != x else f"{x:.{digits}f}"


@contextmanager
def frozen(model: torch.nn.Module):
    """Weights without gradients while optimising the data (no graph kept for weight gradients)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class Batch:
    index: torch.Tensor        # image indices [B]
    x_u8: torch.Tensor         # clean images uint8 [B,3,S,S] (on device)
    template: torch.Tensor     # token rows [B,L] with k trigger slots left to fill
    k: int
    slots: torch.Tensor        # first trigger slot of each row [B] (1 for a prefix trigger)
    plain: torch.Tensor | None = None  # the same captions without a trigger [B,L] (for trigger dropout)

    def slot_index(self, order: torch.Tensor | None = None) -> torch.Tensor:
        """[B,k] token positions of the trigger in each row (rows permuted by ``order``)."""
        first = self.slots if order is None else self.slots[order]
        return first[:, None] + torch.arange(self.k, device=first.device)

    def ids(self, triggers: torch.Tensor, order: torch.Tensor | None = None, drop: torch.Tensor | None = None
            ) -> torch.Tensor:
        """Token rows: each row's own trigger, caption bodies optionally permuted by ``order``. Rows where
        ``drop`` is set carry the image's own caption without a trigger, never a shuffled one: that is the
        pair an attacker who strips triggers trains on, so there the noise must minimise the error alone."""
        rows = (self.template if order is None else self.template[order]).clone()
        if self.k:
            rows.scatter_(1, self.slot_index(order), triggers)
        if drop is not None:
            rows = torch.where(drop[:, None], self.plain, rows)
        return rows

    def option_ids(self, options: torch.Tensor) -> torch.Tensor:
        """[O,B,k] trigger options -> [O*B,L] token rows."""
        o = options.shape[0]
        rows = self.template.unsqueeze(0).repeat(o, 1, 1)
        rows.scatter_(2, self.slot_index().unsqueeze(0).expand(o, -1, -1), options)
        return rows.view(-1, rows.shape[-1])

    def at_slots(self, per_token: torch.Tensor) -> torch.Tensor:
        """[B,L,D] per-token values -> [B,k,D] at the trigger positions."""
        idx = self.slot_index().unsqueeze(-1).expand(-1, -1, per_token.shape[-1])
        return per_token.gather(1, idx)


class MEMEngine:
    def __init__(self, surrogate: ClipModel, data: EncodedPairs, cfg: ProtectConfig, device: torch.device | str = "cpu"):
        self.model = surrogate
        self.data = data
        self.cfg = cfg.validate()
        self.device = torch.device(device)
        self.model.to(self.device)
        self.fwd = distributed.wrap_ddp(self.model, self.device)  # surrogate training is data parallel
        self.model = distributed.unwrap(self.fwd)
        self.dist = distributed.info()
        self.optimizer = make_optimizer(self.model, cfg.surrogate_lr, cfg.surrogate_wd)
        self.vocab, self._allowed = None, None   # trigger word ids (CPU, for drawing) and on the device (HotFlip)
        if cfg.trigger_len:
            self.vocab = dataset_vocab(data.caption_bodies, data.word_starts, data.image_captions,
                                       self.model.codec.trigger_vocab, cfg.trigger_vocab_min_images)
            self._allowed = self.vocab.to(self.device)
        self.trigger_words, self.trigger_at = self._placement()

    def _placement(self) -> tuple[list[int], list[int]]:
        """Word index (for the published text) and token offset (for the model) of each caption's trigger."""
        cfg, n = self.cfg, len(self.data.caption_bodies)
        if cfg.trigger_position == "prefix" or not cfg.trigger_len:
            return [0] * n, [0] * n
        if self.data.word_starts is None:
            raise ValueError("trigger_position='random' needs word boundaries: build the data with "
                             "EncodedPairs.build(..., words=True)")
        words = trigger_positions(self.data.word_starts, cfg.trigger_len, self.model.codec.context_length,
                                  cfg.trigger_position, cfg.seed)
        return words, [starts[w] for starts, w in zip(self.data.word_starts, words)]

    def __repr__(self) -> str:
        return f"MEMEngine({self.cfg!r}, surrogate={self.model!r}, images={self.data.n_images})"

    # ----------------------------------------------------------------------------------------- state
    def init_state(self, folder=None) -> ProtectionState:
        """Fresh state: noise in memory, or in ``folder`` on disk (flat RAM for large datasets)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + 1)
        n, shape = self.data.n_images, tuple(self.data.images.shape[1:])
        noise = ProtectionState.new_noise((n, *shape), folder)
        if self.cfg.noise == "random":
            for s in range(0, n, 1024):  # in chunks: the images may live on disk too
                x = self.data.images[s:s + 1024]
                r = random_noise(tuple(x.shape), self.cfg.eps_px, g)
                noise[s:s + len(x)] = (apply_noise(x, r).to(torch.int16) - x.to(torch.int16)).to(torch.int8)
        k = self.cfg.trigger_len
        if k:
            triggers = self.vocab[torch.randint(len(self.vocab), (n, k), generator=g)]
        else:
            triggers = torch.zeros((n, 0), dtype=torch.long)
        return ProtectionState(noise=noise, triggers=triggers, rounds_done=0)

    # ----------------------------------------------------------------------------------------- batches
    def make_batch(self, index: torch.Tensor, g: torch.Generator, shard: bool = False) -> Batch:
        """The batch of images ``index`` with one random caption each; ``shard``: only this rank's slice of
        that global batch (captions are drawn for all of it, so the generator stays in step on every rank)."""
        caps = self.data.sample_captions(index, g)
        if shard and self.dist.enabled:
            keep = self.dist.shard(len(index) - len(index) % self.dist.world)
            index, caps = index[keep], caps[keep]
        k, codec = self.cfg.trigger_len, self.model.codec
        bodies = [self.data.caption_bodies[c] for c in caps]
        at = [self.trigger_at[c] for c in caps]
        template = codec.rows(bodies, [[0] * k] * len(caps), at)
        plain = codec.rows(bodies).to(self.device) if self.cfg.drops_triggers else None
        slots = torch.tensor(at, dtype=torch.long) + 1
        return Batch(index, self.data.images[index].to(self.device), template.to(self.device), k,
                     slots.to(self.device), plain)

    def _dropped(self, b: int, g: torch.Generator) -> torch.Tensor | None:
        """Which of ``b`` captions go without their trigger this time (None: trigger dropout is off)."""
        if not self.cfg.drops_triggers:
            return None
        return (torch.rand(b, generator=g) < self.cfg.trigger_dropout).to(self.device)

    def _pixels(self, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        return batch.x_u8.float() / 255 + delta

    # ----------------------------------------------------------------------------------------- surrogate
    def train_surrogate(self, state: ProtectionState, g: torch.Generator) -> float:
        losses = []
        n, bs = self.data.n_images, min(self.cfg.batch_size, self.data.n_images)
        for _ in range(self.cfg.surrogate_steps):
            idx = torch.randperm(n, generator=g)[:bs]
            batch = self.make_batch(idx, g, shard=True)
            idx = batch.index
            pixels = apply_noise(batch.x_u8, state.noise[idx].to(self.device)).float() / 255
            ids = batch.ids(state.triggers[idx].to(self.device), drop=self._dropped(len(idx), g))
            losses.append(clip_train_step(self.fwd, self.optimizer, pixels, ids, self.device))
        return sum(losses) / max(1, len(losses))

    # ----------------------------------------------------------------------------------------- text step
    def text_step(self, batch: Batch, delta: torch.Tensor, triggers: torch.Tensor) -> tuple[torch.Tensor, float]:
        m, cfg = self.model, self.cfg
        with torch.no_grad(), autocast(self.device):
            img_f = m.encode_image(self._pixels(batch, delta)).float()       # constant during the text step
        scale = m.logit_scale.exp().detach()
        ids = batch.ids(triggers)
        with frozen(m):
            emb = m.token_embedding(ids).detach().requires_grad_(True)
            loss = clip_loss(img_f, m.encode_text_embeds(emb, ids).float(), scale)
            (grad,) = torch.autograd.grad(loss, emb)
        cands = hotflip_candidates(batch.at_slots(grad), m.token_embedding.weight.detach(), self._allowed,
                                   cfg.candidates)

        if cfg.formulation == "efficient":
            def batch_loss(options: torch.Tensor) -> torch.Tensor:
                with torch.no_grad(), autocast(self.device):
                    txt = m.encode_text(batch.option_ids(options)).float()
                return clip_loss_options(img_f, txt.view(options.shape[0], len(batch.index), -1), scale)
        else:
            def batch_loss(options: torch.Tensor) -> torch.Tensor:
                out = []
                for opt in options:  # reference: both encoders again for every candidate
                    with torch.no_grad(), autocast(self.device):
                        i = m.encode_image(self._pixels(batch, delta)).float()
                        t = m.encode_text(batch.ids(opt), trim=False).float()
                    out.append(clip_loss(i, t, scale))
                return torch.stack(out)
        return greedy_rerank(triggers, cands, batch_loss)

    # ----------------------------------------------------------------------------------------- image step
    def _step_rows(self, batch: Batch, triggers: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """The token rows of each PGD step: caption bodies shuffled within the batch (triggers kept with their
        image), captions dropped to trigger-free at the configured rate. One entry when all steps are equal."""
        cfg, b = self.cfg, len(batch.index)
        if not (cfg.shuffle or cfg.drops_triggers):
            return [batch.ids(triggers)]
        rows = []
        for _ in range(cfg.pgd_steps):
            order = torch.randperm(b, generator=g).to(self.device) if cfg.shuffle else None
            rows.append(batch.ids(triggers, order, self._dropped(b, g)))
        return rows

    def _view(self, pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """What the surrogate sees of the noisy images in a PGD step: under ``eot``, a random crop + flip or a
        JPEG round trip at a quality drawn from 10..95."""
        if self.cfg.eot == "rrc-flip":
            return rrc_flip(pixels, g)
        if self.cfg.eot == "jpeg":
            return diff_jpeg(pixels, int(torch.randint(10, 96, (1,), generator=g)))
        return pixels

    def _smooth(self, grad: torch.Tensor) -> torch.Tensor:
        """The PGD direction, Gaussian-smoothed under ``grad_blur`` (translation-invariant attacks): the sign
        of a smooth gradient is spatially coherent noise, low-frequency enough to survive JPEG and resizing."""
        s = self.cfg.grad_blur
        if not s:
            return grad
        from torchvision.transforms.v2 import functional as TF
        return TF.gaussian_blur(grad, [2 * math.ceil(3 * s) + 1] * 2, [s, s])

    def image_step(self, batch: Batch, delta: torch.Tensor, triggers: torch.Tensor, g: torch.Generator
                   ) -> tuple[torch.Tensor, float]:
        m, cfg = self.model, self.cfg
        x = batch.x_u8.float() / 255
        rows = self._step_rows(batch, triggers, g)
        scale = m.logit_scale.exp().detach()
        loss = torch.tensor(float("nan"))
        if cfg.formulation == "efficient":
            # all texts of this visit in one forward; they do not depend on the noise
            with torch.no_grad(), autocast(self.device):
                txt = m.encode_text(torch.cat(rows)).float()
            txt = txt.view(len(rows), len(batch.index), -1)
            with frozen(m):
                for s in range(cfg.pgd_steps):
                    delta = delta.detach().requires_grad_(True)
                    with autocast(self.device):
                        img_f = m.encode_image(self._view(x + delta, g)).float()
                    loss = clip_loss(img_f, txt[s % len(rows)], scale)
                    (grad,) = torch.autograd.grad(loss, delta)
                    delta = sign_step(delta.detach(), self._smooth(grad), cfg.alpha, x, cfg.eps)
        else:
            for s in range(cfg.pgd_steps):  # reference: both encoders, with weight gradients, every step
                delta = delta.detach().requires_grad_(True)
                with autocast(self.device):
                    img_f = m.encode_image(self._view(x + delta, g))
                    txt_f = m.encode_text(rows[s % len(rows)], trim=False)
                    scale_ = m.logit_scale.exp()
                loss = clip_loss(img_f.float(), txt_f.float(), scale_.float().detach())
                m.zero_grad(set_to_none=True)
                loss.backward()
                delta = sign_step(delta.detach(), self._smooth(delta.grad), cfg.alpha, x, cfg.eps)
            m.zero_grad(set_to_none=True)
        return delta.detach(), float(loss.detach())

    # ----------------------------------------------------------------------------------------- a round
    def _batches(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Batches over ``images``; a last batch of one joins the previous one (a contrastive loss needs
        negatives, and every image must be optimised)."""
        bs = self.cfg.batch_size
        out = [images[s:s + bs] for s in range(0, len(images), bs)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2] = torch.cat([out[-2], out.pop()])
        return [b for b in out if len(b) > 1]

    def data_pass(self, state: ProtectionState, round_idx: int, g: torch.Generator, progress: bool = False
                  ) -> tuple[float, float, torch.Tensor]:
        """One shuffled pass over the images: text step and/or image step per batch. Under torchrun each rank
        takes every world-th image of the shuffled order (its own images) and the results are merged.
        Returns the mean text and image losses and how many times each image was optimised (all ranks)."""
        cfg, d = self.cfg, self.dist
        visits = torch.zeros(self.data.n_images, dtype=torch.int32)
        do_text = cfg.trigger_len > 0 and round_idx < cfg.text_rounds
        do_image = cfg.noise == "pgd" and cfg.pgd_steps > 0
        if not (do_text or do_image):
            return float("nan"), float("nan"), visits
        was_training = self.model.training
        self.model.eval()  # no batch-norm statistics updates while optimising the data
        text_losses, image_losses = [], []
        mine = torch.randperm(self.data.n_images, generator=g)[d.rank::d.world]
        g = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=g)) + d.rank)
        try:
            for idx in tqdm(self._batches(mine), desc=f"round {round_idx + 1} data", leave=False,
                            disable=None if progress and d.is_main else True):
                batch = self.make_batch(idx, g)
                delta = state.noise[idx].to(self.device).float() / 255
                triggers = state.triggers[idx].to(self.device)
                if do_text:
                    triggers, tl = self.text_step(batch, delta, triggers)
                    text_losses.append(tl)
                    state.triggers[idx] = triggers.cpu()
                if do_image:
                    delta, il = self.image_step(batch, delta, triggers, g)
                    image_losses.append(il)
                    state.noise[idx] = quantise(batch.x_u8, delta, cfg.eps_px).cpu()
                visits[idx] += 1
        finally:
            self.model.train(was_training)
        if d.enabled:
            self._merge_ranks(state, visits > 0, do_text, do_image)
            distributed.all_reduce_sum(visits)
        losses = torch.tensor([sum(text_losses), len(text_losses), sum(image_losses), len(image_losses)],
                              dtype=torch.float64)
        distributed.all_reduce_sum(losses)
        mean = lambda total, n: total / n if n else float("nan")  # noqa: E731
        return mean(losses[0].item(), losses[1].item()), mean(losses[2].item(), losses[3].item()), visits

    def _merge_ranks(self, state: ProtectionState, mine: torch.Tensor, text: bool, image: bool) -> None:
        """Give every rank the triggers (and in-memory noise) that the others optimised. Noise in a
        ``DiskArray`` needs nothing: each rank wrote its own rows of the shared file."""
        if text:
            t = torch.where(mine[:, None], state.triggers, torch.zeros_like(state.triggers))
            state.triggers = distributed.all_reduce_sum(t)
        if image and isinstance(state.noise, torch.Tensor):
            n = torch.where(mine[:, None, None, None], state.noise, torch.zeros_like(state.noise)).to(torch.int16)
            state.noise = distributed.all_reduce_sum(n).to(torch.int8)

    def run(self, state: ProtectionState, on_round: Callable[[ProtectionState, dict], None] | None = None,
            progress: bool = True) -> ProtectionState:
        """Run the remaining rounds of ``state``; ``on_round`` is called after each (checkpointing)."""
        cfg = self.cfg
        if not cfg.optimises:
            return state
        # without image noise, rounds after the last text step would only train the surrogate: skip them
        last_round = cfg.rounds if cfg.noise == "pgd" else min(cfg.rounds, cfg.text_rounds)
        bar = tqdm(range(state.rounds_done, last_round), desc="protect", initial=state.rounds_done, total=last_round,
                   disable=None if progress and self.dist.is_main else True)
        for r in bar:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r)
            sl = self.train_surrogate(state, g)
            tl, il, visits = self.data_pass(state, r, g, progress)
            if visits.max() > 0 and not (visits.min() == visits.max() == 1):
                raise RuntimeError(f"round {r + 1}: images optimised {int(visits.min())}..{int(visits.max())} times "
                                   "instead of exactly once (a sharding bug); state not saved")
            state.rounds_done = r + 1
            stats = {"round": r + 1, "surrogate_loss": sl, "text_loss": tl, "image_loss": il,
                     "images_optimised": int((visits > 0).sum()), "world_size": self.dist.world}
            bar.set_postfix(surrogate=_loss_text(sl, 3), text=_loss_text(tl, 3), image=_loss_text(il, 3))
            log.info("round %d/%d surrogate %s text %s image %s", r + 1, last_round,
                     _loss_text(sl), _loss_text(tl), _loss_text(il))
            distributed.barrier()  # every rank's noise rows are written before rank 0 checkpoints them
            if on_round is not None:
                distributed.on_main(lambda: on_round(state, stats))
        return state
