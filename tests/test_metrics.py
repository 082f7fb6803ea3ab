import itertools
import math

import pytest
import torch

from mmue.metrics import format_table, mean_recall, random_guess, retrieval_metrics


def brute_force(img, txt, owner, ks=(1, 5, 10)):
    """Recall@K by sorting every row, the slow obvious way."""
    sim = img @ txt.T
    n, m = sim.shape
    out = {}
    i2t_ranks, t2i_ranks = [], []
    for i in range(n):
        order = sorted(range(m), key=lambda j: -sim[i, j].item())
        i2t_ranks.append(min(order.index(j) for j in range(m) if owner[j] == i))
    for j in range(m):
        order = sorted(range(n), key=lambda i: -sim[i, j].item())
        t2i_ranks.append(order.index(owner[j]))
    for k in ks:
        out[f"image_to_text_R@{k}"] = sum(r < k for r in i2t_ranks) / n
        out[f"text_to_image_R@{k}"] = sum(r < k for r in t2i_ranks) / m
    out["image_to_text_median_rank"] = math.floor(torch.tensor(i2t_ranks, dtype=torch.float).median().item()) + 1
    out["text_to_image_median_rank"] = math.floor(torch.tensor(t2i_ranks, dtype=torch.float).median().item()) + 1
    return out


@pytest.mark.parametrize("captions_per_image", [1, 5, "mixed"])
def test_recall_matches_brute_force(captions_per_image):
    g = torch.Generator().manual_seed(0)
    n = 40
    if captions_per_image == "mixed":
        counts = [1 + (i % 4) for i in range(n)]
    else:
        counts = [captions_per_image] * n
    owner = [i for i, c in enumerate(counts) for _ in range(c)]
    img = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
    # texts correlated with their image, so recall is neither 0 nor 1
    txt = torch.nn.functional.normalize(img[owner] + 1.2 * torch.randn(len(owner), 16, generator=g), dim=-1)
    got = retrieval_metrics(img, txt, owner)
    want = brute_force(img, txt, owner)
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    assert 0 < got["image_to_text_R@1"] < 1
    assert got["n_images"] == n and got["n_texts"] == len(owner)


def test_chunking_does_not_change_ranks():
    from mmue.metrics import retrieval_ranks
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(30, 8, generator=g), torch.randn(90, 8, generator=g)
    owner = [i // 3 for i in range(90)]
    a = retrieval_ranks(img, txt, owner, chunk=7)
    b = retrieval_ranks(img, txt, owner, chunk=1000)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_random_guess_exact_on_small_case():
    # 4 images, captions 2/1/1/2 -> enumerate every ordering of the 6 texts for image-to-text R@2
    owner = [0, 0, 1, 2, 3, 3]
    rg = random_guess(owner, 4, ks=(1, 2))
    hits = 0
    perms = list(itertools.permutations(range(6)))
    for p in perms:
        top = set(p[:2])
        hits += sum(any(owner[j] == i for j in top) for i in range(4))
    assert rg["image_to_text_R@2"] == pytest.approx(hits / (4 * len(perms)))
    assert rg["text_to_image_R@1"] == pytest.approx(0.25)


def test_random_guess_reference_levels():
    # the method doc quotes 0.1/0.5/1.0 % for t2i on 1K images
    rg = random_guess([i // 5 for i in range(5000)], 1000)
    assert rg["text_to_image_R@1"] == pytest.approx(0.001)
    assert rg["text_to_image_R@10"] == pytest.approx(0.01)
    assert rg["image_to_text_R@1"] == pytest.approx(5 / 5000)   # the top text is one of the image's 5
    assert rg["image_to_text_R@10"] == pytest.approx(1 - math.comb(4995, 10) / math.comb(5000, 10))


def test_random_features_score_near_random_guess():
    g = torch.Generator().manual_seed(2)
    owner = [i // 5 for i in range(2500)]
    m = retrieval_metrics(torch.randn(500, 32, generator=g), torch.randn(2500, 32, generator=g), owner)
    rg = random_guess(owner, 500)
    assert m["image_to_text_R@10"] == pytest.approx(rg["image_to_text_R@10"], abs=0.03)
    assert m["text_to_image_R@10"] == pytest.approx(rg["text_to_image_R@10"], abs=0.01)


def test_format_table_and_mean_recall():
    m = {f"{d}_R@{k}": 0.5 for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}
    assert mean_recall(m) == 0.5
    table = format_table({"clean": m})
    assert "i2t R@1" in table and "50.0" in table
