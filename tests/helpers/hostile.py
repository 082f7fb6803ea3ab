"""Hostile inputs a new user's dataset may hold: broken, odd and adversarial images, CSVs and paths.

``build(folder)`` writes each case as its own small dataset (``folder/<case>/data.csv`` plus its files) and
returns ``{case: (what it is, expected)}``, expected ``"ok"`` (protected like any image) or ``"error"`` (a
``DataError`` naming the file and the row). Used by tests/test_hostile.py and for the table in the docs.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _img(size=(32, 32), mode="RGB", seed=0) -> Image.Image:
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(a).convert(mode)


def _csv(folder: Path, rows: list[tuple[str, str]], name="data.csv", text: str | None = None,
         encoding="utf-8") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        text = "filepath,caption\n" + "".join(f'{p},"{c}"\n' for p, c in rows)
    (folder / name).write_bytes(text.encode(encoding))


def _png(path: Path, img: Image.Image | None = None, **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (img or _img()).save(path, **save)


def build(root: Path) -> dict[str, tuple[str, str]]:
    cases: dict[str, tuple[str, str]] = {}

    def case(name, what, expected):
        cases[name] = (what, expected)
        return root / name

    good = ("ok.png", "a good image")
    # ---- images
    d = case("truncated-png", "a PNG cut off half-way", "error")
    _png(d / "ok.png")
    buf = io.BytesIO()
    _img((64, 64)).save(buf, format="PNG")
    (d / "x.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _csv(d, [good, ("x.png", "a truncated image")])
    d = case("zero-bytes", "an empty file named .png", "error")
    _png(d / "ok.png")
    (d / "x.png").write_bytes(b"")
    _csv(d, [good, ("x.png", "empty")])
    d = case("not-an-image", "a text file named .jpg", "error")
    _png(d / "ok.png")
    (d / "x.jpg").write_text("hello, I am not a picture")
    _csv(d, [good, ("x.jpg", "text")])
    d = case("one-pixel", "a 1x1 image", "error")
    _png(d / "ok.png")
    _png(d / "x.png", _img((1, 1)))
    _csv(d, [good, ("x.png", "a dot")])
    d = case("sliver", "a 4x300 image", "error")
    _png(d / "ok.png")
    _png(d / "x.png", _img((4, 300)))
    _csv(d, [good, ("x.png", "a line")])
    d = case("missing-file", "a row naming a file that does not exist", "error")
    _png(d / "ok.png")
    _csv(d, [good, ("nope.png", "missing")])
    d = case("directory", "a row naming a folder", "error")
    _png(d / "ok.png")
    (d / "sub.png").mkdir(parents=True)
    _csv(d, [good, ("sub.png", "a folder")])
    d = case("16-bit", "a 16-bit grayscale PNG", "ok")
    _png(d / "ok.png")
    a = (np.random.default_rng(1).integers(0, 65536, (32, 32))).astype(np.uint16)
    _png(d / "x.png", Image.fromarray(a))
    _csv(d, [good, ("x.png", "sixteen bits")])
    d = case("palette-alpha", "a palette PNG with transparency", "ok")
    _png(d / "ok.png")
    p = _img().convert("P")
    p.info["transparency"] = 0
    _png(d / "x.png", p, transparency=0)
    _csv(d, [good, ("x.png", "palette")])
    d = case("rgba", "an RGBA PNG", "ok")
    _png(d / "ok.png")
    _png(d / "x.png", _img(mode="RGBA"))
    _csv(d, [good, ("x.png", "alpha")])
    d = case("cmyk-jpeg", "a CMYK JPEG", "ok")
    _png(d / "ok.png")
    _png(d / "x.jpg", _img(mode="CMYK"), format="JPEG")
    _csv(d, [good, ("x.jpg", "cmyk")])
    d = case("animated-gif", "a 3-frame GIF (its first frame is protected)", "ok")
    _png(d / "ok.png")
    frames = [_img(seed=s).convert("P") for s in range(3)]
    (d / "x.gif").parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(d / "x.gif", save_all=True, append_images=frames[1:])
    _csv(d, [good, ("x.gif", "animated")])
    d = case("grayscale-jpeg", "a grayscale (L) JPEG", "ok")
    _png(d / "ok.png")
    _png(d / "x.jpg", _img(mode="L"), format="JPEG")
    _csv(d, [good, ("x.jpg", "gray")])
    d = case("webp-tiff-bmp", "WebP, TIFF and BMP files", "ok")
    for ext in ("webp", "tiff", "bmp"):
        _png(d / f"x.{ext}")
    _csv(d, [("x.webp", "webp"), ("x.tiff", "tiff"), ("x.bmp", "bmp")])
    d = case("panorama", "a 600x40 panorama", "ok")
    _png(d / "ok.png")
    _png(d / "x.png", _img((600, 40)))
    _csv(d, [good, ("x.png", "wide")])
    # ---- paths
    d = case("unicode-names", "file and folder names with spaces, accents and emoji", "ok")
    _png(d / "été à Paris" / "photo 1 🌞.png")
    _csv(d, [("été à Paris/photo 1 🌞.png", "summer")])
    d = case("two-spellings", "one image named by a relative and an absolute path", "ok")
    _png(d / "x.png")
    _csv(d, [("x.png", "one"), (str((d / "x.png").resolve()), "two")])
    d = case("same-stem", "photo.png and photo.jpg side by side", "ok")
    _png(d / "photo.png")
    _png(d / "photo.jpg", _img(seed=3), format="JPEG")
    _csv(d, [("photo.png", "png"), ("photo.jpg", "jpg")])
    d = case("symlink", "a link to an image elsewhere", "ok")
    _png(root / "_elsewhere" / "real.png")
    d.mkdir(parents=True, exist_ok=True)
    os.symlink(root / "_elsewhere" / "real.png", d / "link.png")
    _csv(d, [("link.png", "linked")])
    d = case("dotdot", "a path through ../", "ok")
    _png(d / "a" / "x.png")
    _csv(d / "csvdir", [("../a/x.png", "up and down")])
    (d / "csvdir" / "data.csv").rename(d / "data.csv.tmp")
    (d / "data.csv.tmp").rename(d / "csvdir" / "data.csv")
    # ---- CSVs
    d = case("header-only", "a CSV with a header and no rows", "error")
    _csv(d, [], text="filepath,caption\n")
    d = case("empty-csv", "an empty CSV", "error")
    _csv(d, [], text="")
    d = case("wrong-columns", "columns named url,description", "error")
    _png(d / "ok.png")
    _csv(d, [], text="url,description\nok.png,hi\n")
    d = case("empty-caption", "a row with an empty caption", "error")
    _png(d / "ok.png")
    _csv(d, [good, ("ok.png", "")])
    d = case("latin-1", "a CSV saved as Latin-1", "error")
    _png(d / "ok.png")
    _csv(d, [("ok.png", "café crème")], encoding="latin-1")
    d = case("bom", "a CSV with a UTF-8 byte-order mark", "ok")
    _png(d / "ok.png")
    _csv(d, [], text="\ufefffilepath,caption\nok.png,hi there\n")
    d = case("multiline-caption", "a quoted caption over two lines, one with U+2028 inside", "ok")
    _png(d / "ok.png")
    _png(d / "b.png", _img(seed=2))
    _csv(d, [], text='filepath,caption\nok.png,"first line\nsecond line"\nb.png,"odd\u2028separator"\n')
    d = case("semicolons", "a ;-separated CSV with commas inside captions", "ok")
    _png(d / "ok.png")
    _csv(d, [], text="filepath;caption\nok.png;red, green, and blue\n")
    d = case("long-caption", "a 2000-word caption", "ok")
    _png(d / "ok.png")
    _csv(d, [("ok.png", " ".join(["word"] * 2000))])
    d = case("formula-caption", "a caption starting with =cmd| (spreadsheet injection)", "ok")
    _png(d / "ok.png")
    _csv(d, [("ok.png", "=cmd|' /C calc'!A0 a picture")])
    return cases
