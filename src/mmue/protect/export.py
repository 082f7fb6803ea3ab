"""Turn a ``ProtectionState`` into a publishable dataset, kept apart from its key.

``out/publish/`` is what the owner uploads: the images as ``images/<path relative to the images' common
folder>.png`` (stems kept; ``.jpg`` / ``.webp`` with ``image_format``), the CSV (the input's name, columns and
separator, with the new image paths and the triggered captions) or, with ``out_format="webdataset"``, tar shards
under ``shards/``, and a public ``manifest.json`` with file hashes only (``mmue check`` verifies a copy against
it; that layout and the check are ``manifest.py``). ``out/private/`` holds the key: the full manifest (seed,
parameters, every image's trigger, its source path), which must never be published: anyone with the triggers
deletes them exactly. ``out/README.txt`` says so.
Noise is optimised on the trainer's view of each image (the model's grid) and laid over every native pixel, edge
to edge: stretched to the shorter side, tiled along the longer one (``framing.py``; |noise| <= eps still holds);
for images already at the model's size this is exact. Written files carry no EXIF (location and camera data are
dropped); an ICC colour profile is kept. JPEG and WebP output record how much of the noise survived the lossy
save (``noise_kept``).
"""
from __future__ import annotations

import hashlib
from collections import Counter
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.pairs import PairSet, write_pairs
from ..data.webdataset import ShardWriter
from ..fileio import atomic_write, atomic_write_json
from ..models.tokens import TokenCodec
from ..workers import ordered_map
from ..quality import add_noise, diff_stats, dot, row_block_diffs
from .framing import stretch_taps, tile_index, trainer_crop
from .manifest import PRIVATE, PUBLISH, README, sha256
from .placement import insert_trigger
from .store import ProtectionState

try:   # Intel's ISA-L deflate: a standard zlib stream at 3-4x zlib's speed (the PNG of a 7 MP photo: 66 against 225 ms)
    from isal.isal_zlib import compress as _deflate
except ImportError:   # pragma: no cover - a platform without its wheel: the standard library, slower
    from zlib import compress as _deflate


IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


def output_paths(pairs: PairSet, ext: str = ".png") -> list[str]:
    """Relative output path of each image: under images/, mirrored from their common folder, with suffix ``ext``.
    Distinct sources never share an output: where two would (``photo.png`` and ``photo.jpg``), each keeps its own
    extension in the name (``photo-png.png``, ``photo-jpg.png``); the manifest records source -> file."""
    absolute = [Path(os.path.normpath(pairs.root / p)) for p in pairs.images]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    rel = [a.relative_to(common) for a in absolute]
    plain = [r.with_suffix(ext) for r in rel]
    taken = Counter(str(p).lower() for p in plain)   # case-insensitive: the copy may land on such a disk
    out = [r.with_name(f"{r.stem}-{r.suffix.lstrip('.').lower() or 'noext'}{ext}") if taken[str(p).lower()] > 1
           else p for r, p in zip(rel, plain)]
    seen: Counter = Counter()
    for i, o in enumerate(out):   # still equal (photo.JPG and photo.jpg): a numbered suffix, in input order
        seen[str(o).lower()] += 1
        if seen[str(o).lower()] > 1:
            out[i] = o.with_name(f"{o.stem}-{seen[str(o).lower()]}{ext}")
    if len({str(o).lower() for o in out}) != len(out):
        raise RuntimeError("output names still collide after disambiguation; please report this dataset's names")
    return [str(Path("images") / o) for o in out]


def native_noise(noise: torch.Tensor, width: int, height: int, eps_px: int, stretch: str = "bilinear"
                 ) -> torch.Tensor:
    """int8 [3,H,W] noise on every native pixel from the pattern [3,S,S] on the trainer's centre square: stretched
    to the shorter side (bilinear, antialiased where that is below S, so each value is a mean of values within
    +-eps; or ``nearest``: blocks), tiled along the longer side from the centre square outwards
    (``framing.tile_index``)."""
    if tuple(noise.shape[-2:]) == (height, width):
        return noise
    s = noise.shape[-1]
    left, top, tw, th = trainer_crop(width, height, s)
    if min(tw, th) < s:   # shrinking: antialiased, on the crop, then tiled (small images: cost does not matter)
        up = F.interpolate(noise[None].float(), size=(th, tw), mode="bilinear", align_corners=False,
                           antialias=True)[0].round_().clamp_(-eps_px, eps_px).to(torch.int8)
        if (tw, th) == (width, height):
            return up
        return up[:, tile_index(height, th, top)][:, :, tile_index(width, tw, left)]
    # stretching and tiling are linear along each axis and each native pixel takes its value from two grid cells
    # per axis (``framing.stretch_taps``): a 64-column pattern is widened first (64 rows x W x 3, small), then each
    # block of output rows is a weighted sum of two of its rows, written straight into channels-last memory
    # (a 12 MP photo in ~0.05 s and a few MB of floats at a time)
    i0, i1, w0 = (t.numpy() for t in stretch_taps(width, tw, left, s, stretch))
    pattern = noise.numpy().astype(np.float32)                                         # [3,S,S]
    w0 = w0.astype(np.float32)
    right = pattern[:, :, i0] * w0 + pattern[:, :, i1] * (1 - w0)                      # [3,S,W]
    c = pattern.shape[0]
    right = np.ascontiguousarray(right.transpose(1, 2, 0)).reshape(s, width * c)      # [S, W*C]
    r0, r1, v0 = (t.numpy() for t in stretch_taps(height, th, top, s, stretch))
    v0 = v0.astype(np.float32)[:, None]
    out = np.empty((height, width * c), dtype=np.int8)
    for r in range(0, height, 128):
        block = right[r0[r:r + 128]] * v0[r:r + 128]
        block += right[r1[r:r + 128]] * (1 - v0[r:r + 128])
        np.clip(np.rint(block, out=block), -eps_px, eps_px, out=block)
        out[r:r + 128] = block
    return torch.from_numpy(out).view(height, width, c).permute(2, 0, 1)   # [C,H,W], memory [H,W,C] as decoded


def encode_image(y: np.ndarray, image_format: str = "png", quality: int = 90, icc: bytes | None = None) -> bytes:
    """The file bytes of uint8 [H,W,3] ``y`` as PNG, JPEG (4:4:4 chroma: subsampling would halve colour noise)
    or WebP at ``quality``; no EXIF; ``icc`` profile kept."""
    fmt = IMAGE_FORMATS[image_format][0]
    if fmt == "PNG" and y.shape[0] * y.shape[1] > 1_000_000:
        return photo_png(y, icc)
    opts = {"PNG": {}, "JPEG": {"quality": quality, "subsampling": 0}, "WEBP": {"quality": quality, "method": 6}}[fmt]
    if icc:
        opts["icc_profile"] = icc
    buf = io.BytesIO()
    Image.fromarray(y).save(buf, format=fmt, **opts)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def photo_png(y: np.ndarray, icc: bytes | None = None) -> bytes:
    """A PNG of uint8 [H,W,3] ``y`` for photos: every row "up"-filtered and deflated at level 1 (ISA-L where
    installed). Pillow tries all five filters on every row: 0.6 s for a protected 7 MP photo at zlib level 1; this
    0.07 s (0.23 s with the standard zlib), its files 2 % smaller than Pillow's on ``benchmarks/native_bench.py``'s
    photos (5 % with zlib); the deflate lets the other threads run meanwhile."""
    h, w, c = y.shape
    rows = np.ascontiguousarray(y).reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 2                                   # filter type Up (the row above the first counts as zeros)
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])   # modulo 256, as the format wants
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))   # 8-bit RGB, no interlace
    profile = _chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)) if icc else b""
    return b"".join([b"\x89PNG\r\n\x1a\n", head, profile, _chunk(b"IDAT", _deflate(raw, 1)),
                     _chunk(b"IEND", b"")])


def rgb_profile(img: Image.Image) -> bytes | None:
    """The image's ICC profile if it describes RGB (a CMYK or grey source's profile does not fit the RGB copy)."""
    icc = img.info.get("icc_profile")
    return icc if icc and icc[16:20] == b"RGB " else None


def noise_kept(x, intended, saved) -> float:
    """The share of the intended noise ``intended - x`` that is still in ``saved``: the projection of what the save
    left onto it (1.0 for a lossless save, about 0 when the save erased it; a little above 1 where the codec's own
    error happens to line up with the noise). uint8 images of one shape and layout (tensors or arrays)."""
    nn = dn = 0
    for n, d in row_block_diffs(x, intended, saved):
        nn += dot(n, n)
        dn += dot(d, n)
    return dn / nn if nn else 1.0


def export(pairs: PairSet, state: ProtectionState, codec: TokenCodec, out_dir: str | os.PathLike, eps_px: int,
           params: dict, progress: bool = True, out_format: str = "files", maxcount: int = 1000,
           trigger_words: list[int] | None = None, image_format: str = "png", quality: int = 90,
           workers: int | None = None, stretch: str = "bilinear") -> dict:
    """Write the protected copy into ``out_dir``; returns the manifest. Originals are only read.

    ``out_format``: ``files`` (PNGs + a CSV like the input) or ``webdataset`` (``shards/NNNNN.tar`` with
    ``key.png``, ``key.txt`` = the first caption, ``key.json`` = all captions; feeds open_clip directly).
    ``trigger_words``: before which word of each caption its image's trigger goes (default: all 0, a prefix).
    ``image_format``: png (lossless), jpeg or webp at ``quality``. ``workers``: threads that read, protect and
    encode images (default: the usable cores, at most 4); files are written in order by the calling thread.
    """
    if out_format not in ("files", "webdataset"):
        raise ValueError(f"out_format must be files or webdataset, got {out_format!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    ext = IMAGE_FORMATS[image_format][1]
    lossy = image_format != "png"
    out = Path(out_dir)
    pub = out / PUBLISH
    pub.mkdir(parents=True, exist_ok=True)
    triggers = [codec.trigger_text(t) if t.numel() else "" for t in state.triggers]
    words = trigger_words if trigger_words is not None else [0] * len(pairs.captions)
    captions = [insert_trigger(c, triggers[ci], w) for c, ci, w in zip(pairs.captions, pairs.caption_image, words)]
    rel_out = output_paths(pairs, ext) if out_format == "files" else [f"{i:08d}" for i in range(pairs.n_images)]
    writer = ShardWriter(pub / "shards", maxcount) if out_format == "webdataset" else None
    def render(i: int) -> dict:
        """Image i protected and encoded (on a worker thread: decoding, stretching and encoding are the cost).
        Channels-last numpy throughout, as the decoder gives it and the encoders take it (numpy's integer
        kernels are 3x torch's on a CPU for this)."""
        src = pairs.open_image(i)
        x = np.asarray(src)                                                               # [H,W,3] uint8
        noise = native_noise(state.noise[i], src.width, src.height, eps_px, stretch).permute(1, 2, 0).numpy()
        y, p, linf = add_noise(x, noise)                                                  # saturating
        data_bytes = encode_image(y, image_format, quality, rgb_profile(src))
        kept = None
        if lossy:   # what a reader of the file gets, and how much of the noise is still in it
            with Image.open(io.BytesIO(data_bytes)) as saved:
                decoded = np.asarray(saved.convert("RGB"))
            kept = noise_kept(x, y, decoded)
            p, linf = diff_stats(x, decoded)
        return {"bytes": data_bytes, "size": [src.width, src.height], "psnr": p, "linf_px": linf, "kept": kept,
                "sha256": hashlib.sha256(data_bytes).hexdigest()}

    per_image, psnrs = [], []
    rendered = ordered_map(render, range(pairs.n_images), workers)
    for i, r in enumerate(tqdm(rendered, total=pairs.n_images, desc="write images",
                               disable=None if progress else True, leave=False)):
        data_bytes = r["bytes"]
        if writer is None:
            target = pub / rel_out[i]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: tmp.write_bytes(data_bytes))
        else:
            caps = [captions[c] for c in pairs.image_captions[i]]
            # no source path in the shard: it may name private folders
            writer.write(rel_out[i], {ext.lstrip("."): data_bytes, "txt": caps[0].encode(),
                                      "json": json.dumps({"captions": caps}).encode()})
        p = r["psnr"]
        psnrs.append(p)
        per_image.append({"source": pairs.images[i], "file": f"{PUBLISH}/{rel_out[i]}", "trigger": triggers[i],
                          "size": r["size"], "linf_px": r["linf_px"],
                          "psnr_db": None if p == float("inf") else round(p, 3),
                          **({"noise_kept": round(r["kept"], 4)} if lossy else {}),
                          "sha256": r["sha256"]})
    if writer is None:
        csv_path = pub / pairs.table_name
        write_pairs(pairs, csv_path, captions, images=[rel_out[i] for i in pairs.caption_image])
        data = csv_path.name
        outputs = {"data": f"{PUBLISH}/{data}", "csv": f"{PUBLISH}/{data}", "csv_sha256": sha256(csv_path)}
        files = {rel_out[i]: e["sha256"] for i, e in enumerate(per_image)}
        files[data] = outputs["csv_sha256"]
    else:
        data = "shards/" + writer.close()
        outputs = {"data": f"{PUBLISH}/{data}", "out_format": "webdataset", "n_shards": len(writer.names)}
        files = {f"shards/{n}": sha256(pub / "shards" / n) for n in writer.names}
    finite = [p for p in psnrs if p != float("inf")]
    manifest = {
        **params,
        "n_images": pairs.n_images, "n_captions": len(pairs.captions), **outputs,
        "mean_psnr_db": round(sum(finite) / len(finite), 3) if finite else None,
        "min_psnr_db": round(min(finite), 3) if finite else None,
        "max_linf_px": max(r["linf_px"] for r in per_image),
        "image_format": image_format, **({"quality": quality, "mean_noise_kept": round(
            sum(r["noise_kept"] for r in per_image) / len(per_image), 4)} if lossy else {}),
        "metadata": "EXIF (location, camera, dates) dropped; ICC colour profile kept where the source had one",
        "images": per_image,
    }
    public = {"protected_by": "mmue", "data": data, "n_images": pairs.n_images, "n_captions": len(pairs.captions),
              "files": dict(sorted(files.items()))}
    atomic_write_json(pub / "manifest.json", public)
    atomic_write((out / "README.txt"), lambda tmp: tmp.write_text(README))
    (out / PRIVATE).mkdir(exist_ok=True)
    atomic_write_json(out / PRIVATE / "manifest.json", manifest)   # last: its presence marks the run finished
    return manifest
