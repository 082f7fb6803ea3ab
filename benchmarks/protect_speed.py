"""Efficient vs naive MEM formulation at identical settings, measured in one run.

The naive formulation recomputes both encoders (with weight gradients) for every PGD step and every HotFlip
candidate, as the reference code does. Prints pairs/s of a data pass (text step + image step) and the ratio.

    python benchmarks/protect_speed.py [--model mmue-tiny-rn] [--images 256] [--batch-size 64] [--device cpu]
    python benchmarks/protect_speed.py --model RN50 --batch-size 128 --images 1024 --device cuda   # GPU check
"""
from __future__ import annotations

import time

import torch

from mmue.models import create_model
from mmue.protect import MEMEngine, resolve

from common import bench_parser, fake_pairs, quiet
from naive_engine import NaiveMEMEngine


def time_pass(engine: MEMEngine, state, rounds: int = 1) -> float:
    t = time.perf_counter()
    for r in range(rounds):
        engine.data_pass(state, 0, torch.Generator().manual_seed(r))
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--pgd-steps", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--trigger-len", type=int, default=3)
    args = ap.parse_args()
    quiet()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    data = fake_pairs(args.images, model.image_size, model.codec)
    rows = []
    cfg = resolve("mem-3", batch_size=args.batch_size, pgd_steps=args.pgd_steps, candidates=args.candidates,
                  trigger_len=args.trigger_len)
    for form, engine in (("efficient", MEMEngine), ("naive", NaiveMEMEngine)):
        eng = engine(model, data, cfg, dev)
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
