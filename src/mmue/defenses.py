"""Attacker-side countermeasures, applied to released files before a victim is trained on them.

Each defense is a name: ``none``, ``jpeg-Q`` (re-save as JPEG at quality Q), ``grayscale``, ``blur-S`` (Gaussian,
sigma S px), ``bits-B`` (B-bit colour depth), ``resize-F`` (down by F then back up, bicubic), ``strip-K`` (drop
the first K words of every caption: trigger stripping), ``rare-N`` (drop every word that occurs in the captions
of fewer than N images: an attacker who knows triggers are rare words, wherever they sit), ``shuffle-captions``
(permute captions among an image's captions), ``oracle-captions`` (the released images with their *original*
captions: the bound for any caption cleaning, which measures what the image noise does alone), ``rrc-flip``
(random-resized-crop + flip augmentation during victim training, no file change), ``rrc-whole`` (the same
over the whole photo at its native aspect, as a trainer crops full-size photos; ``rrc-flip`` crops the model's
centre square) and ``crop-S`` (a bicubic random-resized-crop at S..1 of the area during training, no flip:
``crop-0.9`` is open_clip_train's default training view). ``bn-clean`` acts on the trained victim: its BatchNorm
statistics, which are those of the images it trained on, are re-estimated on clean images of the same kind (no label,
no gradient, seconds; the bench uses the originals of the training images, the bound for an attacker holding such
images). Defenses compose with ``+``, applied left to right (``rare-10+jpeg-75+rrc-flip``: the cheap attacker's
pipeline; ``bn-clean`` comes last). File defenses write a defended copy of the dataset; the originals and the
released copy are only read.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .augment import crop_scale
from .data.pairs import data_fingerprint, read_pairs, write_pairs
from .data.types import PairSet
from .fileio import atomic_write_json

TRAINING_DEFENSES = {"rrc-flip", "rrc-whole"}
MODEL_DEFENSES = {"bn-clean"}   # applied to the trained victim, after its training
_PATTERNS = {
    "jpeg": re.compile(r"^jpeg-(\d+)$"), "blur": re.compile(r"^blur-([\d.]+)$"), "bits": re.compile(r"^bits-(\d)$"),
    "resize": re.compile(r"^resize-([\d.]+)$"), "strip": re.compile(r"^strip-(\d+)$"),
    "rare": re.compile(r"^rare-(\d+)$"),
}
CAPTION_DEFENSES = ("strip", "rare", "shuffle-captions", "oracle-captions")


def is_training_defense(name: str) -> bool:
    """Whether ``name`` acts through the victim's training augmentation (no file is changed)."""
    return name in TRAINING_DEFENSES or crop_scale(name) is not None


def parts(name: str) -> list[str]:
    """The single defenses of a composed name, in the order they are applied."""
    return name.split("+")


def recalibrates(name: str) -> bool:
    """Whether ``name`` ends with ``bn-clean``: the victim's BatchNorm statistics are re-estimated on clean images
    after training."""
    return parts(name)[-1] == "bn-clean"


def trained_as(name: str) -> str:
    """The defense a victim under ``name`` is trained with: ``name`` without its model defense (``none`` if nothing
    is left). Two names that differ only by ``bn-clean`` share one trained victim."""
    return "+".join(p for p in parts(name) if p not in MODEL_DEFENSES) or "none"


def keeps_clean_data(name: str) -> bool:
    """Whether ``name`` leaves clean data and its training as they are, so a clean victim trained without it stands
    for it (putting back the original captions changes nothing in data that had no other captions)."""
    return all(p in ("none", "oracle-captions") for p in parts(name))


def keeps_files(name: str) -> bool:
    """Whether ``name`` trains on the files as published (no defense, or a training view only): a scraper who
    re-captions or re-saves them holds another copy."""
    return all(p == "none" or is_training_defense(p) or p in MODEL_DEFENSES for p in parts(name))


def uses_augment(name: str) -> str:
    """The victim's training augmentation under defense ``name`` ("rrc-flip", "rrc-whole", "crop-S" or "none")."""
    used = [p for p in parts(name) if is_training_defense(p)]
    if len(used) > 1:
        raise ValueError(f"defense {name!r}: one training augmentation at a time")
    return used[0] if used else "none"


def validate(name: str) -> str:
    if "+" in name:
        ps = parts(name)
        if "none" in ps or len(set(ps)) != len(ps):
            raise ValueError(f"defense {name!r}: compose distinct defenses other than none")
        if any(p in MODEL_DEFENSES for p in ps[:-1]):
            raise ValueError(f"defense {name!r}: bn-clean acts on the trained model, so it comes last "
                             f"({'+'.join(p for p in ps if p not in MODEL_DEFENSES)}+bn-clean)")
        for p in ps:
            validate(p)
        return name
    if name in ("none", "grayscale", "shuffle-captions", "oracle-captions") or is_training_defense(name) \
            or name in MODEL_DEFENSES:
        return name
    for kind, pat in _PATTERNS.items():
        m = pat.match(name)
        if m:
            v = float(m.group(1))
            ok = {"jpeg": 1 <= v <= 100, "blur": 0 < v <= 10, "bits": 1 <= v <= 8, "resize": 0 < v < 1,
                  "strip": v >= 1, "rare": v >= 2}[kind]
            if ok:
                return name
    raise ValueError(f"unknown defense {name!r}: use none, jpeg-Q, grayscale, blur-S, bits-B, resize-F (0<F<1), "
                     "strip-K, rare-N (N>=2), shuffle-captions, oracle-captions, rrc-flip, rrc-whole, crop-S "
                     "(0.05<=S<=1) or bn-clean, or several joined by '+' (bn-clean last)")


def describe(name: str) -> str:
    """What defense ``name`` does, in a publisher's words (for ``mmue verify``'s table and verdict)."""
    name = validate(name)
    if "+" in name:
        return ", then ".join(describe(p) for p in parts(name))
    fixed = {"none": "takes your copy as published", "grayscale": "turns the images grey",
             "shuffle-captions": "shuffles each image's captions",
             "oracle-captions": "re-captions your images (your original captions: the most caption cleaning does)",
             "rrc-flip": "trains with random crops and flips", "rrc-whole": "trains with random crops of whole photos",
             "bn-clean": "re-estimates the model's BatchNorm statistics on clean images after training"}
    if name in fixed:
        return fixed[name]
    if crop_scale(name) is not None:
        return f"trains with random crops of {crop_scale(name):g}-1 of the area"
    v = name.split("-", 1)[1]
    return {"jpeg": f"re-saves the images as JPEG at quality {v}", "blur": f"blurs the images ({v} px)",
            "bits": f"cuts colours to {v} bits", "resize": f"shrinks the images by {v} and back",
            "strip": f"drops the first {v} words of every caption",
            "rare": f"drops caption words used by fewer than {v} images"}[name.split("-", 1)[0]]


def transform_image(img: Image.Image, name: str) -> tuple[Image.Image, str]:
    """The defended image and the file suffix to write it with."""
    if name.startswith("jpeg-"):
        return img, ".jpg"
    if name == "grayscale":
        return img.convert("L").convert("RGB"), ".png"
    if name.startswith("blur-"):
        return img.filter(ImageFilter.GaussianBlur(radius=float(name[5:]))), ".png"
    if name.startswith("bits-"):
        b = int(name[5:])
        step = 256 // (1 << b)
        a = np.asarray(img, dtype=np.uint8) // step * step + step // 2
        return Image.fromarray(a.astype(np.uint8)), ".png"
    if name.startswith("resize-"):
        f = float(name[7:])
        small = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BICUBIC)
        return small.resize(img.size, Image.BICUBIC), ".png"
    return img, ".png"


def transform_captions(captions: list[str], image_captions: list[list[int]], name: str, seed: int = 0) -> list[str]:
    if name.startswith("strip-"):
        k = int(name[6:])
        return [" ".join(c.split()[k:]) or c for c in captions]  # never leave an empty caption
    if name.startswith("rare-"):
        return drop_rare_words(captions, image_captions, int(name[5:]))
    if name == "shuffle-captions":
        rng = random.Random(seed)
        out = list(captions)
        for group in image_captions:
            shuffled = [captions[c] for c in group]
            rng.shuffle(shuffled)
            for c, text in zip(group, shuffled):
                out[c] = text
        return out
    return captions


def _word_key(token: str) -> str:
    return re.sub(r"[\W_]+", "", token.lower())


def drop_rare_words(captions: list[str], image_captions: list[list[int]], min_images: int) -> list[str]:
    """Drop the words that occur in the captions of fewer than ``min_images`` images (case and punctuation
    ignored; a word repeated in several captions of one image counts once). A caption that would lose every
    word is kept whole, so no pair goes empty."""
    images_with = Counter(key for group in image_captions
                          for key in {_word_key(w) for c in group for w in captions[c].split()})
    out = []
    for c in captions:
        keyed = [(w, _word_key(w)) for w in c.split()]
        kept = [(w, key) for w, key in keyed if not key or images_with[key] >= min_images]
        out.append(" ".join(w for w, _ in kept) if any(key for _, key in kept) else c)
    return out


def original_captions(released: PairSet, original_csv: str | Path) -> list[str]:
    """The original caption of each released row (protection keeps rows in order and count)."""
    orig = read_pairs(original_csv)
    if len(orig.captions) != len(released.captions) or len(orig.images) != len(released.images):
        raise ValueError(f"oracle-captions: {original_csv} has {len(orig.captions)} captions of "
                         f"{len(orig.images)} images, the released copy {len(released.captions)} of "
                         f"{len(released.images)}: not the data it was protected from")
    for i, (a, b) in enumerate(zip(released.images, orig.images)):   # protection keeps every file's name
        if Path(a).stem != Path(b).stem:
            raise ValueError(f"oracle-captions: image {i + 1} of the released copy is {a}, of {original_csv} {b}: "
                             "not the data it was protected from, or in another order; give the CSV it was "
                             "protected from")
    return list(orig.captions)


def _local_name(rel: str, i: int) -> str:
    """Where image ``rel`` goes inside a defended copy's folder: its own relative path, or, for an absolute path or
    one that climbs out (``../x``), a numbered folder, so that a copy never writes beside (or over) the originals."""
    p = Path(rel)
    return str(Path("external") / str(i) / p.name) if p.is_absolute() or ".." in p.parts else rel


def apply_defense(csv_path: str | Path, name: str, out_dir: str | Path, seed: int = 0,
                  original: str | Path | None = None) -> Path:
    """Write the defended copy of the dataset at ``csv_path`` into ``out_dir``; returns its CSV.
    ``none``, training-time and model defenses return ``csv_path`` unchanged. ``original``: the CSV the release was
    protected from (``oracle-captions`` needs it; for clean data it is ``csv_path`` itself). A composed defense
    writes one folder per step under ``out_dir``."""
    name = validate(name)
    csv_path = Path(csv_path)
    if "+" in name:
        for i, part in enumerate(parts(name)):
            csv_path = apply_defense(csv_path, part, Path(out_dir) / f"{i}-{part}", seed, original)
        return csv_path
    if name == "none" or is_training_defense(name) or name in MODEL_DEFENSES:
        return csv_path
    if name == "oracle-captions" and original is None:
        raise ValueError("oracle-captions needs the original CSV the release was protected from")
    out = Path(out_dir)
    target, stamp_file = out / csv_path.name, out / "defense.json"
    # what this copy is made from: a finished copy of other data (another file, or the same file rewritten with
    # other images or captions) must never be handed back as this one
    pairs = read_pairs(csv_path)
    stamp = {"source": str(csv_path.resolve()), "defense": name, "seed": seed,
             "original": str(Path(original).resolve()) if original is not None else None,
             "source_data": data_fingerprint(pairs)["sha256"],
             "original_data": data_fingerprint(read_pairs(original))["sha256"] if original is not None else None}
    if target.exists() and stamp_file.exists():
        made = json.loads(stamp_file.read_text())
        if any(made[k] != v for k, v in stamp.items() if k in made):   # a stamp from before the data's: paths only
            what = "other images or captions in " if made["source"] == stamp["source"] else ""
            raise ValueError(f"{out}: this defended copy was made from {what}{made['source']} ({made['defense']}, "
                             f"seed {made['seed']}), not from {stamp['source']} as it is now; give another folder or "
                             "delete this one")
        return target
    images = list(pairs.images)
    if not name.startswith(CAPTION_DEFENSES):
        for i, rel in enumerate(pairs.images):
            img, suffix = transform_image(pairs.open_image(i), name)
            new_rel = str(Path(_local_name(rel, i)).with_suffix(suffix))
            dst = out / new_rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".jpg":
                img.save(dst, format="JPEG", quality=int(name[5:]))
            else:
                img.save(dst, format="PNG")
            images[i] = new_rel
    else:
        for i, rel in enumerate(pairs.images):  # captions only: link the images
            images[i] = _local_name(rel, i)
            dst = out / images[i]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink():   # a copy rebuilt over an unstamped one must not keep its links
                dst.unlink()
            dst.symlink_to(pairs.image_path(i).resolve())
    captions = (original_captions(pairs, original) if name == "oracle-captions"
                else transform_captions(pairs.captions, pairs.image_captions, name, seed))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp_file, stamp)
    tmp = out / (csv_path.name + ".partial")
    write_pairs(pairs, tmp, captions, images=[images[i] for i in pairs.caption_image])
    tmp.rename(target)  # the CSV appears last: its presence marks a finished copy
    return target
