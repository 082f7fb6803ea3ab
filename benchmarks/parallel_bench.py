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


def split(config: Path) -> list[tuple[str, dict]]:
    """One worker config per (method, seed), in the config's order: seed 0 of every method first."""
    raw = json.loads(config.read_text())
    methods = raw.get("methods", ["clean"])
    seeds = raw.get("seeds", [0])
    return [(f"{m}-s{s}", {**raw, "methods": [m], "seeds": [s]}) for s in seeds for m in methods]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--deadline", type=float, default=500, help="seconds before unfinished workers are stopped")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per worker (OMP_NUM_THREADS)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    procs = []
    for config in args.configs:
        for name, cfg in split(config):
            out = args.root / config.stem / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "worker_config.json").write_text(json.dumps(cfg, indent=1))
            log = open(out / "worker.log", "a")
            cmd = [sys.executable, "-m", "mmue", "bench", "--config", str(out / "worker_config.json"),
                   "--out", str(out), "--device", args.device]
            procs.append((out, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                     start_new_session=True)))
    print(f"{len(procs)} workers started", flush=True)
    while any(p.poll() is None for _, _, p in procs) and time.monotonic() - start < args.deadline:
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
        for name, _ in split(config):
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
