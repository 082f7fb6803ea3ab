"""Multi-step Error Minimization (MEM), as described in docs/method.md.

    for each round:
        train the surrogate CLIP on the currently protected data      (surrogate_steps steps)
        one shuffled pass over the images, per batch:
            text step  (first text_rounds rounds): HotFlip on the k trigger tokens
            image step: PGD on the noise, caption bodies shuffled within the batch, triggers kept

The variation points are parts, each a small object with its own test: the *trigger policy* (``triggers.py``:
vocabulary, placement, dropout), the *view* the surrogate sees of a noisy image during PGD (``views.py``:
identity, crop + flip, differentiable JPEG, resize, a random choice), the *gradient filter* applied before the
sign step (``filters.py``), the *noise parameterisation* (``noise.py``: per-image pixels), and the *framing*
(``framing.py``): what the trainer's resize leaves of the noise on a full-size photo (the identity for images at
the model's size). The engine has one path through each step.

Under torchrun, surrogate training is data parallel (DDP over slices of each global batch, features gathered)
and the data pass is sharded by image: each rank optimises the noise and triggers of its own images.

The engine reads no files and parses no flags: it takes a surrogate, encoded pairs and a ``ProtectConfig``,
and works on a ``ProtectionState`` (int8 noise + trigger ids) that the caller checkpoints and exports.

Efficient formulation: image features are constant during the text step and text features are
constant during the image step, so each is computed once per batch; all candidates of a trigger position go
through the text tower in one batched forward, and all shuffled texts of a PGD visit in another.
(The reference code's naive formulation, which recomputes both encoders everywhere, lives in
``benchmarks/naive_engine.py``; a test checks that both give the same noise and triggers.)
"""
from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..data.encoded import EncodedPairs
from ..device import autocast
from ..losses import clip_loss, clip_loss_options
from ..models import ClipModel, create_model
from ..optim import clip_train_step, make_optimizer
from ..seeding import generator, seed_of
from .adversary import worst_case
from .autoregressive import ar_coefficients, ar_noise
from .clusters import caption_clusters, caption_word_codes, cluster_targets
from .config import ProtectConfig
from .convolution import conv_filters, conv_noise
from .filters import balanced_sum, make_filter
from .framing import Framing
from .hotflip import greedy_rerank, hotflip_candidates
from .noise import ClusterNoise, PixelNoise, SharedNoise
from .pgd import apply_noise, random_noise
from .store import ProtectionState
from .triggers import TriggerPolicy
from .views import parse_view

log = logging.getLogger(__name__)


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


def in_batch_hits(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[image->text, text->image] top-1 hits of row i matching row i within one batch of paired features."""
    sim = image_features @ text_features.T
    labels = torch.arange(len(sim), device=sim.device)
    return torch.tensor([float((sim.argmax(1) == labels).sum()), float((sim.argmax(0) == labels).sum())],
                        dtype=torch.float64)


def at_size(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``pixels`` [B,3,S,S] as a model of input ``size`` sees them: an antialiased resize, as a trainer's."""
    if pixels.shape[-1] == size:
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class Helper:
    """A further surrogate, of another architecture or at a smaller input size (a trainer at another resolution):
    it trains beside the main one on the same batches, seen through ``at_size``, and its CLIP loss joins the main
    one's in the image step."""

    def __init__(self, model: ClipModel, cfg: ProtectConfig, device: torch.device):
        model.to(device)
        self.fwd = distributed.wrap_ddp(model, device)
        self.model = distributed.unwrap(self.fwd)
        self.optimizer = make_optimizer(self.model, cfg.surrogate_lr, cfg.surrogate_wd)

    @property
    def size(self) -> int:
        return self.model.image_size

    def __repr__(self) -> str:
        return f"Helper({self.model!r})"


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
    def __init__(self, surrogate: ClipModel, data: EncodedPairs, cfg: ProtectConfig, device: torch.device | str = "cpu",
                 public: EncodedPairs | None = None, helpers: tuple[ClipModel, ...] | list[ClipModel] = ()):
        self.model = surrogate
        self.data = data
        self.public = public   # clean data of others the surrogate also trains on (never protected)
        self.cfg = cfg.validate()
        if cfg.public_negatives and public is None:
            raise ValueError("public_negatives needs public clean data (mmue protect --public CSV)")
        self.device = torch.device(device)
        self.model.to(self.device)
        self.fwd = distributed.wrap_ddp(self.model, self.device)  # surrogate training is data parallel
        self.model = distributed.unwrap(self.fwd)
        self.dist = distributed.info()
        self.optimizer = make_optimizer(self.model, cfg.surrogate_lr, cfg.surrogate_wd)
        for h in helpers:   # the noise lives on the main surrogate's grid; the others see it resized, with its ids
            if h.image_size > surrogate.image_size or h.codec.context_length != surrogate.codec.context_length \
                    or h.codec.vocab_size != surrogate.codec.vocab_size:
                raise ValueError(f"surrogate {h.name} ({h.image_size} px) cannot help {surrogate.name} "
                                 f"({surrogate.image_size} px): list the largest input size first, and use one "
                                 "tokenizer and context length for all")
        self.helpers = [Helper(h, cfg, self.device) for h in helpers]
        self.triggers = TriggerPolicy.build(cfg, data, self.model.codec, public)
        self.view = parse_view(cfg.eot)
        self.surrogate_view = parse_view(cfg.surrogate_view)
        self.framing = Framing(data.sizes, data.images.shape[-1], cfg.stretch)
        self.grad_filter = make_filter(cfg.grad_blur, cfg.objective, cfg.noise_block, cfg.noise_tile, cfg.noise_colour)
        self.clusters = (caption_clusters(data.caption_bodies, data.image_captions, cfg.clusters, cfg.seed)
                         if cfg.share not in ("none", "words") or cfg.target == "cluster" or cfg.noise in ("ar", "conv")
                         else None)
        self.targets = cluster_targets(self.clusters, cfg.seed) if cfg.target == "cluster" else None
        if cfg.share == "words":
            codes = caption_word_codes(data.caption_bodies, data.image_captions, cfg.code_words,
                                       cfg.code_min_images, cfg.seed)
            self.noise = SharedNoise(cfg.eps_px, codes, cfg.noise_block)
        elif cfg.shares_noise:
            self.noise = ClusterNoise(cfg.eps_px, self.clusters, cfg.noise_block)
        else:
            self.noise = PixelNoise(cfg.eps_px)
        self._allowed = self.triggers.vocab.to(self.device) if self.triggers.vocab is not None else None
        self.trigger_words, self.trigger_at = self.triggers.placement(
            data.word_starts, len(data.caption_bodies), self.model.codec.context_length)

    def __repr__(self) -> str:
        return (f"MEMEngine({self.cfg!r}, surrogate={self.model!r}, images={self.data.n_images}, "
                + (f"public={self.public.n_images}, " if self.public is not None else "")
                + (f"helpers={self.helpers!r}, " if self.helpers else "")
                + f"{self.triggers!r}, view={self.view!r}, surrogate view={self.surrogate_view!r}, "
                + f"filter={self.grad_filter!r}, noise={self.noise!r}, "
                + f"{self.framing!r})")

    @property
    def surrogates(self) -> list[ClipModel]:
        """The main surrogate and its helpers."""
        return [self.model, *(h.model for h in self.helpers)]

    # ----------------------------------------------------------------------------------------- state
    def init_state(self, folder=None) -> ProtectionState:
        """Fresh state: noise in memory, or in ``folder`` on disk (flat RAM for large datasets)."""
        g = generator(self.cfg.seed, "initial noise and triggers")
        n, shape = self.data.n_images, tuple(self.data.images.shape[1:])
        state = ProtectionState(noise=ProtectionState.new_noise((n, *shape), folder),
                                triggers=torch.zeros((n, 0), dtype=torch.long))
        if self.cfg.shares_noise:
            self.noise.init(state, g, random=self.cfg.noise == "random")
            self.noise.write_all(state, self.data.images)
        elif self.cfg.noise in ("random", "ar", "conv"):
            k = int(self.clusters.max()) + 1 if self.clusters is not None else 0
            coeff = ar_coefficients(k, g, shape[-1]) if self.cfg.noise == "ar" else None
            kernels = conv_filters(k, g) if self.cfg.noise == "conv" else None
            for s in range(0, n, 1024):  # in chunks: the images may live on disk too
                x, c = self.data.images[s:s + 1024], (self.clusters[s:s + 1024] if k else None)
                if kernels is not None:
                    r = conv_noise(x, c, kernels, self.cfg.eps_px)
                elif coeff is not None:
                    r = ar_noise(c, coeff, tuple(x.shape), self.cfg.eps_px, g)
                else:
                    r = random_noise(tuple(x.shape), self.cfg.eps_px, g, self.cfg.noise_block, self.cfg.noise_tile)
                state.noise[s:s + len(x)] = (apply_noise(x, r).to(torch.int16) - x.to(torch.int16)).to(torch.int8)
        if self.cfg.shares_trigger:   # one draw per cluster, the same words for all its images
            state.triggers = self.triggers.initial(int(self.clusters.max()) + 1, g)[self.clusters]
        else:
            state.triggers = self.triggers.initial(n, g)
        return state

    # ----------------------------------------------------------------------------------------- batches
    def make_batch(self, index: torch.Tensor, g: torch.Generator, shard: bool = False, aim: bool = False,
                   plain: bool = False) -> Batch:
        """The batch of images ``index`` with one random caption each; ``shard``: only this rank's slice of
        that global batch (captions are drawn for all of it, so the generator stays in step on every rank).
        ``aim``: the captions the image step pulls the images toward (another cluster's, with ``target``).
        ``plain``: keep the captions without a trigger too (``Batch.plain``) whatever the configuration."""
        caps = self.data.sample_captions(self.targets[index] if aim and self.targets is not None else index, g)
        if shard:
            index, caps = self.dist.my_slice(index, caps)
        k, codec = self.cfg.trigger_len, self.model.codec
        bodies = [self.data.caption_bodies[c] for c in caps]
        at = [self.trigger_at[c] for c in caps]
        template = codec.rows(bodies, [[0] * k] * len(caps), at)
        untriggered = codec.rows(bodies).to(self.device) if self.cfg.drops_triggers or plain else None
        slots = torch.tensor(at, dtype=torch.long) + 1
        return Batch(index, self.data.images[index].to(self.device), template.to(self.device), k,
                     slots.to(self.device), untriggered)

    def _dropped(self, b: int, g: torch.Generator) -> torch.Tensor | None:
        return self.triggers.dropped(b, g, self.device)

    def _pixels(self, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        return self.framing(batch.x_u8.float() / 255, delta, batch.index)

    def _protected(self, state: ProtectionState, batch: Batch) -> torch.Tensor:
        """The protected images of ``batch`` as the trainer sees them (8-bit exact where framing is the identity)."""
        if self.framing.trivial:
            return self.noise.protected(state, batch.index, batch.x_u8)
        return self.framing(batch.x_u8.float() / 255, self.noise.delta(state, batch.index, self.device), batch.index)

    # ----------------------------------------------------------------------------------------- surrogate
    def train_surrogate(self, state: ProtectionState, g: torch.Generator) -> float:
        """Surrogate steps on the protected images (current noise and triggers). With ``public`` data, batches are
        drawn from both together, in proportion to their numbers (the mix a scraper trains on); public captions
        carry no trigger. Without it the random draws are those of the protected images alone."""
        losses = []
        n, pub = self.data.n_images, self.public
        n_pub = pub.n_images if pub is not None else 0
        bs = min(self.cfg.batch_size, n + n_pub)
        view_g = generator(self.cfg.seed, "surrogate view", state.rounds_done, self.dist.rank)
        for _ in range(self.cfg.surrogate_steps):
            idx = torch.randperm(n + n_pub, generator=g)[:bs]
            pixels, ids = [], []
            if (idx < n).any():
                batch = self.make_batch(idx[idx < n], g, shard=True)
                pixels.append(self._protected(state, batch))
                ids.append(batch.ids(state.triggers[batch.index].to(self.device),
                                     drop=self._dropped(len(batch.index), g)))
            if pub is not None:
                other = idx[idx >= n] - n
                caps = pub.sample_captions(other, g)
                other, caps = self.dist.my_slice(other, caps)
                pixels.append(pub.images[other].to(self.device).float() / 255)
                ids.append(self.model.codec.rows([pub.caption_bodies[c] for c in caps]).to(self.device))
                if sum(len(p) for p in pixels) < 2:   # a contrastive step needs two pairs
                    continue
            pixels, ids = torch.cat(pixels), torch.cat(ids)
            with torch.no_grad():   # its own draws: the ranks' slices may differ in size, ``g`` must stay in step
                pixels = self.surrogate_view(pixels, view_g)
            if self.cfg.adversary_eps:   # REM: adversarial training on the protected images
                pixels = pixels + self._adversary(pixels, ids, view_g)
            losses.append(clip_train_step(self.fwd, self.optimizer, pixels, ids, self.device))
            for h in self.helpers:
                clip_train_step(h.fwd, h.optimizer, at_size(pixels, h.size), ids, self.device)
        return sum(losses) / max(1, len(losses))

    def restart_surrogates(self, round_idx: int) -> None:
        """New weights for every surrogate, drawn from the run's seed and the round (the same on every rank), and
        new optimisers: the architecture's own initialisation (pretrained towers: their weights again, with new
        projections)."""
        for i, holder in enumerate([self, *self.helpers]):   # each holds .model and its .optimizer
            model = holder.model
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_of(self.cfg.seed, "surrogate restart", round_idx, i))
                fresh = create_model(model.name, model_cfg=model.model_cfg)
            model.clip.load_state_dict(fresh.clip.state_dict())
            holder.optimizer = make_optimizer(model, self.cfg.surrogate_lr, self.cfg.surrogate_wd)

    def _adversary(self, pixels: torch.Tensor, ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """REM's worst-case perturbation of a surrogate training batch (the network in eval mode, so that the
        ascent's forwards leave its batch-norm statistics alone)."""
        m, was = self.model, self.model.training
        with torch.no_grad(), autocast(self.device):
            txt = m.encode_text(ids).float()
        m.eval()
        try:
            with frozen(m):
                return worst_case(pixels, self._image_loss(txt, m.logit_scale.exp().detach()),
                                  self.cfg.adversary_eps, self.cfg.adversary_steps, g)
        finally:
            m.train(was)

    def _image_loss(self, txt: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The surrogate's CLIP loss of pixels against fixed text features, as a function of the pixels."""
        def loss(pixels: torch.Tensor) -> torch.Tensor:
            with autocast(self.device):
                return clip_loss(self.model.encode_image(pixels).float(), txt, scale)
        return loss

    # ----------------------------------------------------------------------------------------- text step
    def text_step(self, batch: Batch, delta: torch.Tensor, triggers: torch.Tensor) -> tuple[torch.Tensor, float]:
        m = self.model
        with torch.no_grad(), autocast(self.device):
            img_f = m.encode_image(self._pixels(batch, delta)).float()       # constant during the text step
        scale = m.logit_scale.exp().detach()
        ids = batch.ids(triggers)
        with frozen(m):
            emb = m.token_embedding(ids).detach().requires_grad_(True)
            loss = clip_loss(img_f, m.encode_text_embeds(emb, ids).float(), scale)
            (grad,) = torch.autograd.grad(loss, emb)
        cands = hotflip_candidates(batch.at_slots(grad), m.token_embedding.weight.detach(), self._allowed,
                                   self.cfg.candidates)
        return greedy_rerank(triggers, cands, self._options_loss(batch, delta, img_f, scale))

    def _options_loss(self, batch: Batch, delta: torch.Tensor, img_f: torch.Tensor, scale: torch.Tensor):
        """The exact batch loss of each trigger option [O,B,k] -> [O], all options in one text forward."""
        def batch_loss(options: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), autocast(self.device):
                txt = self.model.encode_text(batch.option_ids(options)).float()
            return clip_loss_options(img_f, txt.view(options.shape[0], len(batch.index), -1), scale)
        return batch_loss

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

    def public_features(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Image and text features of ``public_negatives`` clean public pairs (one caption each, no trigger), drawn
        afresh for each batch: the others' data the owner's pairs must stand apart from in the image step."""
        m, pub = self.cfg.public_negatives, self.public
        if not m or pub is None:
            return None
        idx = torch.randperm(pub.n_images, generator=g)[:m]
        caps = pub.sample_captions(idx, g)
        with torch.no_grad(), autocast(self.device):
            img = self.model.encode_image(pub.images[idx].to(self.device).float() / 255).float()
            txt = self.model.encode_text(
                self.model.codec.rows([pub.caption_bodies[c] for c in caps]).to(self.device)).float()
        return img, txt

    def image_step(self, batch: Batch, delta: torch.Tensor, triggers: torch.Tensor, g: torch.Generator,
                   state: ProtectionState | None = None,
                   negatives: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, float]:
        """PGD on the batch's noise. ``negatives``: fixed image and text features of other pairs, appended to the
        batch's in the contrastive loss (their own pairs included), so they compete in both directions."""
        m, cfg = self.model, self.cfg
        x = batch.x_u8.float() / 255
        rows = self._step_rows(batch, triggers, g)
        scale = m.logit_scale.exp().detach()
        loss = torch.tensor(float("nan"))
        # all texts of this visit in one forward; they do not depend on the noise
        with torch.no_grad(), autocast(self.device):
            all_rows = torch.cat(rows)
            txt = m.encode_text(all_rows).float()
            helper_txt = [h.model.encode_text(all_rows).float().view(len(rows), len(batch.index), -1)
                          for h in self.helpers]
        txt = txt.view(len(rows), len(batch.index), -1)
        with ExitStack() as stack:
            for model in self.surrogates:
                stack.enter_context(frozen(model))
            for s in range(cfg.pgd_steps):
                delta = delta.detach().requires_grad_(True)
                viewed = self.view(self.framing(x, delta, batch.index), g)
                t = txt[s % len(rows)]
                if cfg.adversary_eps:   # REM: the loss the noise minimises is the one at a worst-case neighbour
                    viewed = viewed + worst_case(viewed, self._image_loss(t, scale), cfg.adversary_eps,
                                                 cfg.adversary_steps, g)
                with autocast(self.device):
                    img_f = m.encode_image(viewed).float()
                if negatives is not None:
                    img_f, t = torch.cat([img_f, negatives[0]]), torch.cat([t, negatives[1]])
                losses = [clip_loss(img_f, t, scale)]
                for h, h_txt in zip(self.helpers, helper_txt):   # each surrogate's loss counts the same
                    with autocast(self.device):
                        h_img = h.model.encode_image(at_size(viewed, h.size)).float()
                    losses.append(clip_loss(h_img, h_txt[s % len(rows)], h.model.logit_scale.exp().detach()))
                loss = sum(losses) / len(losses)
                if cfg.ensemble == "balanced" and len(losses) > 1:
                    grad = balanced_sum([torch.autograd.grad(x, delta, retain_graph=i < len(losses) - 1)[0]
                                         for i, x in enumerate(losses)])
                else:
                    (grad,) = torch.autograd.grad(loss, delta)
                delta = self.noise.step(state, batch.index, delta.detach(), self.grad_filter(grad), cfg.alpha, x,
                                        cfg.eps)
        return delta.detach(), float(loss.detach())

    # ----------------------------------------------------------------------------------------- a round
    def batches(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Batches over ``images``; a last batch of one joins the previous one (a contrastive loss needs
        negatives, and every image must be optimised)."""
        bs = self.cfg.batch_size
        out = [images[s:s + bs] for s in range(0, len(images), bs)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2] = torch.cat([out[-2], out.pop()])
        return [b for b in out if len(b) > 1]

    def data_pass(self, state: ProtectionState, round_idx: int, g: torch.Generator, progress: bool = False
                  ) -> tuple[float, float, torch.Tensor, int]:
        """One shuffled pass over the images: text step and/or image step per batch. Under torchrun each rank
        takes every world-th image of the shuffled order (its own images) and the results are merged.
        Returns the mean text and image losses, how many times each image was optimised (all ranks), and how
        many images the text step gave another trigger (HotFlip may keep every trigger as it is)."""
        cfg, d = self.cfg, self.dist
        visits = torch.zeros(self.data.n_images, dtype=torch.int32)
        do_text = cfg.trigger_len > 0 and round_idx < cfg.text_rounds and not cfg.shares_trigger
        do_image = cfg.noise == "pgd" and cfg.pgd_steps > 0
        if not (do_text or do_image):
            return float("nan"), float("nan"), visits, 0
        was_training = self.model.training
        for model in self.surrogates:
            model.eval()   # no batch-norm statistics updates while optimising the data
        text_losses, image_losses, changed = [], [], 0
        mine = torch.randperm(self.data.n_images, generator=g)[d.rank::d.world]   # the same order on every rank
        g = generator(cfg.seed, "data pass", round_idx, d.rank)                  # this rank's own draws
        try:
            for idx in tqdm(self.batches(mine), desc=f"round {round_idx + 1} data", leave=False,
                            disable=None if progress and d.is_main else True):
                batch = self.make_batch(idx, g, aim=True)
                delta = self.noise.delta(state, idx, self.device)
                triggers = state.triggers[idx].to(self.device)
                if do_text:
                    before = triggers
                    triggers, tl = self.text_step(batch, delta, triggers)
                    text_losses.append(tl)
                    changed += int((triggers != before).any(1).sum())
                    state.triggers[idx] = triggers.cpu()
                if do_image:
                    delta, il = self.image_step(batch, delta, triggers, g, state, self.public_features(g))
                    image_losses.append(il)
                    self.noise.store(state, idx, batch.x_u8, delta)
                visits[idx] += 1
        finally:
            for model in self.surrogates:
                model.train(was_training)
        if d.enabled:
            self._merge_ranks(state, visits > 0, do_text, do_image)
            distributed.all_reduce_sum(visits)
        if do_image and state.patterns is not None:
            # patterns moved after their first images were written: every image gets its cluster's final one
            # (each rank writes the same values; in a shared disk file the rows agree)
            self.noise.write_all(state, self.data.images)
        losses = torch.tensor([sum(text_losses), len(text_losses), sum(image_losses), len(image_losses), changed],
                              dtype=torch.float64)
        distributed.all_reduce_sum(losses)
        mean = lambda total, n: total / n if n else float("nan")  # noqa: E731
        return (mean(losses[0].item(), losses[1].item()), mean(losses[2].item(), losses[3].item()), visits,
                int(losses[4].item()))

    def _merge_ranks(self, state: ProtectionState, mine: torch.Tensor, text: bool, image: bool) -> None:
        """Give every rank the triggers (and in-memory noise) that the others optimised. Noise in a
        ``DiskArray`` needs nothing: each rank wrote its own rows of the shared file."""
        if text:
            t = torch.where(mine[:, None], state.triggers, torch.zeros_like(state.triggers))
            state.triggers = distributed.all_reduce_sum(t)
        if image and state.patterns is not None:   # each rank stepped the shared patterns: their mean
            state.patterns = distributed.all_reduce_sum(state.patterns.clone()) / self.dist.world
        elif image and isinstance(state.noise, torch.Tensor):
            n = torch.where(mine[:, None, None, None], state.noise, torch.zeros_like(state.noise)).to(torch.int16)
            state.noise = distributed.all_reduce_sum(n).to(torch.int8)

    # ----------------------------------------------------------------------------------------- stopping
    def may_stop(self, round_idx: int) -> bool:
        """Whether round ``round_idx`` (0-based) checks the stop test: asked for, every text round done and at
        least one data pass behind it, and image noise to stop optimising."""
        cfg = self.cfg
        text = cfg.text_rounds if cfg.trigger_len and not cfg.shares_trigger else 0
        return cfg.stop_accuracy > 0 and cfg.noise == "pgd" and round_idx >= max(1, text)

    def fit_accuracy(self, state: ProtectionState, round_idx: int) -> tuple[float, float]:
        """How well the surrogate fits the protected data, and how well the same surrogate fits the clean data:
        its in-batch top-1 retrieval accuracy on the protected images with their published captions (trigger in
        place, one caption drawn per image), and on the same pairs as they were before protection (original
        images, captions without a trigger); each the lower of the two directions, over one pass in batches of
        ``batch_size``. A shortcut is a fit that the clean pairs do not share. Draws from its own generator, so
        a run that checks it optimises exactly what one that does not would."""
        g = generator(self.cfg.seed, "fit check", round_idx)
        was_training = self.model.training
        self.model.eval()
        hits, pairs = torch.zeros(2, 2, dtype=torch.float64), 0

        def count(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
            """Hits in the global batch (every rank's pairs gathered)."""
            return in_batch_hits(*distributed.gather_features(self.model.encode_image(img).float(),
                                                              self.model.encode_text(txt).float()))
        try:
            with torch.no_grad(), autocast(self.device):
                for idx in self.batches(torch.randperm(self.data.n_images, generator=g)):
                    batch = self.make_batch(idx, g, shard=True, plain=True)
                    hits[0] += count(self._protected(state, batch),
                                     batch.ids(state.triggers[batch.index].to(self.device)))
                    hits[1] += count(batch.x_u8.float() / 255, batch.plain)
                    pairs += len(idx)   # the global batch, every rank's slice of it counted above
        finally:
            self.model.train(was_training)
        fit = hits.min(dim=1).values / max(1, pairs)
        return float(fit[0]), float(fit[1])

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

        def finished(stats: dict) -> None:
            distributed.barrier()  # every rank's noise rows are written before rank 0 checkpoints them
            if on_round is not None:
                distributed.on_main(lambda: on_round(state, stats))
        for r in bar:
            g = generator(cfg.seed, "round", r)
            if cfg.surrogate_restart and r > 0:
                self.restart_surrogates(r)
            sl = self.train_surrogate(state, g)
            fit, clean_fit = self.fit_accuracy(state, r) if self.may_stop(r) else (None, None)
            if fit is not None and fit >= cfg.stop_accuracy:
                # the surrogate, trained on the data as it is, already retrieves it through the shortcut: later
                # rounds would only polish noise that is learned (the EM paper's stop test)
                state.rounds_done = last_round
                stats = {"round": r + 1, "surrogate_loss": sl, "fit_accuracy": round(fit, 4),
                         "clean_fit_accuracy": round(clean_fit, 4), "stopped": True,
                         "images_optimised": 0, "world_size": self.dist.world}
                log.info("round %d/%d: the surrogate retrieves %.1f %% of the protected pairs (stop at %.1f %%) and "
                         "%.1f %% of the same pairs clean (near the first: memorised, not a shortcut), stopping after "
                         "%d data passes", r + 1, last_round, 100 * fit, 100 * cfg.stop_accuracy, 100 * clean_fit, r)
                finished(stats)
                break
            tl, il, visits, changed = self.data_pass(state, r, g, progress)
            if visits.max() > 0 and not (visits.min() == visits.max() == 1):
                raise RuntimeError(f"round {r + 1}: images optimised {int(visits.min())}..{int(visits.max())} times "
                                   "instead of exactly once (a sharding bug); state not saved")
            state.rounds_done = r + 1
            stats = {"round": r + 1, "surrogate_loss": sl, "text_loss": tl, "image_loss": il,
                     "triggers_changed": changed if r < cfg.text_rounds and cfg.trigger_len else None,
                     "images_optimised": int((visits > 0).sum()), "world_size": self.dist.world,
                     **({"fit_accuracy": round(fit, 4), "clean_fit_accuracy": round(clean_fit, 4)}
                        if fit is not None else {})}
            bar.set_postfix(surrogate=_loss_text(sl, 3), text=_loss_text(tl, 3), image=_loss_text(il, 3))
            log.info("round %d/%d surrogate %s text %s image %s%s", r + 1, last_round, _loss_text(sl),
                     _loss_text(tl), _loss_text(il), f" triggers changed {changed}/{self.data.n_images}"
                     if stats["triggers_changed"] is not None else "")
            finished(stats)
        return state
