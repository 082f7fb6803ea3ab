"""benchmarks/caption_code.py: a tile per image that encodes its caption's words, within eps, edge to edge."""
import json
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import caption_code  # noqa: E402


def test_codes_follow_the_words_and_stay_within_eps():
    x = caption_code.tfidf(["red heart", "red heart", "Red, heart!", "blue car wheel", "blue car"])
    t = caption_code.code_tiles(x, 4, 8, seed=0)
    assert t.shape == (5, 4, 4, 3) and t.dtype == np.int16 and np.abs(t).max() == 8
    assert np.array_equal(t[0], t[1]) and np.array_equal(t[0], t[2])   # same words, same code
    corr = lambda a, b: float(np.corrcoef(t[a].ravel(), t[b].ravel())[0, 1])
    assert corr(3, 4) > 0.5 > abs(corr(0, 3))   # shared words, similar codes
    assert not np.array_equal(t, caption_code.code_tiles(x, 4, 8, seed=1))


def test_quiet_basis_is_where_the_pictures_vary_least():
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (20, 4, 4, 3)), 4, 1), 4, 2).astype(np.uint8)  # flat 4 px
    b = caption_code.quiet_basis(list(smooth), tile=4, dims=10)
    assert b.shape == (48, 10) and np.allclose(b.T @ b, np.eye(10), atol=1e-6)
    patches = smooth.reshape(20, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 48).astype(np.float64)
    patches -= patches.mean(0)
    assert (patches @ b).std() < 1e-6 < (patches @ rng.standard_normal((48, 10))).std()
    t = caption_code.code_tiles(np.eye(3, dtype=np.float32), 4, 8, seed=0, basis=b).reshape(3, 48).astype(float)
    off = t @ (np.eye(48) - b @ b.T)   # what rounding and clipping put outside the basis
    assert np.linalg.norm(off) < 0.25 * np.linalg.norm(t)


def test_the_tile_covers_any_size_edge_to_edge():
    tile = np.arange(-8, 8, dtype=np.int16).reshape(2, 2, 4)[..., :3]
    img = np.full((5, 7, 3), 128, np.uint8)
    out = caption_code.apply_tile(img, tile).astype(np.int16) - 128
    assert out.shape == (5, 7, 3) and np.array_equal(out[:2, :2], tile) and np.array_equal(out[4:5, 6:7], tile[:1, :1])
    assert caption_code.apply_tile(np.full((2, 2, 3), 250, np.uint8), np.full((1, 1, 3), 8, np.int16)).max() == 255


def test_write_copy_keeps_captions_and_bounds_the_noise(tiny_synth, tmp_path):
    from mmue.data.pairs import read_pairs
    info = caption_code.write_copy(tiny_synth / "train.csv", tmp_path / "code", 8, "quiet", 12, 8, 0)
    assert json.loads((tmp_path / "code/code.json").read_text()) == info and info["psnr_db"] > 30
    c, p = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "code/train.csv")
    assert p.captions == c.captions and len(p.images) == len(c.images)
    a, b = (np.asarray(s.open_image(3).convert("RGB"), dtype=np.int16) for s in (c, p))
    assert 0 < np.abs(b - a).max() <= 8
    d, inside = b - a, (a >= 8) & (a <= 247)   # periodic wherever the clip to 0..255 did not cut it
    m = inside[:8, :8] & inside[8:16, 8:16]
    assert m.sum() > 20 and np.array_equal(d[:8, :8][m], d[8:16, 8:16][m])
