"""The public Python API: every CLI subcommand is one call here."""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import __version__, distributed
from .data import read_pairs, write_synth
from .data.encoded import EncodedPairs
from .metrics import random_guess
from .models import DEFAULT_MODEL, create_model, load_model, save_model
from .protect import MEMEngine, ProtectionState, resolve
from .protect.export import export
from .runs import RunDir, atomic_torch_save, atomic_write_text
from .train import TrainConfig, evaluate, resolve_device, train_clip

log = logging.getLogger(__name__)


def versions() -> dict:
    import open_clip
    return {"mmue": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def synth(out_dir: str | os.PathLike, n_train: int = 2000, n_test: int = 1000, captions_per_image: int = 5,
          image_size: int = 64, seed: int = 0) -> dict[str, Path]:
    return write_synth(out_dir, n_train, n_test, captions_per_image, image_size, seed)


def load_encoded(csv_path, model, img_key=None, caption_key=None, separator=None) -> EncodedPairs:
    pairs = read_pairs(csv_path, img_key, caption_key, separator)
    return EncodedPairs.build(pairs, model.image_size, model.codec.encode)


def train(train_data: str | os.PathLike, out: str | os.PathLike, model: str = DEFAULT_MODEL,
          pretrained: str | None = None, val_data: str | os.PathLike | None = None,
          config: TrainConfig | None = None, device: str = "auto", resume: bool = False,
          csv_img_key: str | None = None, csv_caption_key: str | None = None, csv_separator: str | None = None,
          progress: bool = True) -> dict:
    """Train a CLIP on ``train_data`` into run directory ``out``; returns the summary (best and last epoch)."""
    config = (config or TrainConfig()).validate()
    d, dev = distributed.setup(resolve_device(device))
    params = {"command": "train", "world_size": d.world, "train_data": str(train_data), "val_data": str(val_data) if val_data else None,
              "model": model, "pretrained": pretrained, "device": str(dev), **asdict(config),
              "csv_img_key": csv_img_key, "csv_caption_key": csv_caption_key, "versions": versions()}
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
        train_set = load_encoded(train_data, net, **keys)
        val_set = load_encoded(val_data, net, **keys) if val_data else None
        log.info("train: %d images, %d captions", train_set.n_images, len(train_set.caption_bodies))
        return train_clip(net, train_set, config, run, val_set, dev, resume, progress)
    finally:
        run.close()
        distributed.barrier()


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, which: str = "best",
                        device: str = "auto", batch_size: int = 256, csv_img_key: str | None = None,
                        csv_caption_key: str | None = None, csv_separator: str | None = None) -> dict:
    """Retrieval metrics of a trained model on a CSV, plus the random-guess level under ``random_guess``."""
    dev = resolve_device(device)
    net = load_model(checkpoint, dev, which=which)
    enc = load_encoded(data, net, csv_img_key, csv_caption_key, csv_separator)
    metrics = evaluate(net, enc, dev, batch_size, progress=True)
    metrics["random_guess"] = random_guess(enc.caption_image, enc.n_images)
    return metrics


STATE_DIR = ".mmue_state"


def _check_output_dir(out: Path, source_csv: Path, resume: bool, overwrite: bool) -> None:
    src = source_csv.resolve().parent
    o = out.resolve()
    if o == src or o in src.parents:
        raise ValueError(f"--out {out} contains the input data ({source_csv}); originals are never modified: "
                         "choose an output folder outside it")
    if resume:
        if not (out / STATE_DIR / "params.json").exists() and not (out / "manifest.json").exists():
            raise ValueError(f"{out}: nothing to resume; drop --resume to start")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} already exists; pass --resume to continue an interrupted run "
                             "or --overwrite to replace it")
        shutil.rmtree(out)


def protect(train_data: str | os.PathLike, out: str | os.PathLike, method: str = "mem", strength: str = "high",
            surrogate: str = DEFAULT_MODEL, surrogate_pretrained: str | None = None, device: str = "auto",
            resume: bool = False, overwrite: bool = False, csv_img_key: str | None = None,
            csv_caption_key: str | None = None, csv_separator: str | None = None, progress: bool = True,
            out_format: str = "files", **settings) -> dict:
    """Protect the dataset ``train_data`` (CSV or WebDataset shards) into ``out``; returns the manifest.

    ``out_format``: ``files`` (PNGs + CSV) or ``webdataset`` (tar shards). ``settings`` override the
    method/strength presets (library units: ``eps=8/255``, ``trigger_len=3``, ...). The preprocessed images,
    the int8 noise (both on disk, so RAM stays flat) and the round checkpoints live in ``out/.mmue_state``
    until the export has finished.
    """
    out = Path(out)
    source = Path(train_data)
    state_dir = out / STATE_DIR
    d, dev = distributed.setup(resolve_device(device))

    def prepare() -> dict:  # rank 0 checks the folders and records the run; every rank gets the outcome
        _check_output_dir(out, source, resume, overwrite)
        if resume and (out / "manifest.json").exists() and not state_dir.exists():
            return {"finished": json.loads((out / "manifest.json").read_text())}
        if resume:  # the stored parameters win, so a resumed run finishes the run that was started
            stored = json.loads((state_dir / "params.json").read_text())
            if Path(stored["train_data"]).resolve() != source.resolve():
                raise ValueError(f"{out} protects {stored['train_data']}, not {source}; "
                                 "resume with the same --train-data")
            return {"params": {**stored, "device": dev.type, "world_size": d.world}}
        cfg = resolve(method, strength, **settings)
        params = {"command": "protect", "train_data": str(source), "config": cfg.to_dict(), "strength": strength,
                  "out_format": out_format, "surrogate": surrogate, "surrogate_pretrained": surrogate_pretrained,
                  "device": dev.type, "world_size": d.world, "versions": versions()}
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_dir / "params.json", json.dumps(params, indent=2))
        return {"params": params}

    prep = distributed.on_main(prepare)
    if "finished" in prep:
        log.info("%s is already finished", out)
        return prep["finished"]
    params = prep["params"]
    cfg = resolve(params["config"]["method"], "high",
                  **{k: v for k, v in params["config"].items() if k not in ("method", "eps_px")})
    log.info("protect %s -> %s with %r%s", source, out, cfg, f" on {d.world} ranks" if d.enabled else "")

    t0 = time.time()
    pairs = read_pairs(source, csv_img_key, csv_caption_key, csv_separator)
    torch.manual_seed(cfg.seed)
    model = create_model(params["surrogate"], pretrained=params["surrogate_pretrained"], device=dev)
    show = progress and d.is_main
    built: dict = {}  # rank 0 preprocesses the images into the on-disk cache; the others then open it

    # mid-caption triggers and triggers from the dataset's own words need the word boundaries
    words = cfg.trigger_position != "prefix" or cfg.trigger_vocab_min_images > 0

    def build() -> None:
        built["data"] = EncodedPairs.build(pairs, model.image_size, model.codec.encode, show, state_dir / "images.u8",
                                           words)
    distributed.on_main(build)
    data = built.get("data") or EncodedPairs.build(pairs, model.image_size, model.codec.encode, False,
                                                   state_dir / "images.u8", words)
    engine = MEMEngine(model, data, cfg, dev)
    states: dict = {}

    def start_state() -> int:  # rank 0 loads or creates the state; a fresh one is checkpointed as round 0
        if resume and ProtectionState.exists(state_dir):
            st = ProtectionState.load(state_dir)
        else:
            st = engine.init_state(state_dir)
            st.save(state_dir)
        states["main"] = st
        return st.rounds_done
    rounds_done = distributed.on_main(start_state)
    state = states.get("main") or ProtectionState.attach(state_dir)
    if rounds_done > 0:
        engine.model.clip.load_state_dict(load_file(str(state_dir / "surrogate.safetensors")))
        engine.optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
        log.info("resuming after round %d/%d", rounds_done, cfg.rounds)

    def checkpoint(st: ProtectionState, stats: dict) -> None:  # rank 0 only (the engine sees to it)
        with open(state_dir / "rounds.jsonl", "a") as f:
            f.write(json.dumps({**stats, "elapsed_s": round(time.time() - t0, 1)}) + "\n")
        save_model(engine.model, state_dir, "surrogate")
        atomic_torch_save(engine.optimizer.state_dict(), state_dir / "optimizer.pt")
        st.save(state_dir)  # last: its state.json marks the round as done

    engine.run(state, checkpoint, show)
    gen_time = time.time() - t0

    def finish() -> dict:
        rounds_log: dict[int, dict] = {}  # by round: a round redone after a crash keeps its last record
        if (state_dir / "rounds.jsonl").exists():
            for line in (state_dir / "rounds.jsonl").read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    rounds_log[rec["round"]] = rec
        manifest = export(pairs, state, model.codec, out, cfg.eps_px,
                          {**params, "generation_s": round(gen_time, 1), "rounds_log": list(rounds_log.values())},
                          show, out_format=params.get("out_format", "files"), trigger_words=engine.trigger_words)
        shutil.rmtree(state_dir)
        log.info("wrote %d protected images to %s (mean PSNR %.1f dB) in %.0fs", pairs.n_images, out,
                 manifest["mean_psnr_db"] or float("inf"), time.time() - t0)
        return manifest
    return distributed.on_main(finish)
