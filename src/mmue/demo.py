"""``mmue demo``: end to end on the built-in data — synth, clean victim, protect, victim on the protected
files, a table and ``results.json``. Every stage is skipped when its output is complete, and resumed when
it was interrupted, so rerunning the demo after a crash loses nothing.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from . import api
from .metrics import format_table, random_guess
from .report import write_report
from .models import DEFAULT_MODEL, load_model
from .train import TrainConfig, evaluate, resolve_device

log = logging.getLogger(__name__)
DEMO_EPOCHS = 12   # victims: 12 of `mmue train`'s 20 epochs keep the demo well under 10 minutes on 2 CPU cores


def train_victim(train_csv: Path, test_csv: Path, run: Path, model: str, cfg: TrainConfig, device: str) -> None:
    if (run / "summary.json").exists():
        log.info("victim %s already trained", run)
        return
    api.train(train_csv, run, model=model, val_data=test_csv, config=cfg, device=device,
              resume=(run / "params.json").exists())


def victim_metrics(run: Path, test_csv: Path, device: str) -> dict:
    """Clean-test metrics of a victim's last epoch, with its best epoch's beside (early stopping)."""
    dev = resolve_device(device)
    out, enc = {}, None
    for which in ("last", "best"):
        model = load_model(run, dev, which=which)
        enc = enc or api.load_encoded(test_csv, model)  # same architecture: encode the test split once
        out[which] = evaluate(model, enc, dev)
    summary = json.loads((run / "summary.json").read_text())
    init = run / "init_metrics.json"   # before training (the learning gain's baseline)
    extra = {"init": json.loads(init.read_text())} if init.exists() else {}
    return {**out["last"], "best_epoch": summary["best_epoch"], "best": out["best"], **extra}


def run_demo(out: str | Path = "demo_out", method: str = "mem-3", strength: str = "low", model: str = DEFAULT_MODEL,
             seed: int = 0, n_train: int = 2000, n_test: int = 1000, epochs: int | None = None,
             device: str = "auto", **protect_settings) -> dict:
    """Run (or resume) the demo in ``out``; ``protect_settings`` override the protection preset."""
    out = Path(out)
    t0 = time.time()
    data = out / "data"
    if not (data / "test.csv").exists():
        api.synth(data, n_train=n_train, n_test=n_test, seed=seed)
    train_csv, test_csv = data / "train.csv", data / "test.csv"
    cfg = TrainConfig(seed=seed, epochs=epochs or DEMO_EPOCHS)

    train_victim(train_csv, test_csv, out / "victims" / "clean", model, cfg, device)
    protected = out / "protected" / method
    manifest_path = protected / "manifest.json"
    if not manifest_path.exists() or (protected / api.STATE_DIR).exists():
        api.protect(train_csv, protected, method=method, strength=strength, seed=seed, device=device,
                    resume=(protected / api.STATE_DIR / "params.json").exists(), **protect_settings)
    manifest = json.loads(manifest_path.read_text())
    train_victim(protected / train_csv.name, test_csv, out / "victims" / method, model, cfg, device)

    results = {name: victim_metrics(out / "victims" / name, test_csv, device) for name in ("clean", method)}
    first = results["clean"]
    results["n_test_images"] = first["n_images"]
    from .data import read_pairs
    results["random_guess"] = random_guess(read_pairs(test_csv, check_files=False).caption_image, first["n_images"])
    results["protection"] = {"method": method, "strength": strength, "mean_psnr_db": manifest["mean_psnr_db"],
                             "max_linf_px": manifest["max_linf_px"], "generation_s": manifest["generation_s"]}
    results["demo_s"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
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
