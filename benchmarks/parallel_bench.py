"""Run ``mmue bench`` grids as parallel workers sharing one machine (e.g. one GPU), under a deadline.

The tiny bench models leave a big GPU mostly idle, so one process per (config, method, seed) runs side by side,
each with its own out folder (protections are cached per method and seed anyway, so nothing is computed twice).
At the deadline unfinished workers are stopped; every finished cell is already a line of its worker's
``results.jsonl``, and the lines of each config are merged into ``ROOT/<config stem>/results.jsonl``.
Rerunning the same command resumes: workers skip the cells they finished.

    python benchmarks/parallel_bench.py --root /tmp/grid --deadline 500 --threads 1 \\
        docs/results/gpu-builtin-defenses.json docs/results/gpu-openclipart-defenses.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mmue.fileio import read_jsonl, write_jsonl
from mmue.protect.manifest import MANIFEST


def split(config: Path, by_victim: bool = False, max_cells: int | None = None) -> list[tuple[str, dict, str | None]]:
    """One worker config per (method, seed), in the config's order: seed 0 of every method first. With
    ``by_victim``, one per (method, seed, victim): (name, config, name of the worker whose protection it
    waits for and shares, or None). ``max_cells`` (with ``by_victim``) also cuts a victim's defenses into
    workers of at most that many cells, so that no chain is much longer than the others."""
    raw = json.loads(config.read_text())
    methods = raw.get("methods", ["clean"])
    seeds = raw.get("seeds", [0])
    victims = raw.get("victims", ["mmue-tiny-rn"])
    per_victim = raw.get("victim_defenses", {})
    out = []
    for s in seeds:
        for m in methods:
            base = f"{m}-s{s}"
            if not by_victim:
                out.append((base, {**raw, "methods": [m], "seeds": [s]}, None))
                continue
            for i, v in enumerate(victims):
                defenses = per_victim.get(v, raw.get("defenses", ["none"]))
                step = max_cells or len(defenses)
                for k in range(0, len(defenses), step):
                    first = i == 0 and k == 0
                    part = defenses[k:k + step]
                    cfg = {**raw, "methods": [m], "seeds": [s], "victims": [v],
                           "victim_defenses": {v: part} if max_cells or v in per_victim else {}}
                    name = base if first else f"{base}-{v}" + (f"-{k // step + 1}" if k else "")
                    out.append((name, cfg, None if first or m == "clean" else base))
    return out


def _protection_done(worker: Path) -> bool:
    return any((worker / "protected").glob(f"*/{MANIFEST}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--deadline", type=float, default=500, help="seconds before unfinished workers are stopped")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per worker (OMP_NUM_THREADS)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--by-victim", action="store_true",
                    help="one worker per victim too; a method's victims after the first wait for its protection "
                         "and share it (shorter chains: better balanced under a deadline)")
    ap.add_argument("--max-cells", type=int, default=None,
                    help="with --by-victim: at most this many cells (defenses) per worker")
    args = ap.parse_args()
    if args.max_cells is not None and (not args.by_victim or args.max_cells < 1):
        ap.error("--max-cells takes a positive number and needs --by-victim")
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    procs, waiting = [], []

    def launch(out: Path, cfg: dict, share_from: Path | None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        if share_from is not None and not (out / "protected").exists():
            (out / "protected").symlink_to((share_from / "protected").resolve(), target_is_directory=True)
        (out / "worker_config.json").write_text(json.dumps(cfg, indent=1))
        log = open(out / "worker.log", "a")
        cmd = [sys.executable, "-m", "mmue", "bench", "--config", str(out / "worker_config.json"),
               "--out", str(out), "--device", args.device]
        procs.append((out, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 start_new_session=True)))

    for config in args.configs:
        for name, cfg, wait_for in split(config, args.by_victim, args.max_cells):
            out = args.root / config.stem / name
            if wait_for is None:
                launch(out, cfg, None)
            else:
                waiting.append((out, cfg, args.root / config.stem / wait_for))
    print(f"{len(procs)} workers started, {len(waiting)} waiting for a protection", flush=True)
    while (any(p.poll() is None for _, _, p in procs) or waiting) and time.monotonic() - start < args.deadline:
        for item in list(waiting):
            out, cfg, src = item
            if _protection_done(src):
                waiting.remove(item)
                launch(out, cfg, src)
        if waiting and not any(p.poll() is None for _, _, p in procs):
            print(f"{len(waiting)} workers never started: the protection they wait for failed", flush=True)
            break
        time.sleep(5)
    stopped = [p for _, _, p in procs if p.poll() is None]
    for p in stopped:
        os.killpg(p.pid, signal.SIGTERM)
    for out, log, p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()
    for config in args.configs:
        rows = []
        for name, _, _ in split(config, args.by_victim, args.max_cells):
            f = args.root / config.stem / name / "results.jsonl"
            rows += read_jsonl(f)
        write_jsonl(args.root / config.stem / "results.jsonl", rows)
        print(f"{config.stem}: {len(rows)} cells", flush=True)
    for out, _, p in procs:
        n = len(read_jsonl(out / "results.jsonl"))
        print(f"  {out.relative_to(args.root)}: exit {p.returncode}, {n} cells", flush=True)
        if p.returncode and p not in stopped:  # a crash, not the deadline: show why
            print("".join(f"    | {line}" for line in (out / "worker.log").read_text().splitlines(True)[-15:]))
    print(f"{time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
