import csv

from PIL import Image

from mmue.data import read_pairs
from mmue.data.synth import COLOURS, SHAPES


def test_layout_and_captions(tiny_synth):
    train = read_pairs(tiny_synth / "train.csv")
    test = read_pairs(tiny_synth / "test.csv")
    assert train.n_images == 96 and test.n_images == 48
    assert all(len(c) == 5 for c in train.image_captions)
    assert not set(train.images) & set(test.images)
    assert Image.open(train.image_path(0)).size == (64, 64)
    assert len(SHAPES) >= 10 and len(COLOURS) >= 10
    vocab = {w for c in train.captions + test.captions for w in c.split()}
    assert len(vocab) >= 50
    assert len(set(train.captions)) > 0.9 * len(train.captions)


def test_deterministic(tmp_path, tiny_synth):
    from mmue.data import write_synth
    write_synth(tmp_path, n_train=3, n_test=1, progress=False)
    a = list(csv.reader(open(tmp_path / "train.csv")))
    b = list(csv.reader(open(tiny_synth / "train.csv")))[: len(a)]
    assert a == b  # the first images of a larger set are the same images
    assert (tmp_path / "images/train_00002.png").read_bytes() == (tiny_synth / "images/train_00002.png").read_bytes()
