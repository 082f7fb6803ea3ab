"""``mmue app``: a local web page that protects a folder of captioned images, for people who never open a terminal.

Gradio (the convention of this field: file upload, galleries, progress) over the same commands as the CLI: the
page runs ``mmue protect`` and ``mmue verify`` as child processes, so a run can be cancelled (the process is
stopped) and resumed (the same upload with the same settings continues from its last checkpoint, also after the
app itself was killed). Everything it reads and writes stays inside its working folder: uploads are unpacked
there, zip entries that would land outside it (zip-slip) or links are refused, and uploads are capped in size.
It listens on 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .api import LIMITS, PACKAGED
from .data.layouts import detect
from .data.pairs import read_pairs
from .data.types import DataError
from .models import pretrained_tower_models
from .protect.manifest import PRIVATE
from .protect.package import package
from .protect.registry import OFFERED, get_method
from .verify import DEFAULT_MODELS, verify_table

STRENGTHS = {"low": "low: quick (minutes for a few hundred images on a laptop)",
             "mid": "mid: more rounds",
             "high": "high: the paper's budget (20 rounds; slow without a GPU)"}
DEFAULT_MAX_UPLOAD_MB = 2048
PREVIEWS = 6
ROUND = re.compile(r"round (\d+)/(\d+)")


class AppError(ValueError):
    """A problem with what the person gave the app, said so that they can fix it."""


# ------------------------------------------------------------------------------------------------ uploads
def safe_extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into ``dest``, refusing entries that would land outside it, links, and archives that
    unpack to more than ``max_bytes``."""
    dest = dest.resolve()
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise AppError(f"{archive.name}: not a readable zip file ({e})") from e
    with z:
        total = 0
        for info in z.infolist():
            name = info.filename
            target = (dest / name).resolve()
            if name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts \
                    or not target.is_relative_to(dest):
                raise AppError(f"{archive.name}: entry {name!r} would be written outside the working folder "
                               "(zip-slip); nothing was unpacked. Re-create the zip from the folder itself")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise AppError(f"{archive.name}: entry {name!r} is a symbolic link; links are not accepted")
            total += info.file_size
            if total > max_bytes:
                raise AppError(f"{archive.name}: unpacks to more than {max_bytes // 2**20} MB, the limit of this "
                               "app (--max-upload-mb)")
        z.extractall(dest)


def data_root(folder: Path) -> Path:
    """Where the data starts in an unpacked upload: its single top folder, if it has one (zips of a folder)."""
    top = [p for p in folder.iterdir() if p.name != "__MACOSX" and not p.name.startswith(".")]
    return top[0] if len(top) == 1 and top[0].is_dir() else folder


_DIGESTS: dict[tuple, str] = {}


def _digest(paths: list[Path]) -> str:
    """The upload's content hash, once per set of (path, size, mtime): every button press asks again."""
    key = tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths))
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash(paths)
    return _DIGESTS[key]


def _hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Upload:
    folder: Path        # the job folder: workdir/jobs/<content hash>
    root: Path          # the unpacked data, in its layout: what mmue protect and mmue verify read
    layout: str
    n_images: int
    n_captions: int


def receive(files: list[str | Path], workdir: Path, max_bytes: int) -> Upload:
    """Copy or unpack the uploaded files into a job folder named by their content (so the same upload finds its
    earlier, possibly unfinished, runs), then read their layout."""
    if not files:
        raise AppError("upload a zip of your folder, or the images together with their captions file")
    paths = [Path(f) for f in files]
    size = sum(p.stat().st_size for p in paths)
    if size > max_bytes:
        raise AppError(f"the upload is {size / 2**20:.0f} MB, more than this app's limit of "
                       f"{max_bytes // 2**20} MB (--max-upload-mb)")
    folder = workdir / "jobs" / _digest(paths)
    data = folder / "input"
    if not (folder / "received").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
            safe_extract(paths[0], data, max_bytes)
        else:
            for p in paths:
                if p.suffix.lower() == ".zip":
                    raise AppError(f"{p.name}: upload a zip on its own, not together with other files")
                shutil.copyfile(p, data / Path(p.name).name)
        (folder / "received").write_text("")
    root = data_root(data)
    try:
        layout, pairs = detect(root), read_pairs(root)
    except DataError as e:
        raise AppError(str(e).replace(str(folder) + os.sep, "")) from e
    return Upload(folder, root, layout, pairs.n_images, len(pairs.captions))


# ------------------------------------------------------------------------------------------------ runs
FORMATS = {"png": "PNG (lossless, largest)", "jpeg": "JPEG, quality 90", "webp": "WebP, quality 90"}


def run_dir(up: Upload, preset: str, strength: str, rounds: int | None, image_format: str = "png") -> Path:
    return up.folder / "runs" / (f"{preset}-{strength}" + (f"-r{rounds}" if rounds else "")
                                 + ("" if image_format == "png" else f"-{image_format}"))


def protect_command(up: Upload, out: Path, preset: str, strength: str, rounds: int | None, device: str,
                    image_format: str = "png") -> list[str]:
    cmd = [sys.executable, "-m", "mmue", "protect", "--train-data", str(up.root), "--out", str(out),
           "--method", preset, "--strength", strength, "--device", device, "--image-format", image_format]
    if rounds:
        cmd += ["--rounds", str(int(rounds))]
    if (out / ".mmue_state").exists():
        cmd.append("--resume")   # an earlier run of this upload with these settings was stopped: continue it
    return cmd


# the models the check trains: small ones from scratch, and the scraper who fine-tunes public pretrained towers
CHECK_MODELS = {",".join(DEFAULT_MODELS): "from scratch: a small ResNet and a small ViT",
                ",".join(DEFAULT_MODELS + ("mmue-effl0-minilm",)):
                    "those, and public pretrained towers fine-tuned (mmue-effl0-minilm; slower)"}
DEFAULT_CHECK = next(iter(CHECK_MODELS))
VICTIM = re.compile(r"victim (\d+)/(\d+): (.*)$")


def check_models() -> list[str]:
    """The check's choices this install can train: fine-tuning needs the towers' packages (mmue[pretrained])."""
    towers = set(pretrained_tower_models(installed=True))
    return [k for k in CHECK_MODELS if set(k.split(",")) - set(DEFAULT_MODELS) <= towers]


def check_dir(up: Upload, epochs) -> Path:
    """Where the checks of this upload train their models: one folder per epoch setting (a model trained with
    other epochs is not this check's), shared by every protected copy of it and every choice of models (verify
    names each model's folder by the data it trains on: checking another preset trains only its copy's models)."""
    return up.folder / "verify" / (f"epochs-{int(epochs)}" if epochs else "recipe")


def verify_command(up: Upload, out: Path, report: Path, models: str, epochs, device: str,
                   others: Upload | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "mmue", "verify", "--clean", str(up.root), "--protected", str(out),
           "--out", str(report), "--model", models, "--device", device]
    return (cmd + (["--epochs", str(int(epochs))] if epochs else [])
            + (["--distractors", str(others.root)] if others is not None else []))


def eta(started: float, done: int, total: int) -> str:
    if not done:
        return ""
    left = (time.monotonic() - started) / done * (total - done)
    return f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"


def noise_view(before: Image.Image, after: Image.Image, gain: int = 10) -> Image.Image:
    """The noise made visible: (after - before) x gain around mid-grey."""
    import numpy as np
    a = np.asarray(before.convert("RGB"), dtype=np.int16)
    b = np.asarray(after.convert("RGB"), dtype=np.int16)
    return Image.fromarray(np.clip(128 + gain * (b - a), 0, 255).astype("uint8"))


def _manifest(out: Path) -> dict:
    return json.loads((out / PRIVATE / "manifest.json").read_text())


def previews(up: Upload, out: Path, man: dict, n: int = PREVIEWS) -> tuple[list[tuple[str, str]], str]:
    """Gallery items (before | after | noise x10, one picture per image, captioned with its PSNR) and the HTML
    of their published captions with the trigger marked."""
    pub = read_pairs(out / man["data"])
    folder = up.folder / "previews" / out.name
    folder.mkdir(parents=True, exist_ok=True)
    items, rows = [], []
    for i, e in enumerate(man["images"][:n]):
        before = Image.open(up.root / e["source"]).convert("RGB")
        after = Image.open(out / e["file"]).convert("RGB")
        views = [before, after, noise_view(before, after)]
        w, h = after.size
        scale = min(900 / (3 * w), 300 / h)   # small images blown up pixel for pixel, large ones shrunk
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        views = [v.resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS) for v in views]
        strip = Image.new("RGB", (3 * size[0] + 16, size[1]), "white")
        for k, im in enumerate(views):
            strip.paste(im, (k * (size[0] + 8), 0))
        path = folder / f"{i:03d}.png"
        strip.save(path)
        psnr = f"{e['psnr_db']:.1f} dB" if e["psnr_db"] is not None else "identical"
        items.append((str(path), f"{Path(e['file']).name}: before | after | noise x10 (PSNR {psnr})"))
        caption = pub.captions[pub.image_captions[i][0]]
        marked = html.escape(caption)
        if e["trigger"]:
            t = html.escape(e["trigger"])
            marked = marked.replace(t, f"<mark>{t}</mark>", 1)
        rows.append(f"<li><b>{html.escape(Path(e['file']).name)}</b> (PSNR {psnr}): {marked}</li>")
    return items, "<ul class='mmue-captions'>" + "".join(rows) + "</ul>"


def report(up: Upload, out: Path, man: dict, preset: str, strength: str) -> Path:
    """A short Markdown report of the run, for the person's records (no key in it)."""
    p = get_method(preset)
    kept = (f" at quality {man['quality']}, {100 * man['mean_noise_kept']:.0f} % of the noise survived the save"
            if "mean_noise_kept" in man else "")
    change = (f"at most {man['max_linf_px']}/255 per pixel; mean PSNR {man['mean_psnr_db']} dB "
              f"(min {man['min_psnr_db']} dB)")
    text = f"""# MMUE protection report

- input: {up.n_images} images, {up.n_captions} captions ({up.layout} layout)
- preset: `{preset}` at strength `{strength}`: {p.summary}
- measured: {p.measured}
- image change: {change}
- files: {man.get('image_format', 'png').upper()}{kept}; no EXIF (location, camera, dates dropped)
- time: {man.get('generation_s', 0):.0f} s

**Publish** `protected.zip` (images and captions in your layout, and a manifest of file hashes; after unzipping,
`mmue check FOLDER` confirms nothing changed). **Keep `private-record.zip` to yourself**: it holds the trigger
words and the secret seed; anyone who has it can remove the protection from the captions.

{LIMITS}
"""
    path = up.folder / "downloads" / out.name / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def downloads(up: Upload, out: Path, man: dict, preset: str, strength: str) -> list[str]:
    folder = up.folder / "downloads" / out.name
    folder.mkdir(parents=True, exist_ok=True)
    packed = out / PACKAGED   # mmue protect packs a folder's copy in its layout
    if not packed.is_file():  # a run finished before it did
        package(out, up.layout, packed)
    with zipfile.ZipFile(folder / "private-record.zip", "w") as z:
        z.write(out / PRIVATE / "manifest.json", "private/manifest.json")
    return [str(packed), str(report(up, out, man, preset, strength)), str(folder / "private-record.zip")]


class Child:
    """A command the page runs (``mmue protect`` / ``mmue verify``), used as ``with Child(...) as child``: iterate
    it for its output lines as they come; Cancel (a key in ``cancelled``) stops it, and so does leaving the
    ``with`` early (the page's generator closed). Afterwards ``code``, ``stopped_by_cancel()`` and ``shown()``,
    its last lines without warnings."""

    def __init__(self, cmd: list[str], cwd: Path, key: str, running: dict, cancelled: set):
        self.cmd, self.cwd, self.key, self.running, self.cancelled, self.tail = cmd, cwd, key, running, cancelled, []

    def __enter__(self) -> "Child":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=str(self.cwd), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.running[self.key] = self.proc
        return self

    def __iter__(self):
        for line in self.proc.stdout:
            self.tail = (self.tail + [line.rstrip()])[-12:]
            yield line
        self.proc.wait()

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:   # left early: stop the process (a rerun resumes it)
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.running.pop(self.key, None)

    @property
    def code(self) -> int:
        return self.proc.returncode

    def stopped_by_cancel(self) -> bool:
        """Whether Cancel ended it (the page's generator may outlive the cancel: it then says so itself)."""
        was = self.key in self.cancelled
        self.cancelled.discard(self.key)
        return was and self.code != 0

    def shown(self) -> str:
        return "\n".join(t for t in self.tail if "WARNING" not in t)


# ------------------------------------------------------------------------------------------------ the page
def build(workdir: Path, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, device: str = "auto"):
    import gradio as gr

    workdir = Path(workdir).resolve()
    max_bytes = max_upload_mb * 2**20
    running: dict[str, subprocess.Popen] = {}
    cancelled: set[str] = set()   # runs that Cancel stopped: their end is a cancel, not a failure
    checks: set[str] = set()      # the keys in ``running`` that are checks (mmue verify), not protections
    CANCELLED = "**Cancelled.** Press Protect to resume from the last finished round."
    CHECK_CANCELLED = "**Cancelled.** Press Check to resume from the last finished model."

    def choices():
        return [(f"{n} — {get_method(n).summary}", n) for n in OFFERED]

    def on_upload(files):
        if not files:
            return "", gr.update(interactive=False)
        try:
            up = receive(files, workdir, max_bytes)
        except AppError as e:
            return f"**Cannot use this upload:** {e}", gr.update(interactive=False)
        return (f"Found **{up.n_images} images** with **{up.n_captions} captions** "
                f"(layout: {up.layout}). Choose a preset and press Protect.", gr.update(interactive=True))

    def describe(preset):
        p = get_method(preset)
        return f"**{preset}**: {p.summary}  \n*cost*: {p.cost}  \n*measured*: {p.measured}"

    def protect(files, preset, strength, rounds, image_format, progress=gr.Progress()):
        empty = ([], "", None)
        try:
            up = receive(files, workdir, max_bytes)
        except AppError as e:
            yield (f"**Cannot use this upload:** {e}", *empty)
            return
        rounds = int(rounds) if rounds else None
        out = run_dir(up, preset, strength, rounds, image_format)
        resumed = False
        if not (out / PRIVATE / "manifest.json").exists():
            cmd = protect_command(up, out, preset, strength, rounds, device, image_format)
            resumed = "--resume" in cmd
            progress(0, desc="preparing the images")
            yield (("Resuming the stopped run..." if resumed else "Protecting...") + " (the page can stay open; "
                   "Cancel stops it and Protect resumes it later)", *empty)
            started, first = time.monotonic(), None
            with Child(cmd, up.folder, str(out), running, cancelled) as child:
                for line in child:
                    m = ROUND.search(line)
                    if m:
                        k, n = int(m.group(1)), int(m.group(2))
                        first = k - 1 if first is None else first   # a resumed run starts past round 1
                        left = eta(started, k - first, n - first)
                        progress(k / n, desc=f"round {k} of {n}{left}")
                        yield (f"Protecting: round {k} of {n}{left}" + (" (resumed)" if resumed else ""), *empty)
                    elif "wrote" in line and "protected images" in line:
                        progress(1.0, desc="writing the protected copy")
            if child.stopped_by_cancel():
                yield (CANCELLED, *empty)
                return
            if child.code != 0:
                yield (f"**Protection stopped** (exit {child.code}). Press Protect to resume.\n\n"
                       f"```\n{child.shown()}\n```", *empty)
                return
        man = _manifest(out)
        items, captions = previews(up, out, man)
        files_out = downloads(up, out, man, preset, strength)
        how = " (resumed after a stop)" if resumed else ""
        yield (f"**Protected {man['n_images']} images**{how} (mean PSNR {man['mean_psnr_db']} dB, at most "
               f"{man['max_linf_px']}/255 per pixel). Download `protected.zip` to publish; keep "
               "`private-record.zip` to yourself.", items, captions, files_out)

    def cancel():
        stopped = {"protect": gr.skip(), "check": gr.skip()}   # what was not running keeps its message
        for key, proc in list(running.items()):
            if proc.poll() is None:
                cancelled.add(key)
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                if key in checks:
                    stopped["check"] = CHECK_CANCELLED
                else:
                    stopped["protect"] = CANCELLED
        return stopped["protect"], stopped["check"]

    def verify(files, preset, strength, rounds, image_format, models, epochs, other_files, progress=gr.Progress()):
        try:
            up = receive(files, workdir, max_bytes)
            others = receive(other_files, workdir, max_bytes) if other_files else None
        except AppError as e:
            yield f"**Cannot use this upload:** {e}"
            return
        out = run_dir(up, preset, strength, int(rounds) if rounds else None, image_format)
        if not (out / PRIVATE / "manifest.json").exists():
            yield "Protect first: the check compares models trained on your clean and protected copies."
            return
        report = check_dir(up, epochs)
        cmd = verify_command(up, out, report, models, epochs, device, others)
        yield "Checking... (Cancel stops it; Check resumes it from the last finished model)"
        checks.add(str(report))
        started = time.monotonic()
        with Child(cmd, up.folder, str(report), running, cancelled) as child:
            for line in child:
                m = VICTIM.search(line)
                if m:
                    k, n = int(m.group(1)), int(m.group(2))
                    left = eta(started, k - 1, n)
                    progress((k - 1) / n, desc=f"model {k} of {n}{left}")
                    yield f"Checking: training model {k} of {n} ({m.group(3)}){left}"
        if child.stopped_by_cancel():
            yield CHECK_CANCELLED
            return
        if child.code != 0:
            yield f"**The check failed** (exit {child.code}):\n```\n{child.shown()}\n```"
            return
        r = json.loads((report / "verify.json").read_text())
        yield "```\n" + verify_table(r) + "\n```\n\n" + r["verdict"] + "\n\n" + r["caveats"]

    with gr.Blocks(title="MMUE: protect your captioned images") as page:
        gr.Markdown("# MMUE: make your captioned images unlearnable\n"
                    "Upload a folder of images with captions (as a zip, or the files themselves): a CSV/TSV of "
                    "image paths and captions, a `.txt` caption beside each image, or a Hugging Face "
                    "`metadata.csv` / `metadata.jsonl`. MMUE adds an invisible noise to each image and three "
                    "words to each caption, so that CLIP-style models trained on the copy learn little from it. "
                    "Everything stays on this computer.")
        upload = gr.File(label="your images and captions (a .zip, or the files)", file_count="multiple",
                         elem_id="upload")
        found = gr.Markdown(elem_id="found")
        with gr.Row():
            preset = gr.Radio(choices(), value=OFFERED[0], label="preset", elem_id="preset")
            strength = gr.Radio([(v, k) for k, v in STRENGTHS.items()], value="low", label="strength",
                                elem_id="strength")
        about = gr.Markdown(describe(OFFERED[0]), elem_id="about")
        image_format = gr.Radio([(v, k) for k, v in FORMATS.items()], value="png", label="image files",
                                elem_id="format")
        gr.Markdown("Output: your images at their own size with the original file names (no location or camera "
                    "data), and your captions in the layout you gave.")
        with gr.Accordion("advanced", open=False):
            rounds = gr.Number(value=None, precision=0, minimum=0, label="rounds (empty: the strength's)",
                               elem_id="rounds")
            epochs = gr.Number(value=None, precision=0, minimum=1, elem_id="epochs",
                               label="epochs of each model the check trains (empty: each model's usual recipe, "
                                     "20 from scratch, 8 to fine-tune)")
        with gr.Row():
            go = gr.Button("Protect", variant="primary", interactive=False, elem_id="protect")
            stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.Markdown(elem_id="status")
        gallery = gr.Gallery(label="before | after | noise x10", columns=2, height="auto", preview=False,
                             object_fit="contain", elem_id="gallery")
        captions = gr.HTML(elem_id="captions")
        files_out = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads")
        gr.Markdown("### Check the protection on your own data\nFor each kind of model below, trains one on "
                    "your clean copy, one on your protected copy and one on your protected images with your "
                    "original captions (as a scraper who re-captions them would), and says how often each finds "
                    "your images, beside the same model that never saw them. Minutes to hours, depending on the "
                    "data and the computer.")
        models = gr.Radio([(v, k) for k, v in CHECK_MODELS.items() if k in check_models()], value=DEFAULT_CHECK,
                          label="the scrapers' models", elem_id="models")
        others = gr.File(label="optional: other captioned images to search yours among, in any of the layouts above "
                               "(with few images of your own, every model finds them all in its top 10)",
                         file_count="multiple", elem_id="others")
        with gr.Row():
            check = gr.Button("Check my protected copy", elem_id="verify")
            stop_check = gr.Button("Cancel", variant="stop", elem_id="cancel-check")
        verdict = gr.Markdown(elem_id="verdict")

        upload.change(on_upload, upload, [found, go])
        preset.change(describe, preset, about)
        job = go.click(protect, [upload, preset, strength, rounds, image_format],
                       [status, gallery, captions, files_out])
        checking = check.click(verify, [upload, preset, strength, rounds, image_format, models, epochs, others],
                               verdict)
        for button in (stop, stop_check):   # either stops whatever runs; Protect / Check resume it
            button.click(cancel, None, [status, verdict], cancels=[job, checking])
    return page


def serve(host: str = "127.0.0.1", port: int = 7860, workdir: str | os.PathLike = "mmue-app",
          max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, device: str = "auto") -> None:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # gradio's own uploads and caches stay inside the working folder; no usage statistics leave the machine
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: listening on {host}: anyone who can reach this address can upload data and run "
              "protections on this computer", file=sys.stderr)
    page = build(workdir, max_upload_mb, device)
    page.queue().launch(server_name=host, server_port=port, max_file_size=max_upload_mb * 2**20,
                        allowed_paths=[str(workdir)], quiet=False)
