import pytest
from PIL import Image

from mmue.data import DataError, read_pairs, write_pairs


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img" / f"{name}.png")
    return tmp_path


def test_autodetect_and_grouping(folder):
    p = folder / "d.csv"
    p.write_text("filepath,caption\nimg/a.png,one\nimg/b.png,two\nimg/a.png,three\n")
    pairs = read_pairs(p)
    assert pairs.images == ["img/a.png", "img/b.png"]
    assert pairs.caption_image == [0, 1, 0]
    assert pairs.image_captions == [[0, 2], [1]]
    assert pairs.image_path(1) == folder / "img/b.png"


def test_tsv_by_extension_and_other_names(folder):
    p = folder / "d.tsv"
    p.write_text("title\timage\nA, with comma\timg/a.png\n")
    pairs = read_pairs(p)
    assert pairs.captions == ["A, with comma"] and pairs.separator == "\t"


def test_sniffed_semicolon_and_explicit_keys(folder):
    p = folder / "d.txt"
    p.write_text("pic;desc\nimg/a.png;hello\nimg/b.png;world\n")
    pairs = read_pairs(p, img_key="pic", caption_key="desc")
    assert pairs.captions == ["hello", "world"]


def test_missing_column_names_columns_and_flag(folder):
    p = folder / "d.csv"
    p.write_text("path_to_pic,caption\nimg/a.png,x\n")
    with pytest.raises(DataError) as e:
        read_pairs(p)
    msg = str(e.value)
    assert "path_to_pic" in msg and "--csv-img-key" in msg and str(p) in msg
    with pytest.raises(DataError, match="--csv-caption-key"):
        read_pairs(p, img_key="path_to_pic", caption_key="nope")


def test_empty_caption_names_row(folder):
    p = folder / "d.csv"
    p.write_text("filepath,caption\nimg/a.png,ok\nimg/b.png,  \n")
    with pytest.raises(DataError, match=r"row 3: empty caption"):
        read_pairs(p)


def test_missing_image_names_row(folder):
    p = folder / "d.csv"
    p.write_text("filepath,caption\nimg/a.png,ok\nimg/zzz.png,x\n")
    with pytest.raises(DataError, match=r"row 3: image 'img/zzz.png' not found"):
        read_pairs(p)


def test_unreadable_image_is_clear_error(folder):
    from mmue.data import load_images
    (folder / "img" / "bad.png").write_bytes(b"not a png")
    p = folder / "d.csv"
    p.write_text("filepath,caption\nimg/bad.png,x\n")
    with pytest.raises(DataError, match="bad.png: unreadable image"):
        load_images(read_pairs(p), 8, progress=False)


def test_write_pairs_round_trip_keeps_columns(folder):
    p = folder / "d.tsv"
    p.write_text("image\ttitle\textra\nimg/a.png\tx\t1\nimg/b.png\ty\t2\n")
    pairs = read_pairs(p)
    out = write_pairs(pairs, folder / "out.tsv", ["X", "Y"])
    back = read_pairs(out)
    assert back.captions == ["X", "Y"] and back.fieldnames == ["image", "title", "extra"]
    assert [r["extra"] for r in back.rows] == ["1", "2"]


def test_preprocess_resizes_shorter_side_then_crops():
    from mmue.data import preprocess
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    t = preprocess(im, 16)
    assert t.shape == (3, 16, 16) and t.dtype.name == "uint8" if hasattr(t.dtype, "name") else True
    assert int(t[0].float().mean()) > 240 and int(t[1].float().mean()) < 15


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    from mmue.data import load_rgb
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)      # 4096 px > 2x the limit: Pillow's bomb error
    with pytest.raises(DataError, match="big.png: .*decompression bomb"):
        load_rgb(tmp_path / "big.png")
