"""Fit a CLIP on image-caption pairs: symmetric InfoNCE, AdamW, warmup + cosine, clamped logit scale;
``train_run`` from a CSV on disk to a run directory.

One epoch is one pass over the *images* in a seeded random order, each paired with one of its captions drawn
at random (so an image never meets itself as a negative). Checkpoints are written atomically after every
epoch, so ``resume=True`` continues a killed run from its last finished epoch with the same data order.
Under torchrun every rank trains on its slice of each global batch (DDP); rank 0 evaluates and writes.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from . import distributed
from .data import read_pairs
from .data.encoded import EncodedPairs
from .data.images import to_float
from .augment import crop_scale, random_resized_crop, rrc_flip, rrc_flip_whole
from .device import autocast, resolve_device
from .metrics import mean_recall, retrieval_metrics
from .models import DEFAULT_MODEL, ClipModel, create_model, save_model
from .optim import clip_train_step, lr_at, make_optimizer
from .fileio import atomic_torch_save, atomic_write_json
from .runs import RunDir, versions
from .seeding import generator
from .train_config import TrainConfig

log = logging.getLogger(__name__)


WHOLE_SCALE = 2   # rrc-whole reads crops from the whole photo squashed to this many times the model's size


# How a scraper fine-tunes public pretrained towers (``mmue-effl0-minilm``): a few epochs at a fifth of the
# from-scratch learning rate, so the pretrained features are adapted, not overwritten (the recipe of the fine-tune
# threat model measured in docs/results.md)
FINETUNE_RECIPE = {"epochs": 8, "lr": 2e-4, "warmup": 30}


@torch.no_grad()
def encode_all(model: ClipModel, data: EncodedPairs, device: torch.device, batch_size: int = 256,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        img_feats, txt_feats = [], []
        for s in tqdm(range(0, data.n_images, batch_size), desc="encode images", disable=None if progress else True,
                      leave=False):
            with autocast(device):
                # uint8 over the bus, float on the device: a quarter of the transfer
                img_feats.append(model.encode_image(to_float(data.images[s:s + batch_size].to(device))).float())
        bodies = data.caption_bodies
        for s in range(0, len(bodies), batch_size):
            ids = model.codec.rows(bodies[s:s + batch_size]).to(device)
            with autocast(device):
                txt_feats.append(model.encode_text(ids).float())
        return torch.cat(img_feats), torch.cat(txt_feats)
    finally:
        model.train(was_training)


def evaluate(model: ClipModel, data: EncodedPairs, device: torch.device | str = "cpu", batch_size: int = 256,
             progress: bool = False) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``data`` (clean captions, no trigger)."""
    device = torch.device(device)
    img, txt = encode_all(model, data, device, batch_size, progress)
    return retrieval_metrics(img, txt, data.caption_image)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The image order of an epoch: a permutation seeded by (seed, epoch); the last partial batch is dropped
    when the data holds at least one full batch (open_clip does the same)."""
    perm = torch.randperm(n, generator=generator(seed, "batch order", epoch))
    bs = min(batch_size, n)
    return [perm[s:s + bs] for s in range(0, n - bs + 1, bs)]


def train_clip(model: ClipModel, train: EncodedPairs, cfg: TrainConfig, run: RunDir,
               val: EncodedPairs | None = None, device: torch.device | str = "cpu", resume: bool = False,
               progress: bool = True) -> dict:
    """Train ``model`` in place, writing checkpoints and per-epoch results into ``run``. Returns the summary."""
    cfg.validate()
    device = torch.device(device)
    d = distributed.info()
    model.to(device)
    fwd = distributed.wrap_ddp(model, device)   # the same ``model`` underneath; DDP when under torchrun
    model = distributed.unwrap(fwd)
    optimizer = make_optimizer(model, cfg.lr, cfg.wd)
    steps_per_epoch = len(epoch_batches(train.n_images, cfg.batch_size, cfg.seed, 0))
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, best = 0, {"epoch": None, "score": float("-inf")}
    state_path = run.checkpoints / "state.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        from safetensors.torch import load_file
        model.clip.load_state_dict(load_file(str(run.checkpoints / "last.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        best = {"epoch": state["best_epoch"], "score": float(state["best_score"])}
        if d.is_main:
            run.truncate_results(start_epoch)
        log.info("resuming %s after epoch %d", run.path, start_epoch)
    show = progress and d.is_main
    if val is not None and start_epoch == 0 and d.is_main:
        # recall before any training: the baseline of the learning gain (matters for pretrained towers)
        init = evaluate(model, val, device, cfg.eval_batch_size)
        atomic_write_json(run.path / "init_metrics.json", init)
        log.info("before training: val i2t R@1 %.1f%% t2i R@1 %.1f%%", 100 * init["image_to_text_R@1"],
                 100 * init["text_to_image_R@1"])
    t0 = time.time()
    crop = crop_scale(cfg.augment)   # crop-S: the smallest share of the area a crop keeps
    for epoch in range(start_epoch, cfg.epochs):
        g = generator(cfg.seed, "captions", epoch)                 # the same on every rank
        g_aug = generator(cfg.seed, "augmentation", epoch, d.rank)  # each rank crops its own slice
        batches = epoch_batches(train.n_images, cfg.batch_size, cfg.seed, epoch)
        losses = []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if show else True, leave=False)
        for i, idx in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg.lr, cfg.warmup, total_steps)
            caps = train.sample_captions(idx, g)
            idx, caps = d.my_slice(idx, caps)
            if cfg.augment == "rrc-flip":
                pixels = rrc_flip(to_float(train.images[idx]), g_aug).to(device, non_blocking=True)
            elif crop is not None:
                pixels = random_resized_crop(to_float(train.images[idx]), g_aug, (crop, 1.0),
                                             bicubic=True).to(device, non_blocking=True)
            elif cfg.augment == "rrc-whole":
                pixels = rrc_flip_whole(to_float(train.images[idx]), train.sizes[idx], g_aug,
                                        model.image_size).to(device, non_blocking=True)
            else:  # uint8 over the bus, float on the device: a quarter of the transfer
                pixels = to_float(train.images[idx].to(device, non_blocking=True))
            ids = model.codec.rows([train.caption_bodies[c] for c in caps]).to(device)
            losses.append(clip_train_step(fwd, optimizer, pixels, ids, device))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if d.is_main:  # one rank evaluates and writes; the others wait at the barrier
            record = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                      "lr": optimizer.param_groups[0]["lr"], "logit_scale": model.logit_scale.exp().item(),
                      "elapsed_s": round(time.time() - t0, 1)}
            if val is not None:
                metrics = evaluate(model, val, device, cfg.eval_batch_size)
                record.update({f"val/{k}": v for k, v in metrics.items()})
                score = mean_recall(metrics)
            else:
                score = -record["train_loss"]
            save_model(model, run.checkpoints, "last")
            if score > best["score"]:
                best = {"epoch": epoch + 1, "score": score}
                save_model(model, run.checkpoints, "best")
            atomic_torch_save({"optimizer": optimizer.state_dict(), "epoch": epoch + 1, "best_epoch": best["epoch"],
                               "best_score": best["score"]}, state_path)
            run.append_result(record)
            msg = f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f}"
            if val is not None:
                msg += (f" val i2t R@1 {100 * record['val/image_to_text_R@1']:.1f}%"
                        f" t2i R@1 {100 * record['val/text_to_image_R@1']:.1f}%")
            log.info(msg)
        distributed.barrier()
    best = distributed.on_main(lambda: best)
    results = run.results()
    summary = {"epochs": cfg.epochs, "best_epoch": best["epoch"], "last": results[-1] if results else None,
               "best": next((r for r in results if r["epoch"] == best["epoch"]), None)}
    if d.is_main:
        atomic_write_json(run.path / "summary.json", summary)
    return summary


def load_encoded(csv_path, model, img_key=None, caption_key=None, separator=None, whole_scale: int = 0
                 ) -> EncodedPairs:
    """A CSV (or shards) encoded for ``model``'s input size and tokenizer. ``whole_scale``: each image whole,
    squashed to that many times the model's size, with its native size (the source of ``rrc-whole`` crops),
    instead of the model's centre crop."""
    pairs = read_pairs(csv_path, img_key, caption_key, separator)
    if whole_scale:
        return EncodedPairs.build(pairs, whole_scale * model.image_size, model.codec.encode, fit="squash")
    return EncodedPairs.build(pairs, model.image_size, model.codec.encode)


def train_run(train_data: str | os.PathLike, out: str | os.PathLike, model: str = DEFAULT_MODEL,
              pretrained: str | None = None, val_data: str | os.PathLike | None = None,
              config: TrainConfig | None = None, device: str = "auto", resume: bool = False,
              csv_img_key: str | None = None, csv_caption_key: str | None = None, csv_separator: str | None = None,
              progress: bool = True, record: dict | None = None) -> dict:
    """Train a CLIP on ``train_data`` into run directory ``out``; returns the summary (best and last epoch).
    ``record``: more facts for ``params.json`` (the caller's, e.g. what the data held)."""
    config = (config or TrainConfig()).validate()
    d, dev = distributed.setup(resolve_device(device))
    params = {"command": "train", "world_size": d.world, "train_data": str(train_data),
              "val_data": str(val_data) if val_data else None,
              "model": model, "pretrained": pretrained, "device": str(dev), **asdict(config),
              "csv_img_key": csv_img_key, "csv_caption_key": csv_caption_key, "versions": versions(), **(record or {})}
    distributed.on_main(lambda: RunDir.open(out, params, resume, kind="training run"))
    run = RunDir(out)
    if resume:  # the stored parameters win, so a resumed run is the run that was started
        stored = run.params()
        config = TrainConfig(**{k: stored[k] for k in asdict(config)})
        model, pretrained = stored["model"], stored["pretrained"]
    try:
        torch.manual_seed(config.seed)
        net = create_model(model, pretrained=pretrained, device=dev)
        log.info("model %r on %s", net, dev)
        keys = dict(img_key=csv_img_key, caption_key=csv_caption_key, separator=csv_separator)
        train_set = load_encoded(train_data, net, **keys,
                                 whole_scale=WHOLE_SCALE if config.augment == "rrc-whole" else 0)
        val_set = load_encoded(val_data, net, **keys) if val_data else None
        log.info("train: %d images, %d captions", train_set.n_images, len(train_set.caption_bodies))
        return train_clip(net, train_set, config, run, val_set, dev, resume, progress)
    finally:
        run.close()
        distributed.barrier()
