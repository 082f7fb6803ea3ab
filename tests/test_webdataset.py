import io
import json
import tarfile

import pytest
from PIL import Image

from mmue import api
from mmue.data import DataError, read_pairs
from mmue.data.webdataset import ShardWriter, expand_shards, is_webdataset

FAST = dict(rounds=1, surrogate_steps=2, pgd_steps=1, text_rounds=1, candidates=2, batch_size=32)


def test_expand_shards():
    assert expand_shards("a/s-{000..002}.tar") == ["a/s-000.tar", "a/s-001.tar", "a/s-002.tar"]
    assert expand_shards("x-{a,b}.tar::y.tar") == ["x-a.tar", "x-b.tar", "y.tar"]
    assert expand_shards("{0..1}-{8..9}.tar") == ["0-8.tar", "0-9.tar", "1-8.tar", "1-9.tar"]
    assert is_webdataset("d/{00..01}.tar") and is_webdataset("d/a.tar") and not is_webdataset("d/train.csv")


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_read_shards_open_clip_layout(tmp_path):
    with ShardWriter(tmp_path, maxcount=2) as w:
        w.write("a", {"png": _png("red"), "txt": b"a red square"})
        w.write("b", {"jpg": _png("blue"), "txt": b"blue"})          # the extension names the member only
        w.write("c", {"png": _png("green"), "txt": b"x", "json": json.dumps({"captions": ["g1", "g2"]}).encode()})
        spec = w.close()
    assert spec == "{00000..00001}.tar" and sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar", "00001.tar"]
    pairs = read_pairs(tmp_path / spec)
    assert pairs.n_images == 3 and pairs.captions == ["a red square", "blue", "g1", "g2"]
    assert pairs.caption_image == [0, 1, 2, 2]
    assert pairs.open_image(2).getpixel((0, 0)) == (0, 128, 0)


def test_bad_shards_are_named(tmp_path):
    with pytest.raises(DataError, match="shard not found"):
        read_pairs(tmp_path / "{0..1}.tar")
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        info = tarfile.TarInfo("k.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"cap"))
    with pytest.raises(DataError, match=r"bad.tar, sample 'k': no image"):
        read_pairs(tmp_path / "bad.tar")


def test_protect_writes_shards_that_train_reads_back(tiny_synth, tmp_path):
    m = api.protect(tiny_synth / "train.csv", tmp_path / "p", "mem", device="cpu", progress=False,
                    out_format="webdataset", **FAST)
    assert m["data"] == "publish/shards/00000.tar" and m["n_images"] == 96 and m["out_format"] == "webdataset"
    back = read_pairs(tmp_path / "p" / m["data"])
    src = read_pairs(tiny_synth / "train.csv")
    assert back.n_images == src.n_images and len(back.captions) == len(src.captions)
    trig = m["images"][0]["trigger"]
    assert trig and all(c.startswith(trig + " ") for c in back.captions[:5])
    assert api.check(tmp_path / "p")["ok"]                # shards hashed in the public manifest
    with tarfile.open(tmp_path / "p" / m["data"]) as tf:   # open_clip's view: key.png + key.txt
        assert tf.getnames()[:3] == ["00000000.png", "00000000.txt", "00000000.json"]
    from mmue.train import TrainConfig
    summary = api.train(tmp_path / "p" / m["data"], tmp_path / "run", val_data=tiny_synth / "test.csv",
                        config=TrainConfig(epochs=1, batch_size=32), device="cpu", progress=False)
    assert summary["last"]["epoch"] == 1 and "val/image_to_text_R@1" in summary["last"]
