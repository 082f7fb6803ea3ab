"""Zero-shot classification with a trained CLIP, as CLIP_benchmark does it.

Each class name becomes prompts through templates (``"a photo of a {}."``, ...); the class embedding is the
normalised mean of its prompts' normalised text embeddings; an image's prediction is the class with the
highest cosine similarity. Reports top-1 / top-5 accuracy and the mean per-class recall (CLIP_benchmark's
keys ``acc1``, ``acc5``, ``mean_per_class_recall``), the accuracy of every class, and chance level.

Data: an ImageFolder-style folder (one subfolder per class, named by the class) or a CSV/TSV with an image
column and a label column.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.images import preprocess, to_float
from .data.types import DataError, load_rgb
from .device import autocast

TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.", "a drawing of a {}.",
             "a photo of the {}.", "there is a {}.")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class ClassificationSet:
    paths: list[Path]
    labels: list[int]
    classnames: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_classification(path: str | os.PathLike, label_key: str = "label", img_key: str = "filepath"
                        ) -> ClassificationSet:
    """An ImageFolder folder (class = subfolder name, '_' read as a space) or a CSV with image and label columns."""
    path = Path(path)
    if path.is_dir():
        classes = sorted(d.name for d in path.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{path}: no class subfolders (expected DIR/<class name>/<image>)")
        paths, labels = [], []
        for c, name in enumerate(classes):
            files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [c] * len(files)
        if not paths:
            raise DataError(f"{path}: the class subfolders hold no images")
        return ClassificationSet(paths, labels, [c.replace("_", " ") for c in classes])
    if not path.is_file():
        raise DataError(f"{path}: no such folder or CSV (give an ImageFolder folder or a CSV with a label column)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows or label_key not in rows[0] or img_key not in rows[0]:
        raise DataError(f"{path}: needs the columns {img_key!r} and {label_key!r} "
                        f"(found {list(rows[0]) if rows else 'no rows'})")
    classes = sorted({r[label_key].strip() for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    return ClassificationSet([path.parent / r[img_key] for r in rows], [index[r[label_key].strip()] for r in rows],
                             classes)


def zeroshot_metrics(image_features: torch.Tensor, class_features: torch.Tensor, labels: torch.Tensor,
                     classnames: list[str]) -> dict:
    """Accuracies from L2-normalised image [N,D] and class [C,D] features (pure; no model)."""
    logits = image_features @ class_features.T
    c = class_features.shape[0]
    k = min(5, c)
    topk = logits.topk(k, dim=1).indices
    hit1 = topk[:, 0] == labels
    hitk = (topk == labels[:, None]).any(1)
    per_class = {name: float(hit1[labels == i].float().mean()) for i, name in enumerate(classnames)
                 if (labels == i).any()}
    return {"acc1": float(hit1.float().mean()), "acc5": float(hitk.float().mean()),
            "mean_per_class_recall": sum(per_class.values()) / len(per_class), "per_class_acc1": per_class,
            "chance_acc1": 1 / c, "chance_acc5": k / c, "n_images": len(labels), "n_classes": c}


@torch.no_grad()
def class_features(model, classnames: list[str], templates=TEMPLATES, device="cpu") -> torch.Tensor:
    device = torch.device(device)
    out = []
    for name in classnames:
        ids = model.codec.rows([model.codec.encode(t.format(name)) for t in templates]).to(device)
        with autocast(device):
            emb = F.normalize(model.encode_text(ids).float(), dim=-1)
        out.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(out)


@torch.no_grad()
def evaluate_zeroshot(model, data: ClassificationSet, device="cpu", templates=TEMPLATES, batch_size: int = 256
                      ) -> dict:
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        feats = []
        for s in range(0, len(data), batch_size):
            x = torch.stack([preprocess(load_rgb(p), model.image_size) for p in data.paths[s:s + batch_size]])
            with autocast(device):
                feats.append(F.normalize(model.encode_image(to_float(x.to(device))).float(), dim=-1))
        img = torch.cat(feats)
        return zeroshot_metrics(img, class_features(model, data.classnames, templates, device),
                                torch.tensor(data.labels, device=img.device), data.classnames)
    finally:
        model.train(was_training)
