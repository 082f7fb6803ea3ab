"""Efficient vs naive MEM formulation at identical settings, measured in one run.

The naive formulation recomputes both encoders (with weight gradients) for every PGD step and every HotFlip
candidate, as the reference code does. Prints pairs/s of a data pass (text step + image step) and the ratio.

    python benchmarks/protect_speed.py [--model mmue-tiny-rn] [--images 256] [--batch-size 64] [--device cpu]
    python benchmarks/protect_speed.py --model RN50 --batch-size 128 --images 1024 --device cuda   # GPU check
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from mmue.data.encoded import EncodedPairs
from mmue.models import create_model
from mmue.protect import MEMEngine, resolve


def fake_pairs(n: int, size: int, codec, seed: int = 0) -> EncodedPairs:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    words = ["red", "circle", "blue", "square", "a", "large", "small", "star", "and", "green"]
    bodies = [codec.encode(" ".join(words[int(j)] for j in torch.randint(10, (8,), generator=g))) for _ in range(n)]
    return EncodedPairs(images, bodies, list(range(n)), [[i] for i in range(n)])


def time_pass(engine: MEMEngine, state, rounds: int = 1) -> float:
    t = time.perf_counter()
    for r in range(rounds):
        engine.data_pass(state, 0, torch.Generator().manual_seed(r))
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mmue-tiny-rn")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pgd-steps", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--trigger-len", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    data = fake_pairs(args.images, model.image_size, model.codec)
    rows = []
    for form in ("efficient", "naive"):
        cfg = resolve("mem", batch_size=args.batch_size, pgd_steps=args.pgd_steps, candidates=args.candidates,
                      trigger_len=args.trigger_len, formulation=form)
        eng = MEMEngine(model, data, cfg, dev)
        state = eng.init_state()
        time_pass(eng, state)  # warm-up (and trigger vocabulary)
        secs = time_pass(eng, eng.init_state())
        rows.append((form, secs, args.images / secs))
    print(f"model {args.model} @ {model.image_size}px, {args.images} images, batch {args.batch_size}, "
          f"{args.pgd_steps} PGD steps, {args.candidates} candidates x {args.trigger_len} positions, device {dev}")
    print(f"{'formulation':<12}{'s/pass':>10}{'pairs/s':>10}")
    for form, secs, rate in rows:
        print(f"{form:<12}{secs:>10.2f}{rate:>10.1f}")
    print(f"speed-up efficient/naive: {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
