"""Time MEM protection rounds at the paper's constants and project a Flickr8K-scale run (the GPU check).

Synthetic images (uint8 noise) and captions at the surrogate's resolution; RN50 at 224 px by default, bf16
autocast and channels_last on CUDA. Measures surrogate steps/s and data-pass images/s with the text step
(the first 5 rounds) and without it (the other 15), then projects 20 rounds over ``--project-images`` and says
where the time goes (surrogate training vs the data passes).

    python benchmarks/gpu_protect.py --device cuda                       # RN50, 2048 images (the GPU check)
    python benchmarks/gpu_protect.py --model mmue-tiny-rn --images 64 --device cpu --surrogate-steps 2  # smoke
"""
from __future__ import annotations

import time

import torch

from mmue.models import create_model
from mmue.protect import MEMEngine, resolve

from common import bench_parser, fake_pairs, quiet


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(model_name: str = "RN50", images: int = 2048, batch_size: int = 128, surrogate_steps: int = 20,
            project_images: int = 6000, device: str = "cuda") -> dict:
    """Rates of one surrogate step and of a data pass (with and without the text step) at the ``high`` preset,
    and the projected time of ``project_images`` images at that preset, split into surrogate and data pass."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = create_model(model_name, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    data = fake_pairs(images, model.image_size, model.codec)
    cfg = resolve("mem", "high", batch_size=batch_size, surrogate_steps=surrogate_steps)
    eng = MEMEngine(model, data, cfg, dev)
    state = eng.init_state()
    g = torch.Generator().manual_seed(0)
    eng.train_surrogate(state, g)  # warm-up (cudnn autotuning, allocator)
    sync(dev)
    t = time.perf_counter()
    eng.train_surrogate(state, g)
    sync(dev)
    steps_s = surrogate_steps / (time.perf_counter() - t)
    rates = {}
    for name, round_idx in (("text+image", 0), ("image only", cfg.text_rounds)):
        sync(dev)
        t = time.perf_counter()
        eng.data_pass(state, round_idx, g)
        sync(dev)
        rates[name] = images / (time.perf_counter() - t)
    n, full = project_images, resolve("mem", "high")
    surrogate_s = full.rounds * full.surrogate_steps / steps_s
    data_s = full.text_rounds * n / rates["text+image"] + (full.rounds - full.text_rounds) * n / rates["image only"]
    return {"model": model_name, "image_size": model.image_size, "batch_size": batch_size, "images": images,
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "pgd_steps": cfg.pgd_steps, "candidates": cfg.candidates, "trigger_len": cfg.trigger_len,
            "surrogate_steps_per_s": steps_s, "data_pass_images_per_s": rates,
            "project_images": n, "projected_surrogate_s": surrogate_s, "projected_data_pass_s": data_s,
            "projected_total_min": (surrogate_s + data_s) / 60,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}


def describe(m: dict) -> str:
    full = resolve("mem", "high")
    lines = [f"{m['model']} @ {m['image_size']}px on {m['device']}, batch {m['batch_size']}, {m['images']} synthetic "
             f"images, PGD {m['pgd_steps']} steps, {m['candidates']} candidates x {m['trigger_len']}"
             + (f", peak GPU memory {m['peak_gpu_memory_gib']:.1f} GiB" if m["peak_gpu_memory_gib"] else ""),
             f"{'surrogate steps/s':<36}{m['surrogate_steps_per_s']:>10.2f}"]
    lines += [f"{'data pass images/s, ' + k:<36}{v:>10.1f}" for k, v in m["data_pass_images_per_s"].items()]
    total = m["projected_surrogate_s"] + m["projected_data_pass_s"]
    lines.append(f"projected: {m['project_images']} images x {full.rounds} rounds ({full.surrogate_steps} surrogate "
                 f"steps each, text step in {full.text_rounds}): {total / 60:.1f} min = surrogate "
                 f"{m['projected_surrogate_s'] / 60:.1f} min ({100 * m['projected_surrogate_s'] / total:.0f} %) + "
                 f"data passes {m['projected_data_pass_s'] / 60:.1f} min")
    return "\n".join(lines)


def main() -> None:
    ap = bench_parser(__doc__, model="RN50", images=2048, batch_size=128, device="cuda")
    ap.add_argument("--surrogate-steps", type=int, default=20, help="timed steps (the paper's rounds have 200)")
    ap.add_argument("--project-images", type=int, default=6000)
    args = ap.parse_args()
    quiet()
    print(describe(measure(args.model, args.images, args.batch_size, args.surrogate_steps, args.project_images,
                           args.device)))


if __name__ == "__main__":
    main()
