"""A protection run from a dataset on disk to the protected copy: read and encode the data, run the engine
(resumable, under torchrun too), export the copy; several surrogates joined by ',' in stages, one run each."""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import torch

from .. import distributed
from ..data import read_pairs
from ..data.encoded import EncodedPairs
from ..data.images import bad_images
from ..data.types import DataError
from ..device import resolve_device
from ..fileio import atomic_write, atomic_write_json
from ..models import DEFAULT_MODEL, create_model, pretrained_tower_models
from ..quality import image_diffs
from ..runs import check_out_dir, versions
from .engine import MEMEngine
from .export import IMAGE_FORMATS, export
from .manifest import MANIFEST, PRIVATE, PUBLISH, README
from .registry import resolve
from .run import ProtectionRun
from .stages import (LATER_METHOD, STAGES_DIR, budget_shares, later_settings, merge_manifests, split_surrogates,
                     stage_folder)
from .store import ProtectionState
from .triggers import TriggerPolicy

log = logging.getLogger(__name__)


def protect(train_data: str | os.PathLike, out: str | os.PathLike, method: str = "mem-3", strength: str = "low",
            surrogate: str = DEFAULT_MODEL, surrogate_pretrained: str | None = None, device: str = "auto",
            resume: bool = False, overwrite: bool = False, csv_img_key: str | None = None,
            csv_caption_key: str | None = None, csv_separator: str | None = None, progress: bool = True,
            out_format: str = "files", skip_bad_images: bool = False, public: str | os.PathLike | None = None,
            image_format: str = "png", quality: int = 90, **settings) -> dict:
    """Protect the dataset ``train_data`` (CSV or WebDataset shards) into ``out``; returns the (private) manifest.

    The published copy goes to ``out/publish``, the key (seed, triggers) to ``out/private``. Without an explicit
    ``seed`` a secret one is drawn from the operating system. ``skip_bad_images``: leave out the images that
    cannot be read (listed under ``skipped`` in the manifest) instead of stopping at the first. ``public``: clean
    data of others (CSV) that the surrogate also trains on, as the model of a scraper who mixes the protected
    images into a larger set would; only ``train_data`` is protected and written.

    ``out_format``: ``files`` (images + CSV) or ``webdataset`` (tar shards); ``image_format``: ``png`` (lossless),
    ``jpeg`` or ``webp`` at ``quality`` (the manifest records the share of the noise that survived). ``settings``
    override the method/strength presets (library units: ``eps=8/255``, ``trigger_len=3``, ...). The preprocessed
    images, the int8 noise (both on disk, so RAM stays flat) and the round checkpoints live in ``out/.mmue_state``
    until the export has finished (``ProtectionRun``).

    ``surrogate``: one architecture; several joined by ``+`` optimise one noise against all of them; several joined
    by ``,`` protect in stages, one surrogate after the other, each within an even share of ``eps``
    (``protect.stages``; the stages' runs live in ``out/.mmue_stages`` until the last has finished).
    """
    run, source = ProtectionRun(out), Path(train_data)
    if image_format not in IMAGE_FORMATS or not 1 <= int(quality) <= 100:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)} and quality 1-100, got "
                         f"{image_format!r} and {quality!r}")
    if surrogate_pretrained and settings.get("surrogate_restart"):
        raise ValueError("--surrogate-restart starts each round from new random weights, which would drop "
                         "--surrogate-pretrained's: use one or the other")
    names = split_surrogates(surrogate)
    if len(names) > 1:
        if surrogate_pretrained:
            raise ValueError("--surrogate-pretrained takes one surrogate, not stages joined by ','")
        keys = {"csv_img_key": csv_img_key, "csv_caption_key": csv_caption_key, "csv_separator": csv_separator}
        return _protect_in_stages(source, Path(out), method, strength, names, device, resume, overwrite, keys,
                                  progress, {"out_format": out_format, "image_format": image_format,
                                             "quality": int(quality), "skip_bad_images": skip_bad_images,
                                             "public": str(public) if public is not None else None}, settings)
    if tuned_on_public_weights(surrogate, surrogate_pretrained):
        log.warning("the surrogate %s starts from pretrained weights: noise tuned against them makes your published "
                    "images easier to match with their captions for anyone who holds those weights, whether or not "
                    "they train on your copy (measured on one dataset: README, 'What has been measured'). Use it "
                    "only if a model fine-tuned from those weights learning your content is what you weigh most.",
                    surrogate_pretrained or surrogate)
    d, dev = distributed.setup(resolve_device(device))

    def new_params() -> dict:
        explicit = settings.get("seed") is not None
        # a seed nobody else knows: with a public one (0) anyone regenerates every trigger and deletes it exactly
        seed = settings["seed"] if explicit else secrets.randbits(62)
        cfg = resolve(method, strength, **{**settings, "seed": seed})
        return {"command": "protect", "train_data": str(source), "config": cfg.to_dict(), "strength": strength,
                "seed_source": "explicit: reproducible research, anyone who knows it can regenerate the triggers"
                               if explicit else "drawn from the operating system (secret: in private/ only)",
                "out_format": out_format, "image_format": image_format, "quality": int(quality),
                "skip_bad_images": skip_bad_images,
                "public": str(public) if public is not None else None, "surrogate": surrogate,
                "surrogate_pretrained": surrogate_pretrained,
                "device": dev.type, "world_size": d.world, "versions": versions()}
    prep = distributed.on_main(lambda: run.prepare(source, resume, overwrite, new_params() if not resume else {}))
    if "finished" in prep:
        log.info("%s is already finished", out)
        return prep["finished"]
    try:
        return _protect_locked(run, source, prep, d, dev, resume, csv_img_key, csv_caption_key, csv_separator,
                               progress)
    finally:
        distributed.on_main(run.unlock)


def tuned_on_public_weights(surrogate: str, surrogate_pretrained: str | None = None) -> bool:
    """Whether the noise is tuned against pretrained weights (given, or one of the shipped pretrained towers):
    weights others hold too, who can then match the published pairs more easily (the copy minimises their loss)."""
    towers = set(pretrained_tower_models())
    return bool(surrogate_pretrained) or any(n.strip() in towers for stage in split_surrogates(surrogate)
                                             for n in stage.split("+"))


def _protect_in_stages(source: Path, out: Path, method: str, strength: str, names: list[str], device: str,
                       resume: bool, overwrite: bool, keys: dict, progress: bool, output: dict, settings: dict) -> dict:
    """``protect`` with surrogates joined by ','. Each stage is a whole protection run in
    ``out/.mmue_stages/<i>-<surrogate>`` (resumable on its own): the first with ``method`` and the user's settings,
    the later ones with ``em`` on the previous stage's copy; then the last stage's ``publish/`` moves to
    ``out/publish`` and the copy's manifest (fidelity against the originals, every stage's settings) goes to
    ``out/private``. The plan (budget shares, settings) is fixed when the run starts, so a resumed run finishes it."""
    work, final, plan_file = out / STAGES_DIR, out / MANIFEST, out / STAGES_DIR / "plan.json"
    if resume and final.exists() and not work.exists():
        log.info("%s is already finished", out)
        return json.loads(final.read_text())
    distributed.setup(resolve_device(device))

    def start() -> dict:   # rank 0 checks the folder and fixes the plan; every rank gets it
        check_out_dir(out, resume, work.exists(), "protection", overwrite, source)
        if resume:
            return json.loads(plan_file.read_text())
        total = resolve(method, strength, **settings).eps_px
        new = {"train_data": str(source), "method": method, "strength": strength, "surrogates": names,
               "eps_px": total, "shares": budget_shares(total, len(names)), "settings": settings, **output}
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_file, new)
        return new
    plan = distributed.on_main(start)
    manifests, data, seed = [], source, plan["settings"].get("seed")
    for i, (name, share) in enumerate(zip(plan["surrogates"], plan["shares"])):
        first, last = i == 0, i == len(plan["shares"]) - 1
        folder = work / stage_folder(i, name)
        stage = ProtectionRun(folder)
        known = stage.started or stage.finished
        log.info("stage %d/%d: %s with surrogate %s within %d/255", i + 1, len(plan["shares"]),
                 plan["method"] if first else LATER_METHOD, name, share)
        m = protect(data, folder, plan["method"] if first else LATER_METHOD, plan["strength"], name,
                    device=device, resume=known, overwrite=not known and folder.exists(), progress=progress,
                    out_format=plan["out_format"] if last else "files",
                    image_format=plan["image_format"] if last else "png", quality=plan["quality"],
                    skip_bad_images=plan["skip_bad_images"] and first, public=plan["public"], **keys,
                    **({**plan["settings"], "eps": share / 255} if first else
                       later_settings(plan["settings"], share, seed)))
        manifests.append(m)
        data, seed = folder / m["data"], m["config"]["seed"]

    def finish() -> dict:
        moved = work / stage_folder(len(manifests) - 1, plan["surrogates"][-1]) / PUBLISH
        if moved.exists():
            shutil.rmtree(out / PUBLISH, ignore_errors=True)
            os.replace(moved, out / PUBLISH)
        originals = read_pairs(source, keys["csv_img_key"], keys["csv_caption_key"], keys["csv_separator"])
        index = {path: j for j, path in enumerate(originals.images)}
        columns = ((keys["csv_img_key"], keys["csv_caption_key"], keys["csv_separator"])
                   if plan["out_format"] == "files" else ())
        copy = read_pairs(out / manifests[-1]["data"], *columns)
        pairs = [(index[e["source"]], j) for j, e in enumerate(manifests[0]["images"])]
        fidelity = image_diffs(originals.open_image, copy.open_image, pairs)
        manifest = merge_manifests(manifests, plan["surrogates"], plan["train_data"], fidelity, plan["eps_px"] / 255)
        atomic_write(out / "README.txt", lambda tmp: tmp.write_text(README))
        (out / PRIVATE).mkdir(exist_ok=True)
        atomic_write_json(final, manifest)
        shutil.rmtree(work)
        log.info("wrote %d protected images to %s in %d stages (mean PSNR %.1f dB against the originals, L-inf %d)",
                 manifest["n_images"], out, len(manifests), manifest["mean_psnr_db"] or float("inf"),
                 manifest["max_linf_px"])
        return manifest
    return distributed.on_main(finish)


def _protect_locked(run: ProtectionRun, source: Path, prep: dict, d, dev, resume: bool, csv_img_key,
                    csv_caption_key, csv_separator, progress: bool) -> dict:
    """The protection itself, once ``run`` holds the output folder's lock."""
    params = {**prep["params"], "device": dev.type, "world_size": d.world}
    cfg = ProtectionRun.config(params)
    log.info("protect %s -> %s with %r%s", source, run.out, cfg, f" on {d.world} ranks" if d.enabled else "")

    pairs = read_pairs(source, csv_img_key, csv_caption_key, csv_separator)
    skipped = []
    if params.get("skip_bad_images"):
        skipped = bad_images(pairs, progress and d.is_main)
        if len(skipped) == pairs.n_images:
            raise DataError(f"{source}: none of the {pairs.n_images} images can be protected; first: "
                            f"{skipped[0]['error']}")
        for b in skipped:
            log.warning("skipped %s (rows %s): %s", b["source"], b["rows"], b["error"])
        gone = {b["index"] for b in skipped}
        pairs = pairs.subset([i for i in range(pairs.n_images) if i not in gone])
    distributed.on_main(lambda: run.pin_data(pairs))
    torch.manual_seed(cfg.seed)
    # "a+b": surrogates at several input sizes; the first (the largest) holds the noise grid and the triggers
    names = params["surrogate"].split("+")
    if params["surrogate_pretrained"] and len(names) > 1:
        raise ValueError("--surrogate-pretrained takes one surrogate, not several joined by '+'")
    model = create_model(names[0], pretrained=params["surrogate_pretrained"], device=dev)
    helpers = [create_model(name, device=dev) for name in names[1:]]
    built: dict = {}

    def encode(show: bool = False) -> EncodedPairs:  # rank 0 fills the on-disk image cache; the others open it
        built["data"] = EncodedPairs.build(pairs, model.image_size, model.codec.encode, show,
                                           run.state_dir / "images.u8", TriggerPolicy.needs_words_for(cfg), sizes=True)
        return built["data"]
    distributed.on_main(lambda: encode(progress) and None)   # nothing to broadcast: the cache is on disk
    data = built.get("data") or encode()
    public = None
    if params.get("public"):
        public_pairs = read_pairs(params["public"])

        def encode_public(show: bool = False) -> EncodedPairs:
            built["public"] = EncodedPairs.build(public_pairs, model.image_size, model.codec.encode, show,
                                                 run.state_dir / "public.u8", TriggerPolicy.needs_words_for(cfg))
            return built["public"]
        distributed.on_main(lambda: encode_public(progress) and None)
        public = built.get("public") or encode_public()
    engine = MEMEngine(model, data, cfg, dev, public=public, helpers=helpers)
    states: dict = {}

    def start() -> int:
        states["main"] = run.start_state(engine, resume)
        return states["main"].rounds_done
    rounds_done = distributed.on_main(start)
    state = states.get("main") or ProtectionState.attach(run.state_dir)
    run.restore(engine, rounds_done)
    engine.run(state, lambda st, stats: run.checkpoint(engine, st, stats), progress and d.is_main)
    gen_time = time.time() - run.t0

    def finish() -> dict:
        manifest = export(pairs, state, model.codec, run.out, cfg.eps_px,
                          {**params, "generation_s": round(gen_time, 1), "rounds_log": run.round_log(),
                           "skipped": [{k: v for k, v in b.items() if k != "index"} for b in skipped]},
                          progress, out_format=params.get("out_format", "files"), trigger_words=engine.trigger_words,
                          image_format=params.get("image_format", "png"), quality=params.get("quality", 90),
                          stretch=cfg.stretch)
        run.close()
        log.info("wrote %d protected images to %s (mean PSNR %.1f dB) in %.0fs", pairs.n_images, run.out,
                 manifest["mean_psnr_db"] or float("inf"), time.time() - run.t0)
        return manifest
    return distributed.on_main(finish)
