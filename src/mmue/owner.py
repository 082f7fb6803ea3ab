"""The owner's view: one person protects only *their* images, a scraper mixes them into data that is mostly not
theirs, and the question is whether the model trained on that mix can find the owner's images from their
captions (and the reverse).

An owner is a part of the training split: a random ``fraction`` of its images, the images whose captions contain a
word (``query``), or the rows where a CSV ``column`` has a ``value``. Three victims answer the question side by
side: trained without the owner's data (``absent``, the floor), with it clean (the ceiling), and with it protected.

Two metrics on clean, original data:
* *memorisation*: queries are the owner's training captions (and images); the gallery is the owner's training
  images plus the whole test split as distractors: can the model find exactly the photos the owner published?
* *generalisation* (semantic owners only): queries are the test pairs of the owner's concept, the gallery is the
  whole test split: did the model learn the concept only the owner publishes?
and the sceptic's third, memorisation *as published* (``prefix="pub"`` on the owner's protected copy): the same
queries and gallery, but the owner's images and captions as the scraper holds them. Noise that only hides the
clean originals from a model that memorised the noisy copy scores well on the first and not on this one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.csvfile import write_rows
from .data.encoded import EncodedPairs
from .data.pairs import read_pairs
from .data.types import PairSet
from .device import resolve_device
from .metrics import KS, random_guess, retrieval_ranks
from .models import load_model
from .train import encode_all

DIRECTIONS = ("image_to_text", "text_to_image")


@dataclass(frozen=True)
class Owner:
    fraction: float | None = None    # a random share of the training images
    query: str | None = None         # images whose captions contain this word
    column: str | None = None        # rows whose CSV column ...
    value: str | None = None         # ... has this value

    @classmethod
    def parse(cls, spec: dict) -> "Owner":
        unknown = set(spec) - {"fraction", "query", "column", "value"}
        o = cls(**{k: v for k, v in spec.items() if k not in unknown})
        kinds = sum(x is not None for x in (o.fraction, o.query, o.column))
        if unknown or kinds != 1 or (o.column is None) != (o.value is None):
            raise ValueError(f"owner {spec}: give one of {{'fraction': F}}, {{'query': WORD}} or "
                             "{'column': NAME, 'value': VALUE}")
        if o.fraction is not None and not 0 < o.fraction < 1:
            raise ValueError(f"owner fraction must be in (0, 1), got {o.fraction}")
        return o

    @property
    def semantic(self) -> bool:
        return self.fraction is None

    def label(self) -> str:
        if self.fraction is not None:
            return f"random {100 * self.fraction:g} %"
        return f"captions with {self.query!r}" if self.query else f"{self.column} = {self.value!r}"

    def matches(self, pairs: PairSet, i: int) -> bool:
        """Whether image ``i`` of ``pairs`` is the owner's (semantic owners only)."""
        rows = pairs.image_captions[i]
        if self.query is not None:
            word = re.compile(rf"\b{re.escape(self.query.lower())}\b")
            return any(word.search(pairs.captions[c].lower()) for c in rows)
        return any(pairs.rows[c].get(self.column) == self.value for c in rows)

    def images(self, pairs: PairSet, seed: int) -> list[int]:
        """The owner's images in ``pairs`` (a random fraction is drawn with ``seed``)."""
        if self.fraction is not None:
            n = max(2, round(self.fraction * pairs.n_images))
            rng = np.random.default_rng([seed, 7777])
            return sorted(rng.choice(pairs.n_images, size=n, replace=False).tolist())
        found = [i for i in range(pairs.n_images) if self.matches(pairs, i)]
        if len(found) < 2:
            raise ValueError(f"owner {self.label()}: {len(found)} training images match; need at least 2")
        return found


def write_subset(pairs: PairSet, images: list[int], path: Path, captions: list[str] | None = None) -> Path:
    """A CSV (``filepath,caption``) of the rows of ``images``, with absolute paths, so it can live anywhere."""
    keep = set(images)
    caps = captions if captions is not None else pairs.captions
    rows = [(str(pairs.image_path(pairs.caption_image[c]).resolve()), caps[c])
            for c in range(len(pairs.captions)) if pairs.caption_image[c] in keep]
    return write_rows(rows, path)


def concat_csvs(parts: list[Path], path: Path) -> Path:
    """One CSV with the rows of every part (absolute image paths)."""
    rows = []
    for p in parts:
        pairs = read_pairs(p)
        rows += [(str(pairs.image_path(pairs.caption_image[c]).resolve()), pairs.captions[c])
                 for c in range(len(pairs.captions))]
    return write_rows(rows, path)


def _encoded(csv_path: Path, model) -> EncodedPairs:
    return EncodedPairs.build(read_pairs(csv_path), model.image_size, model.codec.encode, progress=False)


def _recall(i2t: torch.Tensor, t2i: torch.Tensor, prefix: str) -> dict[str, float]:
    out = {}
    for name, ranks in zip(DIRECTIONS, (i2t, t2i)):
        for k in KS:
            out[f"{prefix}{name}_R@{k}"] = (ranks < k).float().mean().item() if len(ranks) else float("nan")
    return out


def owner_metrics(run: Path | None, owner_csv: Path, test_csv: Path | None, device: str, which: str = "last",
                  owner: Owner | None = None, model=None, prefix: str = "mem") -> dict[str, float]:
    """Memorisation (and, for a semantic ``owner``, generalisation) recall of the victim in ``run`` (or ``model``:
    an untrained one, for an owner whose data nobody trained on). Keys ``{prefix}/...`` and ``gen/...``; pass the
    owner's published copy as ``owner_csv`` with ``prefix="pub"`` for memorisation as published."""
    dev = resolve_device(device)
    if model is None:
        model = load_model(run, dev, which=which)
    own = _encoded(owner_csv, model)
    oi, ot = encode_all(model, own, dev)
    n_own, m_own = oi.shape[0], ot.shape[0]
    if test_csv is not None:
        test = _encoded(test_csv, model)
        ti, tt = encode_all(model, test, dev)
        img, txt = torch.cat([oi, ti]), torch.cat([ot, tt])
        caption_image = list(own.caption_image) + [n_own + i for i in test.caption_image]
    else:
        img, txt, caption_image, test = oi, ot, list(own.caption_image), None
    i2t, t2i = retrieval_ranks(img, txt, caption_image)
    out = _recall(i2t[:n_own], t2i[:m_own], f"{prefix}/")
    rg = random_guess(caption_image, img.shape[0])
    out.update({f"{prefix}/random_{k}": v for k, v in rg.items()})
    out[f"{prefix}/gallery_images"] = int(img.shape[0])
    if owner is not None and owner.semantic and test is not None:
        tp = read_pairs(test_csv, check_files=False)
        concept = [i for i in range(tp.n_images) if owner.matches(tp, i)]
        caps = [c for i in concept for c in tp.image_captions[i]]
        ti2t, tt2i = retrieval_ranks(ti, tt, list(test.caption_image))
        out.update(_recall(ti2t[concept], tt2i[caps], "gen/"))
        out["gen/test_images"] = len(concept)
    return out


def mean_r10(metrics: dict, prefix: str) -> float:
    """R@10 averaged over both directions, from the keys ``{prefix}image_to_text_R@10`` and its reverse (a fraction,
    as stored)."""
    return (metrics[f"{prefix}image_to_text_R@10"] + metrics[f"{prefix}text_to_image_R@10"]) / 2


def gap_closed(absent: float, clean: float, protected: float) -> float:
    """(clean - protected) / (clean - absent): 1 = as if never published, 0 = no protection."""
    return (clean - protected) / (clean - absent) if clean != absent else float("nan")
