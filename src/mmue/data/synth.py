"""The built-in captioned-scenes dataset: cluttered multi-object scenes with partial, varied captions.

Each scene holds 2-3 objects (12 shapes x 12 colours, two sizes, four textures, anywhere in the frame) on a
textured background with unmentioned distractors. Each of the 5 captions mentions a random subset of the
objects and of their attributes, through varied templates, as people describe pictures. Everything is drawn
from ``numpy.random.default_rng((seed, split, index))``, so any image can be regenerated on its own.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "pentagon", "ring",
          "crescent", "arrow", "bar"]
COLOURS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (40, 170, 60),
    "cyan": (40, 210, 220), "blue": (40, 70, 220), "purple": (140, 50, 190), "pink": (250, 140, 190),
    "brown": (130, 80, 40), "white": (245, 245, 245), "black": (20, 20, 20), "gray": (130, 130, 130),
}
TEXTURES = ["solid", "striped", "dotted", "outlined"]
BACKGROUNDS = {"dark": (35, 35, 45), "light": (215, 215, 205), "sandy": (200, 175, 120), "grassy": (90, 140, 70),
               "sky": (130, 175, 225), "stone": (120, 115, 110)}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
SCALE = 4  # supersampling factor: draw large, downsample with antialiasing


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    r: float

    def position(self) -> str:
        h = "left" if self.x < 0.36 else "right" if self.x > 0.64 else ""
        v = "top" if self.y < 0.36 else "bottom" if self.y > 0.64 else ""
        return f"{v} {h}".strip() or "center"


def _polygon(cx, cy, r, n, rot=0.0, inner=None):
    pts = []
    k = n * 2 if inner else n
    for i in range(k):
        a = rot + 2 * math.pi * i / k - math.pi / 2
        rr = (inner if (inner and i % 2) else 1.0) * r
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int, rot: float) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=255)
    elif shape == "ring":
        d.ellipse(box, fill=255)
        d.ellipse((cx - .55 * r, cy - .55 * r, cx + .55 * r, cy + .55 * r), fill=0)
    elif shape == "crescent":
        d.ellipse(box, fill=255)
        d.ellipse((cx - .45 * r, cy - 1.05 * r, cx + 1.4 * r, cy + .8 * r), fill=0)
    elif shape == "square":
        d.polygon(_polygon(cx, cy, r * 1.1, 4, rot=math.pi / 4), fill=255)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + .7 * r, cy), (cx, cy + r), (cx - .7 * r, cy)], fill=255)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, r, 3), fill=255)
    elif shape == "pentagon":
        d.polygon(_polygon(cx, cy, r, 5), fill=255)
    elif shape == "hexagon":
        d.polygon(_polygon(cx, cy, r, 6), fill=255)
    elif shape == "star":
        d.polygon(_polygon(cx, cy, r, 5, inner=0.45), fill=255)
    elif shape == "cross":
        w = .33 * r
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif shape == "arrow":
        d.polygon([(cx - r, cy - .25 * r), (cx + .1 * r, cy - .25 * r), (cx + .1 * r, cy - .7 * r), (cx + r, cy),
                   (cx + .1 * r, cy + .7 * r), (cx + .1 * r, cy + .25 * r), (cx - r, cy + .25 * r)], fill=255)
    elif shape == "bar":
        d.rectangle((cx - r, cy - .3 * r, cx + r, cy + .3 * r), fill=255)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(shape)
    if shape in ("arrow", "bar", "cross") and rot:
        m = m.rotate(math.degrees(rot) % 90 if shape == "cross" else math.degrees(rot), center=(cx, cy))
    return m


@lru_cache(maxsize=None)
def _pattern(texture: str, size: int) -> np.ndarray:
    """Full-frame stripe or dot pattern, drawn once per size."""
    t = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(t)
    if texture == "striped":
        for k in range(-size, 2 * size, 6 * SCALE):
            d.line([(k, 0), (k + size, size)], fill=255, width=int(2.5 * SCALE))
    else:
        step = 5 * SCALE
        for yy in range(0, size, step):
            for xx in range(0, size, step):
                d.ellipse((xx, yy, xx + 2.2 * SCALE, yy + 2.2 * SCALE), fill=255)
    return np.asarray(t)


def _texture_mask(texture: str, shape: str, cx: float, cy: float, r: float, size: int, rot: float) -> Image.Image:
    mask = _shape_mask(shape, cx, cy, r, size, rot)
    if texture == "solid":
        return mask
    if texture == "outlined":  # the shape minus a smaller copy of itself
        inner = _shape_mask(shape, cx, cy, max(r - 2.2 * SCALE, 1.0), size, rot)
        return Image.fromarray(np.clip(np.asarray(mask, dtype=np.int16) - np.asarray(inner), 0, 255).astype(np.uint8))
    return Image.fromarray(np.minimum(np.asarray(mask), _pattern(texture, size)))


def _jitter(rgb, rng, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _background(rng, size: int) -> tuple[Image.Image, str]:
    name = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    base = np.array(BACKGROUNDS[name], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    ang = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(ang) * xx + np.sin(ang) * yy)[..., None] * rng.uniform(-40, 40)
    noise = rng.normal(0, 1, (size // 16, size // 16, 3)).astype(np.float32)
    coarse = Image.fromarray(((noise * 20) + 128).clip(0, 255).astype(np.uint8))
    noise = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32) - 128
    img = Image.fromarray(np.clip(base + grad + noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):  # clutter: lines and blobs nobody mentions
        c = _jitter(tuple(int(v) for v in base), rng, 55)
        if rng.random() < 0.5:
            p = rng.uniform(0, size, 4)
            d.line([tuple(p[:2]), tuple(p[2:])], fill=c, width=SCALE)
        else:
            cx, cy = rng.uniform(0, size, 2)
            rr = rng.uniform(1, 3) * SCALE
            d.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=c)
    return img, name


def _place(rng, n: int) -> list[tuple[float, float, float, str]]:
    out: list[tuple[float, float, float, str]] = []
    for _ in range(n):
        for _attempt in range(50):
            size = "large" if rng.random() < 0.5 else "small"
            r = rng.uniform(0.19, 0.24) if size == "large" else rng.uniform(0.11, 0.14)
            x, y = rng.uniform(r, 1 - r, 2)
            if all(math.hypot(x - a, y - b) > (r + c) * 0.85 for a, b, c, _ in out):
                out.append((x, y, r, size))
                break
    return out


def render_scene(rng: np.random.Generator, image_size: int = 64, shape: str | None = None
                 ) -> tuple[Image.Image, list[Obj], str]:
    """A scene of 2-3 objects; with ``shape``, a single object of that shape (the zero-shot split)."""
    size = image_size * SCALE
    img, bg = _background(rng, size)
    objs = []
    for x, y, r, sz in _place(rng, 1 if shape else int(rng.integers(2, 4))):
        o = Obj(shape or SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))], sz,
                TEXTURES[rng.choice(4, p=[0.55, 0.15, 0.15, 0.15])], x, y, r)
        mask = _texture_mask(o.texture, o.shape, x * size, y * size, r * size, size, rng.uniform(0, 2 * np.pi))
        img.paste(Image.new("RGB", (size, size), _jitter(COLOURS[o.colour], rng)), (0, 0), mask)
        objs.append(o)
    return img.resize((image_size, image_size), Image.LANCZOS), objs, bg


def _describe(o: Obj, rng, full: bool = False) -> str:
    words = []
    if full or rng.random() < 0.5:
        words.append(SIZE_WORDS[o.size][rng.integers(3)])
    if full or rng.random() < 0.97:
        words.append(o.colour)
    if o.texture != "solid" and (full or rng.random() < 0.8):
        words.append(o.texture)
    words.append(o.shape)
    np_ = " ".join(words)
    if not full and rng.random() < 0.3:
        pos = o.position()
        np_ += " in the center" if pos == "center" else f" at the {pos}"
    return ("an " if np_[0] in "aeiou" else "a ") + np_


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


NUMBER = {2: "two", 3: "three", 4: "four"}


def make_captions(objs: list[Obj], bg: str, rng: np.random.Generator, n: int = 5) -> list[str]:
    caps: list[str] = []
    while len(caps) < n:
        # people mention most of what they see, rarely everything about it
        k = len(objs) if rng.random() < 0.7 else int(rng.integers(1, len(objs) + 1))
        sub = [objs[i] for i in sorted(rng.choice(len(objs), k, replace=False))]
        parts = [_describe(o, rng) for o in sub]
        t = rng.integers(9)
        if t == 0:
            c = _join(parts)
        elif t == 1:
            c = "there is " + _join(parts)
        elif t == 2:
            c = "a picture of " + _join(parts)
        elif t == 3:
            c = f"{NUMBER[len(objs)]} shapes including " + _join(parts)
        elif t == 4:
            c = _join(parts) + f" on a {bg} background"
        elif t == 5 and len(sub) >= 2:
            a, b = sub[0], sub[1]
            rel = ("to the left of" if a.x < b.x else "to the right of") if abs(a.x - b.x) > abs(a.y - b.y) \
                else ("above" if a.y < b.y else "below")
            c = f"{_describe(a, rng)} {rel} {_describe(b, rng)}"
        elif t == 6:
            c = "i can see " + _join(parts)
        elif t == 7:
            c = _join(parts) + " among some clutter"
        else:
            c = "an image with " + _join(parts)
        if c not in caps:
            caps.append(c)
    return caps


SPLITS = {"train": 0, "test": 1, "zeroshot": 2}


def write_synth(out_dir: str | Path, n_train: int = 2000, n_test: int = 1000, captions_per_image: int = 5,
                image_size: int = 64, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Write ``images/{split}_{i:05d}.png`` and ``train.csv`` / ``test.csv`` (``filepath,caption``)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in tqdm(range(n), desc=f"synth {split}", disable=None if progress else True, leave=False):
            rng = np.random.default_rng((seed, SPLITS[split], i))
            img, objs, bg = render_scene(rng, image_size)
            rel = f"images/{split}_{i:05d}.png"
            img.save(out / rel)
            rows += [(rel, c) for c in make_captions(objs, bg, rng, captions_per_image)]
        path = out / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["filepath", "caption"])
            w.writerows(rows)
        written[split] = path
    return written


def write_zeroshot_split(out_dir: str | Path, per_class: int = 50, image_size: int = 64, seed: int = 0,
                         progress: bool = True) -> Path:
    """A zero-shot classification split: ``zeroshot/<shape>/<i>.png``, one object of that shape per image on the
    same cluttered backgrounds (12 classes, chance 1/12). Returns the folder."""
    root = Path(out_dir) / "zeroshot"
    for c, shape in enumerate(tqdm(SHAPES, desc="synth zeroshot", disable=None if progress else True, leave=False)):
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, _, _ = render_scene(np.random.default_rng((seed, SPLITS["zeroshot"], c, i)), image_size, shape)
            img.save(root / shape / f"{i:04d}.png")
    return root


def write_builtin(out_dir: str | Path, n_train: int = 2000, n_test: int = 1000, captions_per_image: int = 5,
                  image_size: int = 64, seed: int = 0, zeroshot_per_class: int = 50) -> dict[str, Path]:
    """The built-in dataset: train/test CSVs, and a zero-shot classification split (``zeroshot/<shape>/``)
    written first, since ``test.csv`` marks the whole folder complete."""
    extra = ({"zeroshot": write_zeroshot_split(out_dir, zeroshot_per_class, image_size, seed)}
             if zeroshot_per_class else {})
    return {**write_synth(out_dir, n_train, n_test, captions_per_image, image_size, seed), **extra}
