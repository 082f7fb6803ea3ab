"""Time MEM protection rounds at the paper's constants and project a Flickr8K-scale run (the GPU check).

Synthetic images (uint8 noise) and captions at the surrogate's resolution; RN50 at 224 px by default, bf16
autocast and channels_last on CUDA. Measures surrogate steps/s and data-pass images/s with the text step
(the first 5 rounds) and without it (the other 15), then projects 20 rounds over ``--project-images``.

    python benchmarks/gpu_protect.py --device cuda                       # RN50, 2048 images (the GPU check)
    python benchmarks/gpu_protect.py --model mmue-tiny-rn --images 64 --device cpu --surrogate-steps 2  # smoke
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from mmue.models import create_model
from mmue.protect import MEMEngine, resolve

from protect_speed import fake_pairs


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="RN50")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--surrogate-steps", type=int, default=20, help="timed steps (the paper's rounds have 200)")
    ap.add_argument("--project-images", type=int, default=6000)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    data = fake_pairs(args.images, model.image_size, model.codec)
    cfg = resolve("mem", "high", batch_size=args.batch_size, surrogate_steps=args.surrogate_steps)
    eng = MEMEngine(model, data, cfg, dev)
    state = eng.init_state()
    g = torch.Generator().manual_seed(0)
    _ = model.codec.trigger_vocab
    eng.train_surrogate(state, g)  # warm-up
    sync(dev)
    t = time.perf_counter()
    eng.train_surrogate(state, g)
    sync(dev)
    steps_s = args.surrogate_steps / (time.perf_counter() - t)
    rates = {}
    for name, round_idx in (("text+image", 0), ("image only", cfg.text_rounds)):
        sync(dev)
        t = time.perf_counter()
        eng.data_pass(state, round_idx, g)
        sync(dev)
        rates[name] = args.images / (time.perf_counter() - t)
    n = args.project_images
    full = cfg.text_rounds * n / rates["text+image"] + (cfg.rounds - cfg.text_rounds) * n / rates["image only"]
    full += cfg.rounds * 200 / steps_s
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{args.model} @ {model.image_size}px on {name}, batch {args.batch_size}, {args.images} synthetic images, "
          f"PGD {cfg.pgd_steps} steps, {cfg.candidates} candidates x {cfg.trigger_len}, peak GPU memory {mem:.1f} GiB")
    print(f"{'surrogate steps/s':<28}{steps_s:>10.2f}")
    for k, v in rates.items():
        print(f"{'data pass images/s, ' + k:<28}{v:>10.1f}")
    print(f"projected: {n} images x {cfg.rounds} rounds (200 surrogate steps each): {full / 60:.1f} min")


if __name__ == "__main__":
    main()
