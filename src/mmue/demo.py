"""``mmue demo``: end to end on the built-in data — synth, clean victim, protect, victim on the protected
files, a table and ``results.json``. Every stage is skipped when its output is complete, and resumed when
it was interrupted, so rerunning the demo after a crash loses nothing.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .data import write_builtin
from .experiments import ensure_protected, random_guess_of, train_victim, victim_metrics
from .fileio import atomic_write_json
from .metrics import format_table
from .models import DEFAULT_MODEL
from .report import write_report
from .train import TrainConfig

log = logging.getLogger(__name__)
DEMO_EPOCHS = 12   # victims: 12 of `mmue train`'s 20 epochs keep the demo well under 10 minutes on 2 CPU cores


def run_demo(out: str | Path = "demo_out", method: str = "mem-3", strength: str = "low", model: str = DEFAULT_MODEL,
             seed: int = 0, n_train: int = 2000, n_test: int = 1000, epochs: int | None = None,
             device: str = "auto", **protect_settings) -> dict:
    """Run (or resume) the demo in ``out``; ``protect_settings`` override the protection preset."""
    out = Path(out)
    t0 = time.time()
    data = out / "data"
    if not (data / "test.csv").exists():
        write_builtin(data, n_train=n_train, n_test=n_test, seed=seed)
    train_csv, test_csv = data / "train.csv", data / "test.csv"
    cfg = TrainConfig(seed=seed, epochs=epochs or DEMO_EPOCHS)

    train_victim(train_csv, test_csv, out / "victims" / "clean", model, cfg, device)
    protected = out / "protected" / method
    manifest = ensure_protected(train_csv, protected, method, strength, seed, device, **protect_settings)
    train_victim(protected / manifest["data"], test_csv, out / "victims" / method, model, cfg, device)

    results = {name: victim_metrics(out / "victims" / name, test_csv, device, data / "zeroshot")
               for name in ("clean", method)}
    first = results["clean"]
    results["n_test_images"] = first["n_images"]
    results["random_guess"] = random_guess_of(test_csv)
    results["protection"] = {"method": method, "strength": strength, "mean_psnr_db": manifest["mean_psnr_db"],
                             "max_linf_px": manifest["max_linf_px"], "generation_s": manifest["generation_s"]}
    results["demo_s"] = round(time.time() - t0, 1)
    atomic_write_json(out / "results.json", results)
    write_report(out, f"MMUE demo: {method} ({strength}) on the built-in data",
                 {f"Retrieval on the clean test split ({results['n_test_images']} images), %": demo_table(results)},
                 {name: out / "victims" / name for name in ("clean", method)}, protected, train_csv,
                 notes=[f"demo time {results['demo_s']:.0f} s, seed {seed}", "victims trained from scratch on the "
                        "written files; metrics at the last epoch and at the best epoch on the clean test split"])
    return results


def demo_table(results: dict) -> str:
    rows = {name: results[name] for name in results if isinstance(results[name], dict) and "n_images" in results[name]}
    table = {f"{n} (last)": m for n, m in rows.items()}
    table.update({f"{n} (best ep {m['best_epoch']})": m["best"] for n, m in rows.items()})
    table["random guess"] = results["random_guess"]
    return format_table(table)
