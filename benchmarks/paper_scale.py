"""Paper scale on one GPU: RN50 surrogate, RN50 and ViT-B-32 victims at 224 px, one prepared run under a deadline.

1. Projection (``gpu_protect.measure``): RN50 @ 224, bf16, channels_last; the projected time of a Flickr8K-scale
   protection (6000 images, the paper's 20 rounds x 200 surrogate steps) and where it goes.
2. Protection of ``--data``/train.csv (e.g. openclipart rendered at 224 px) with each ``--methods`` entry, RN50
   surrogate, at the strongest preset that the measured rates say fits the deadline (``--strength`` forces one).
3. Victims trained from scratch on the clean and on each protected copy (``mmue train``: AdamW, warm-up + cosine,
   bf16, no augmentation; ``--epochs``, ``--lr``), evaluated on the clean test split after every epoch.
4. ``OUT/paper_scale.jsonl`` (one row per victim: last and best epoch R@1/5/10 both ways, PSNR, times, the card)
   and ``OUT/paper_scale.md`` (the table, random guess and the reference rerun beside).

Every job is a ``python -m mmue`` subprocess, several at a time on the one GPU (tiny per-step kernels leave it
idle otherwise); protected victims start as soon as their protection is written. At the deadline unfinished
jobs are stopped; rerunning the same command resumes them (``--resume``) and skips finished ones.

    python benchmarks/paper_scale.py --data real224 --out /tmp/ps --device cuda --deadline 420
    python benchmarks/paper_scale.py --smoke --out /tmp/ps_smoke      # CPU: tiny models, a handful of images
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmue.data import read_pairs
from mmue.experiments import random_guess_of
from mmue.fileio import read_jsonl, write_jsonl
from mmue.metrics import KS
from mmue.protect import resolve
from mmue.protect.manifest import MANIFEST, PUBLISH
from mmue.protect.run import STATE_DIR

import gpu_protect

# The third-party rerun of the reference code (Flickr8K, RN50 @ 224, from scratch), i2t R@1/5/10 in %.
REFERENCE = {"clean": (4.7, 14.1, 19.5), "mem-3": (0.4, 2.1, 3.4), "random guess": (0.1, 0.5, 1.0)}
STRENGTH_ORDER = ("high", "mid", "low")
DIRS = ("image_to_text", "text_to_image")


@dataclass
class Job:
    name: str
    cmd: list[str]
    done: Path                     # exists once the job has finished
    resume_marker: Path            # exists once the job has started writing: rerun with --resume
    after: str | None = None       # a job that must finish first
    proc: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float | None = None
    status: str = "waiting"
    log: Path = field(default=Path())

    def is_done(self) -> bool:
        return self.done.exists() and not (self.done.parent / STATE_DIR).exists()


def estimate(proj: dict, strength: str, n_train: int, epochs: int, n_test: int, batch: int) -> tuple[float, float]:
    """Seconds of one protection at ``strength`` and of one victim, from the measured RN50 rates (rough: the
    victim step is taken as one surrogate step, evaluation as a third of a training step per image)."""
    cfg = resolve("mem", strength)
    steps_s, rates = proj["surrogate_steps_per_s"], proj["data_pass_images_per_s"]
    pgd = cfg.pgd_steps / proj["pgd_steps"]   # the lower presets take fewer PGD steps than the measured high one
    protect = (cfg.rounds * cfg.surrogate_steps / steps_s + pgd * cfg.text_rounds * n_train / rates["text+image"]
               + pgd * (cfg.rounds - cfg.text_rounds) * n_train / rates["image only"] + 30)
    victim = epochs * (n_train / (steps_s * batch) + n_test / (3 * steps_s * batch)) + 30
    return protect, victim


def choose_strength(proj: dict, budget: float, n_train: int, epochs: int, n_test: int, batch: int,
                    n_methods: int, n_victims: int, overlap: float = 1.5) -> tuple[str, dict]:
    """The strongest preset whose critical path (protect + victim) and total GPU work (shared by the parallel
    jobs at ``overlap`` x one job's throughput) both fit ``budget`` seconds."""
    est = {}
    for s in STRENGTH_ORDER:
        p, v = estimate(proj, s, n_train, epochs, n_test, batch)
        total = (n_methods * p + (n_methods + 1) * n_victims * v) / overlap
        est[s] = {"protect_s": round(p), "victim_s": round(v), "wall_s": round(max(p + v, total))}
        if est[s]["wall_s"] <= budget:
            return s, est
    return STRENGTH_ORDER[-1], est


def run_jobs(jobs: list[Job], deadline: float, parallel: int, env: dict) -> None:
    """Start jobs whose prerequisite is done, ``parallel`` at a time, until all end or the deadline passes."""
    by_name = {j.name: j for j in jobs}
    for j in jobs:
        if j.is_done():
            j.status = "done before"
    while True:
        running = [j for j in jobs if j.proc is not None and j.status == "running"]
        for j in running:
            if j.proc.poll() is not None:
                j.seconds = round(time.monotonic() - j.started, 1)
                j.status = "done" if j.proc.returncode == 0 and j.is_done() else f"failed ({j.proc.returncode})"
                print(f"[{time.strftime('%H:%M:%S')}] {j.name}: {j.status} in {j.seconds:.0f} s", flush=True)
                if j.status.startswith("failed"):
                    print("".join(f"    | {x}" for x in j.log.read_text().splitlines(True)[-20:]), flush=True)
        running = [j for j in jobs if j.status == "running"]
        ready = [j for j in jobs if j.status == "waiting"
                 and (j.after is None or by_name[j.after].status in ("done", "done before"))]
        for j in jobs:
            if j.status == "waiting" and j.after and by_name[j.after].status.startswith("failed"):
                j.status = f"skipped ({j.after} failed)"
        if not running and not ready:
            return
        if time.monotonic() >= deadline:
            for j in running:
                os.killpg(j.proc.pid, signal.SIGTERM)
                try:
                    j.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(j.proc.pid, signal.SIGKILL)
                j.status, j.seconds = "stopped at the deadline", round(time.monotonic() - j.started, 1)
            for j in jobs:
                if j.status == "waiting":
                    j.status = "not started (deadline)"
            return
        for j in ready[:max(0, parallel - len(running))]:
            cmd = j.cmd + (["--resume"] if j.resume_marker.exists() else [])
            j.log.parent.mkdir(parents=True, exist_ok=True)
            with open(j.log, "a") as log:
                log.write(f"$ {' '.join(cmd)}\n")
                log.flush()
                j.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            j.started, j.status = time.monotonic(), "running"
            print(f"[{time.strftime('%H:%M:%S')}] start {j.name}", flush=True)
        time.sleep(1)


def victim_row(run: Path) -> dict:
    """Last and best epoch of a finished victim run, from the per-epoch evaluation it recorded."""
    epochs = read_jsonl(run / "results.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    best = next(e for e in epochs if e["epoch"] == summary["best_epoch"])
    pick = lambda e: {k.removeprefix("val/"): v for k, v in e.items() if k.startswith("val/")}  # noqa: E731
    return {**{f"last/{k}": v for k, v in pick(epochs[-1]).items()}, **{f"best/{k}": v for k, v in pick(best).items()},
            "best_epoch": summary["best_epoch"], "epochs": len(epochs), "train_s": epochs[-1]["elapsed_s"],
            "curve_i2t_R@1": [round(e["val/image_to_text_R@1"], 4) for e in epochs]}


def table(rows: list[dict], guess: dict, which: str, surrogate: str) -> str:
    keys = [f"{d}_R@{k}" for d in DIRS for k in KS]
    head = ["method", "victim", "cell"] + [k.replace("image_to_text", "i2t").replace("text_to_image", "t2i")
                                           for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cell = "-" if r["method"] == "clean" else ("same arch" if r["victim"] == surrogate else "transfer")
        lines.append("| " + " | ".join([r["method"], r["victim"], cell]
                                       + [f"{100 * r[f'{which}/{k}']:.1f}" for k in keys]) + " |")
    lines.append("| random guess | | | " + " | ".join(f"{100 * guess[k]:.2f}" for k in keys) + " |")
    for name, (r1, r5, r10) in REFERENCE.items():
        lines.append(f"| rerun, Flickr8K: {name} | RN50 | | {r1} | {r5} | {r10} | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder with train.csv and test.csv (224 px images or larger)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline", type=float, default=420, help="seconds for the whole run, projection included")
    ap.add_argument("--surrogate", default="RN50")
    ap.add_argument("--victims", nargs="+", default=["RN50", "ViT-B-32"])
    ap.add_argument("--methods", nargs="+", default=["mem-3", "mem-3-robust"])
    ap.add_argument("--strength", choices=STRENGTH_ORDER, default=None, help="default: the strongest that fits")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4, help="victims' peak learning rate (ResNets)")
    # measured on the H200 (docs/results.md, "Paper scale"): ViT-B-32 at 5e-4 learned nothing in 15 epochs
    # (0.6 % clean R@1), at 1e-4 it reached 19 % in 20
    ap.add_argument("--vit-lr", type=float, default=1e-4, help="peak learning rate of ViT victims")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=6, help="jobs at a time on the one device")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per job")
    ap.add_argument("--projection-images", type=int, default=1024)
    ap.add_argument("--projection-steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="CPU check of the whole script: tiny models, synth data")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    start = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "mmue", "-q"]
    extra_protect: list[str] = []
    if args.smoke:
        args.device, args.surrogate, args.victims = "cpu", "mmue-tiny-rn", ["mmue-tiny-rn", "mmue-tiny-vit"]
        args.epochs, args.parallel, args.threads, args.strength = 1, 2, 1, "low"   # 2 jobs: one per core
        args.projection_images, args.projection_steps = 16, 2
        extra_protect = ["--rounds", "1", "--surrogate-steps", "2", "--batch-size", "8"]
        args.data = out / "data"
        if not (args.data / "test.csv").exists():
            subprocess.run(py + ["synth", str(args.data), "--n-train", "24", "--n-test", "12",
                                 "--captions-per-image", "2"], check=True)
    if args.data is None:
        ap.error("--data is required (or --smoke)")
    train_csv, test_csv = args.data / "train.csv", args.data / "test.csv"
    n_train = read_pairs(train_csv, check_files=False).n_images
    test = read_pairs(test_csv, check_files=False)
    guess = random_guess_of(test_csv)

    # 1. projection (alone on the device, so its rates are clean)
    proj_file = out / "projection.json"
    if proj_file.exists():
        proj = json.loads(proj_file.read_text())
    else:
        proj = gpu_protect.measure(args.surrogate, args.projection_images, args.batch_size, args.projection_steps,
                                   6000, args.device)
        proj_file.write_text(json.dumps(proj, indent=1))
    print(gpu_protect.describe(proj), flush=True)

    # 2+3. protections and victims, as parallel jobs
    budget = args.deadline - (time.monotonic() - start) - 20
    strength, est = choose_strength(proj, budget, n_train, args.epochs, test.n_images, args.batch_size,
                                    len(args.methods), len(args.victims))
    strength = args.strength or strength
    print(f"{n_train} training images, {test.n_images} test images; {budget:.0f} s left; estimates "
          f"{json.dumps(est)}; strength {strength}", flush=True)
    jobs = []   # protections first: they are the critical path; clean victims fill the other slots meanwhile
    clean = []
    for v in args.victims:
        run = out / "victims" / f"clean-{v}"
        clean.append(Job(f"victim clean/{v}", [], run / "summary.json", run / "params.json"))
    for m in args.methods:
        prot = out / "protected" / m
        jobs.append(Job(f"protect {m}", py + ["protect", "--train-data", str(train_csv), "--out", str(prot),
                                              "--method", m, "--strength", strength, "--surrogate", args.surrogate,
                                              "--seed", "0", "--device", args.device] + extra_protect,
                        prot / MANIFEST, prot / ".mmue_state" / "params.json"))
        for v in args.victims:
            run = out / "victims" / f"{m}-{v}"
            jobs.append(Job(f"victim {m}/{v}", [], run / "summary.json", run / "params.json", after=f"protect {m}"))
    jobs += clean
    for j in jobs:
        if j.name.startswith("victim"):
            method, victim = j.name.split(" ")[1].split("/")
            data = train_csv if method == "clean" else out / "protected" / method / PUBLISH / "train.csv"
            lr = args.vit_lr if victim.startswith("ViT") else args.lr
            j.cmd = py + ["train", "--train-data", str(data), "--val-data", str(test_csv), "--out", str(j.done.parent),
                          "--model", victim, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                          "--lr", str(lr), "--warmup", str(args.warmup), "--seed", "0", "--device", args.device]
        j.log = out / "logs" / (j.name.replace(" ", "_").replace("/", "_") + ".log")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    run_jobs(jobs, start + args.deadline - 15, args.parallel, env)

    # 4. rows and table
    card = proj["device"]
    rows = []
    for j in jobs:
        if not j.name.startswith("victim") or not j.is_done():
            continue
        method, victim = j.name.split(" ")[1].split("/")
        row = {"method": method, "victim": victim, "surrogate": args.surrogate, "strength": strength, "seed": 0,
               "device": card, "epochs_planned": args.epochs,
               "lr": args.vit_lr if victim.startswith("ViT") else args.lr, "batch_size": args.batch_size,
               "n_train": n_train, "n_test": test.n_images, **victim_row(j.done.parent)}
        if method != "clean":
            man = json.loads((out / "protected" / method / MANIFEST).read_text())
            row.update(mean_psnr_db=man["mean_psnr_db"], max_linf_px=man["max_linf_px"],
                       generation_s=man["generation_s"])
        rows.append(row)
    write_jsonl(out / "paper_scale.jsonl", rows)
    status = "\n".join(f"- {j.name}: {j.status}" + (f" ({j.seconds:.0f} s)" if j.seconds else "") for j in jobs)
    md = [f"## Paper scale on {card}: {args.surrogate} surrogate, victims {', '.join(args.victims)}",
          "", "```", gpu_protect.describe(proj), "```", "",
          f"Data {args.data} ({n_train} train / {test.n_images} test images), protection `--strength {strength}` "
          f"(estimates {json.dumps(est)}), victims {args.epochs} epochs, batch {args.batch_size}, lr {args.lr} "
          f"(ViT {args.vit_lr}), warm-up {args.warmup}, no augmentation; wall {time.monotonic() - start:.0f} s.",
          "", status, ""]
    psnr = {r["method"]: r.get("mean_psnr_db") for r in rows if r["method"] != "clean"}
    if psnr:
        md += ["PSNR (dB): " + ", ".join(f"{m} {p:.1f}" for m, p in psnr.items()), ""]
    for which in ("last", "best"):
        md += [f"{which} epoch, %:", "", table(rows, guess, which, args.surrogate), ""]
    (out / "paper_scale.md").write_text("\n".join(md))
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    main()
