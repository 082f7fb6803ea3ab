"""Groups of similar captions: spherical k-means on each image's TF-IDF bag of caption tokens.

Images in one cluster can share one noise pattern and one trigger (``ProtectConfig.share``): a few shared
patterns are a shortcut a victim latches onto far more easily than thousands of per-image ones, and a trigger
word shared by a cluster's images is not rare, so a rare-word filter leaves it. Pure function of the token ids
and the seed, so a resumed run recomputes the same clusters.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..seeding import generator

HASH_DIMS = 2048   # token ids folded into this many features: memory is n_images x HASH_DIMS x 4 bytes


def caption_features(caption_bodies: Sequence[Sequence[int]], image_captions: Sequence[Sequence[int]],
                     dims: int = HASH_DIMS) -> torch.Tensor:
    """[N, dims] L2-normalised TF-IDF of the tokens of each image's captions (ids folded modulo ``dims``)."""
    n = len(image_captions)
    tf = torch.zeros(n, dims)
    for i, caps in enumerate(image_captions):
        for c in caps:
            ids = torch.as_tensor(list(caption_bodies[c]), dtype=torch.long) % dims
            tf[i].index_add_(0, ids, torch.ones(len(ids)))
    df = (tf > 0).sum(0).float()
    idf = torch.log((1 + n) / (1 + df)) + 1
    x = tf * idf
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 30) -> torch.Tensor:
    """Spherical k-means (cosine) with k-means++ seeding; returns the cluster of each row. No cluster ends
    empty: an emptied one takes the row farthest from its centre."""
    n = len(x)
    k = max(1, min(k, n))
    g = generator(seed, "caption clusters")
    centres = [int(torch.randint(n, (1,), generator=g))]
    dist = 1 - x @ x[centres[0]]
    for _ in range(1, k):
        p = dist.clamp_min(0) ** 2
        i = (int(torch.multinomial(p / p.sum(), 1, generator=g)) if p.sum() > 0
             else int(torch.randint(n, (1,), generator=g)))
        centres.append(i)
        dist = torch.minimum(dist, 1 - x @ x[i])
    c = x[centres].clone()
    assign = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        sim = x @ c.T
        new = sim.argmax(1)
        counts = torch.bincount(new, minlength=k)
        fit = sim.gather(1, new[:, None]).squeeze(1)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            fit[counts[new] <= 1] = math.inf   # never empty another cluster
            far = int(fit.argmin())
            counts[new[far]] -= 1
            counts[empty] += 1
            new[far] = empty
            fit[far] = math.inf
        if torch.equal(new, assign):
            break
        assign = new
        c = torch.zeros_like(c).index_add_(0, assign, x)
        c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return assign


def caption_clusters(caption_bodies, image_captions, k: int, seed: int) -> torch.Tensor:
    """The cluster (0..k-1) of each image, from its captions."""
    return kmeans(caption_features(caption_bodies, image_captions), k, seed)


def caption_word_codes(caption_bodies, image_captions, words: int, min_images: int, seed: int) -> torch.Tensor:
    """[N, words] each image's code: the ids of its ``words`` most distinctive caption tokens (fewest images
    among those used by >= ``min_images`` images, so that a rare-word filter keeps them; ties broken by a seeded
    draw), -1 where an image has fewer tokens. Tokens below ``min_images`` come last, not never: an image whose
    caption has nothing common enough still gets a code. Codes of different images overlap in some words but are
    nearly unique as a whole: a victim that learns one pattern per word can tell every pair of a batch apart
    without the content, which one pattern per cluster cannot."""
    n = len(image_captions)
    tokens = [sorted({t for c in caps for t in caption_bodies[c]}) for caps in image_captions]
    df: dict[int, int] = {}
    for ts in tokens:
        for t in ts:
            df[t] = df.get(t, 0) + 1
    g = generator(seed, "caption word codes")
    tie = {t: float(r) for t, r in zip(sorted(df), torch.rand(len(df), generator=g).tolist())}
    codes = torch.full((n, words), -1, dtype=torch.long)
    for i, ts in enumerate(tokens):
        best = sorted(ts, key=lambda t: (df[t] < min_images, df[t], tie[t]))[:words]
        codes[i, :len(best)] = torch.tensor(best, dtype=torch.long)
    return codes


def cluster_targets(clusters: torch.Tensor, seed: int) -> torch.Tensor:
    """For each image, the image whose captions its noise pulls it toward (targeted adversarial poisoning): the
    clusters are permuted with no cluster left in place (a derangement), and image i of cluster c is given a
    random image of the cluster c goes to. The pull is consistent per cluster, as a class permutation is for a
    classifier: a victim that learns the noise learns "features of cluster c' <-> captions of cluster c", a
    wrong rule for clean images, instead of a random one per image. One cluster: every image keeps its own."""
    n, k = len(clusters), int(clusters.max()) + 1 if len(clusters) else 0
    if k < 2:
        return torch.arange(n)
    g = generator(seed, "cluster targets")
    shift = torch.randperm(k, generator=g)
    to = torch.empty(k, dtype=torch.long)
    to[shift] = shift.roll(-1)   # a random cycle through all clusters: no fixed point
    members = [torch.nonzero(clusters == c).flatten() for c in range(k)]
    out = torch.empty(n, dtype=torch.long)
    for c in range(k):
        own = members[c]
        if len(own):
            pool = members[int(to[c])]
            out[own] = pool[torch.randint(len(pool), (len(own),), generator=g)]
    return out
