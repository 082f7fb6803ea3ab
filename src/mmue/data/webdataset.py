"""WebDataset tar shards: ``key.{jpg,png,...}`` + ``key.txt`` per sample, as open_clip reads them.

Reading: ``"data/shard-{00000..00009}.tar"`` (brace ranges and lists; several specs joined by ``::`` as in
open_clip) becomes a ``PairSet`` whose images are read straight from the shards by byte offset, so every
command that takes a CSV takes shards too. A sample's captions are ``key.json``'s ``"captions"`` list when
present (MMUE writes it, so multi-caption datasets round-trip), else the text of ``key.txt``.

Writing: ``ShardWriter`` fills ``00000.tar``, ``00001.tar``... with at most ``maxcount`` samples each, every
shard written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

from PIL import Image

from .types import DataError, PairSet

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_shards(spec: str) -> list[str]:
    """``a-{000..002}.tar::b.tar`` -> ``[a-000.tar, a-001.tar, a-002.tar, b.tar]`` (zero padding kept)."""
    out: list[str] = []
    for part in str(spec).split("::"):
        m = _RANGE.search(part) or _LIST.search(part)
        if not m:
            out.append(part)
            continue
        if m.re is _RANGE:
            lo, hi = m.group(1), m.group(2)
            items = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
        else:
            items = m.group(1).split(",")
        for it in items:
            out.extend(expand_shards(part[:m.start()] + it + part[m.end():]))
    return out


def is_webdataset(spec: str | os.PathLike) -> bool:
    s = str(spec)
    return s.endswith(".tar") or ".tar::" in s or (".tar" in s and "{" in s)


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the basename."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower()


def read_shards(spec: str | os.PathLike) -> PairSet:
    shards = [Path(s) for s in expand_shards(str(spec))]
    for s in shards:
        if not s.is_file():
            raise DataError(f"{s}: shard not found (from {spec!s}); brace ranges like shard-{{000..009}}.tar "
                            "are expanded, quote them in the shell")
    images, where, rows, captions, caption_image = [], [], [], [], []
    for shard in shards:
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, mode="r:") as tf:
                for info in tf:
                    if info.isfile():
                        key, ext = _split_key(info.name)
                        samples.setdefault(key, {})[ext] = info
                texts = {}
                for key, members in samples.items():
                    for ext in ("json", "txt"):
                        if ext in members:
                            texts[(key, ext)] = tf.extractfile(members[ext]).read().decode("utf-8")
        except (tarfile.TarError, UnicodeDecodeError) as e:
            raise DataError(f"{shard}: not a readable tar shard ({e})") from e
        for key, members in samples.items():
            img_ext = next((e for e in IMAGE_EXTS if e in members), None)
            if img_ext is None:
                raise DataError(f"{shard}, sample {key!r}: no image ({'/'.join(IMAGE_EXTS)}) next to "
                                f"{sorted(members)}; every sample needs key.jpg|png and key.txt")
            caps = []
            if (key, "json") in texts:
                try:
                    caps = [c.strip() for c in json.loads(texts[(key, "json")]).get("captions", []) if c.strip()]
                except (json.JSONDecodeError, AttributeError) as e:
                    raise DataError(f"{shard}, sample {key!r}: bad {key}.json ({e})") from e
            if not caps and (key, "txt") in texts:
                caps = [texts[(key, "txt")].strip()] if texts[(key, "txt")].strip() else []
            if not caps:
                raise DataError(f"{shard}, sample {key!r}: no caption (empty or missing {key}.txt)")
            info = members[img_ext]
            images.append(f"{shard.name}/{key}.{img_ext}")
            where.append((shard, info.offset_data, info.size))
            for c in caps:
                rows.append({"image": images[-1], "caption": c})
                captions.append(c)
                caption_image.append(len(images) - 1)
    if not images:
        raise DataError(f"{spec}: the shards hold no samples")

    def opener(i: int) -> Image.Image:
        path, offset, size = where[i]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.convert("RGB")
        except OSError as e:
            raise DataError(f"{path}: unreadable image {images[i]} ({e})") from e

    return PairSet(shards[0], shards[0].parent, "image", "caption", ",", ["image", "caption"], rows, images,
                   captions, caption_image, opener=opener)


class ShardWriter:
    """Write samples into numbered tar shards in ``folder``; ``spec`` names them all once closed."""

    def __init__(self, folder: str | os.PathLike, maxcount: int = 1000):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.maxcount = maxcount
        self.names: list[str] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def _roll(self) -> None:
        self._finish()
        name = f"{len(self.names):05d}.tar"
        self.names.append(name)
        self._tar = tarfile.open(self.folder / (name + ".tmp"), mode="w", format=tarfile.USTAR_FORMAT)
        self._count = 0

    def _finish(self) -> None:
        if self._tar is not None:
            self._tar.close()
            name = self.names[-1]
            os.replace(self.folder / (name + ".tmp"), self.folder / name)
            self._tar = None

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if self._tar is None or self._count >= self.maxcount:
            self._roll()
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1

    def close(self) -> str:
        self._finish()
        if not self.names:
            return ""
        last = len(self.names) - 1
        return "00000.tar" if last == 0 else f"{{00000..{last:05d}}}.tar"

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self._tar is not None:  # leave no half shard under a final name
            self._tar.close()
            (self.folder / (self.names[-1] + ".tmp")).unlink(missing_ok=True)
