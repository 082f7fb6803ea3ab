"""Protection in stages: one surrogate after another, each with a share of the budget.

``mmue protect --surrogate A,B`` protects with surrogate A and ``--method`` at part of ``eps``, then protects that
copy with surrogate B and error-minimising image noise (``em``: the first stage's triggers stay as they are) within
the rest, so that every pixel of the result is within ``eps`` of the original. Measured use: trainers at two input
sizes (a 128 px surrogate, then a 64 px one, at 4/255 each), where one noise against both surrogates at once does not
reach both. This module holds the pure parts: how the budget is split, which settings a later stage takes, and how
the stages' manifests become the copy's one manifest. ``mmue.api`` runs the stages.
"""
from __future__ import annotations

STAGES_DIR = ".mmue_stages"   # OUT/.mmue_stages/<i>-<surrogate>: each stage's own protection run, removed at the end
LATER_METHOD = "em"

# what a later stage takes from the user's settings: the image step's knobs (its method has no trigger)
IMAGE_KNOBS = ("alpha", "pgd_steps", "noise_block", "noise_tile", "noise_colour", "eot", "surrogate_view", "stretch",
               "grad_blur", "adversary_eps", "adversary_steps", "rounds", "surrogate_steps", "surrogate_restart",
               "stop_accuracy", "batch_size", "surrogate_lr", "surrogate_wd")


def stage_folder(i: int, surrogate: str) -> str:
    """Stage ``i``'s (0-based) run folder inside ``STAGES_DIR``."""
    return f"{i + 1}-{surrogate}"


def split_surrogates(surrogate: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (each may itself be ``x+y``: one noise against both, within its stage)."""
    names = [s.strip() for s in surrogate.split(",")]
    if any(not s for s in names):
        raise ValueError(f"--surrogate {surrogate!r}: an empty name; stages are separated by one ',' "
                         "(e.g. mmue-tiny-rn-128,mmue-tiny-rn)")
    return names


def budget_shares(eps_px: int, n: int) -> list[int]:
    """``eps_px`` split into ``n`` whole pixel steps, as even as possible, the larger shares first: their sum is
    ``eps_px``, so the stages together stay within the budget."""
    if eps_px < n:
        raise ValueError(f"an L-inf budget of {eps_px}/255 cannot be split into {n} stages of at least 1/255; "
                         "raise --eps or use fewer surrogates")
    base, extra = divmod(eps_px, n)
    return [base + (i < extra) for i in range(n)]


def later_settings(settings: dict, eps_px: int, seed: int) -> dict:
    """A later stage's settings: the image knobs the user gave, its share of the budget, the first stage's seed."""
    return {**{k: v for k, v in settings.items() if k in IMAGE_KNOBS and v is not None},
            "eps": eps_px / 255, "seed": seed}


def merge_manifests(stages: list[dict], surrogates: list[str], train_data: str, fidelity: list[tuple[float, int]],
                    eps: float) -> dict:
    """The copy's manifest from its stages' (first to last): the last stage's files, the first stage's sources and
    triggers (the key), fidelity measured against the originals (``fidelity``: per image PSNR and L-inf), the
    summed time, and each stage's own settings and round log under ``stages``. ``config`` is the first stage's with
    the whole budget ``eps``: what the copy as a whole was protected with."""
    first, last = stages[0], stages[-1]
    if not len(first["images"]) == len(last["images"]) == len(fidelity):
        raise ValueError(f"stages disagree on the number of images: {len(first['images'])}, "
                         f"{len(last['images'])}, {len(fidelity)} measured")
    images = [{**b, "source": a["source"], "trigger": a["trigger"], "linf_px": linf,
               "psnr_db": None if p == float("inf") else round(p, 3)}
              for a, b, (p, linf) in zip(first["images"], last["images"], fidelity)]
    finite = [p for p, _ in fidelity if p != float("inf")]
    eps_px = int(round(eps * 255))
    return {
        **last,
        "train_data": train_data, "surrogate": ",".join(surrogates), "skipped": first.get("skipped", []),
        "public": first.get("public"), "seed_source": first.get("seed_source"), "strength": first.get("strength"),
        "config": {**first["config"], "eps": eps, "eps_px": eps_px},
        "generation_s": round(sum(m["generation_s"] for m in stages), 1),
        "rounds_log": first.get("rounds_log", []),
        "stages": [{"method": m["config"]["method"], "surrogate": name, "eps_px": m["config"]["eps_px"],
                    "config": m["config"], "generation_s": m["generation_s"], "rounds_log": m.get("rounds_log", []),
                    "mean_psnr_db_vs_input": m["mean_psnr_db"], "max_linf_px_vs_input": m["max_linf_px"],
                    **({"mean_noise_kept": m["mean_noise_kept"]} if "mean_noise_kept" in m else {})}
                   for m, name in zip(stages, surrogates)],
        "mean_psnr_db": round(sum(finite) / len(finite), 3) if finite else None,
        "min_psnr_db": round(min(finite), 3) if finite else None,
        "max_linf_px": max((linf for _, linf in fidelity), default=0),
        "images": images,
    }
