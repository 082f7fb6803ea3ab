"""What the surrogate fits, round by round: on the protected pairs, on the same pairs before protection, and on
the noise alone.

``mmue protect --stop-accuracy A`` measures, after each round's surrogate steps, the surrogate's in-batch
retrieval accuracy on the protected pairs (``fit_accuracy``) and on the clean ones (``clean_fit_accuracy``),
and stops at A. This script runs one protection with that check in every round and never stops, so the whole
curve is seen; it adds a third check: the noise alone on mid-grey with the published captions (does the surrogate
read the noise without its picture?). A shortcut is a fit the clean pairs do not share.

    python benchmarks/fit_curves.py oc-small/train.csv OUT --method em --rounds 10 --surrogate-steps 10 --seed 0

Prints one JSON line per checked round and appends them, with the run's settings, to ``OUT.fits.jsonl``.
"""
from __future__ import annotations

import argparse
import json

import torch

from mmue.protect import engine as engine_module
from mmue.protect.workflow import protect
from mmue.seeding import generator


def noise_alone_fit(eng: engine_module.MEMEngine, state, round_idx: int) -> float:
    """In-batch top-1 retrieval (the lower direction) of the noise on mid-grey against the published captions,
    on the batches and captions of the stop check."""
    g = generator(eng.cfg.seed, "fit check", round_idx)
    eng.model.eval()
    hits, pairs = torch.zeros(2, dtype=torch.float64), 0
    with torch.no_grad():
        for idx in eng.batches(torch.randperm(eng.data.n_images, generator=g)):
            b = eng.make_batch(idx, g)
            hits += engine_module.in_batch_hits(
                eng.model.encode_image(0.5 + eng.noise.delta(state, b.index, eng.device)).float(),
                eng.model.encode_text(b.ids(state.triggers[b.index].to(eng.device))).float())
            pairs += len(idx)
    eng.model.train()
    return float(hits.min()) / max(1, pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train_data")
    p.add_argument("out")
    p.add_argument("--method", default="em")
    p.add_argument("--strength", default="high")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--surrogate-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    settings = {"rounds": args.rounds, "seed": args.seed}
    if args.surrogate_steps is not None:
        settings["surrogate_steps"] = args.surrogate_steps
    rows = []
    checked = engine_module.MEMEngine.fit_accuracy

    def record_and_go_on(self, state, round_idx):
        fit, clean = checked(self, state, round_idx)
        rows.append({"round": round_idx + 1, "fit_accuracy": round(fit, 4), "clean_fit_accuracy": round(clean, 4),
                     "noise_alone_fit_accuracy": round(noise_alone_fit(self, state, round_idx), 4)})
        print(json.dumps(rows[-1]), flush=True)
        return -1.0, clean   # below any stop bar: every round runs

    engine_module.MEMEngine.fit_accuracy = record_and_go_on
    protect(args.train_data, args.out, method=args.method, strength=args.strength, stop_accuracy=0.99,
            overwrite=True, device="cpu", progress=False, **settings)
    with open(f"{args.out}.fits.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({"method": args.method, "strength": args.strength, **settings, **r}) + "\n")


if __name__ == "__main__":
    main()
