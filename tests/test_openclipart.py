from pathlib import Path

import pytest
from PIL import Image

from mmue.data import DataError, read_pairs
from mmue.data.openclipart import DEFAULT_ROOT, clean_keywords, parse_svg, write_openclipart

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg"><metadata><rdf:RDF xmlns:cc="http://web.resource.org/cc/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<cc:Work rdf:about=""><dc:title>{title}</dc:title><dc:subject><rdf:Bag>{kws}</rdf:Bag></dc:subject>
<dc:creator><cc:Agent><dc:title>Jane Artist</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata></svg>"""


def make_item(root: Path, rel: str, title: str, kws: list[str], png: bool = True) -> None:
    svg = root / "svg" / f"{rel}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(SVG.format(title=title, kws="".join(f"<rdf:li>{k}</rdf:li>" for k in kws)))
    if png:
        p = root / "png" / f"{rel}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (40, 20), (200, 0, 0, 128)).save(p)


def test_parse_and_clean(tmp_path):
    make_item(tmp_path, "animals/bear", "Brown Bear (2004)", ["bear", "mammal", "jane artist", "hash", "x@y.org"])
    title, kws, creator = parse_svg(tmp_path / "svg/animals/bear.svg")
    assert title == "Brown Bear (2004)" and creator == "Jane Artist"
    assert clean_keywords(kws, creator) == ["bear", "mammal"]
    (tmp_path / "broken.svg").write_text("<svg")
    assert parse_svg(tmp_path / "broken.svg") is None


def test_converter_builds_csvs(tmp_path):
    root = tmp_path / "oc"
    for i in range(12):
        make_item(root, f"animals/a{i}", f"Animal number {'abcdefghijkl'[i]}", ["animal", f"kind{'abcdefghijkl'[i]}"])
    make_item(root, "animals/dupe", "Animal number a", ["animal", "kinda"])          # same caption: dropped
    make_item(root, "special/patterns/p1", "Dots", ["pattern", "dots"])              # pure pattern: dropped
    make_item(root, "animals/nopng", "No picture", ["x"], png=False)                # no PNG: skipped
    counts = write_openclipart(tmp_path / "out", root, size=32, n_test=3, progress=False)
    assert counts["pattern"] == 1 and counts["duplicate caption"] == 1
    train, test = read_pairs(tmp_path / "out/train.csv"), read_pairs(tmp_path / "out/test.csv")
    assert train.n_images + test.n_images == 12 and test.n_images == 2               # at most a fifth
    assert not set(train.images) & set(test.images)
    im = Image.open(train.image_path(0))
    assert im.size == (32, 32) and im.mode == "RGB"
    assert all(c.startswith("animal number") and "kind" in c for c in train.captions)
    assert {r["author"] for r in train.rows} == {"Jane Artist"}          # the creator: an owner column


def test_converter_resumes_and_refuses_other_settings(tmp_path):
    root = tmp_path / "oc"
    for i in range(6):
        make_item(root, f"things/t{i}", f"Thing {'abcdef'[i]}", ["thing"])
    out = tmp_path / "out"
    write_openclipart(out, root, size=16, n_test=1, progress=False)
    done = out / "images/things/t1.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(done)                  # marks the finished file
    (out / "images/things/t2.png").unlink()                            # as if the run had died before it
    (out / "test.csv").unlink()
    counts = write_openclipart(out, root, size=16, n_test=1, progress=False)
    assert counts["train"] + counts["test"] == 6 and (out / "test.csv").is_file()
    assert Image.open(done).getpixel((0, 0)) == (1, 2, 3)               # kept, not rendered again
    assert Image.open(out / "images/things/t2.png").size == (16, 16)    # the missing one rendered
    assert not list(out.rglob("*.partial"))
    with pytest.raises(DataError, match="size"):
        write_openclipart(out, root, size=32, n_test=1, progress=False)


@pytest.mark.skipif(not (DEFAULT_ROOT / "svg").is_dir(), reason="openclipart-svg/png not installed")
def test_real_package_metadata_parses():
    svgs = sorted((DEFAULT_ROOT / "svg").rglob("*.svg"))[:50]
    parsed = [parse_svg(p) for p in svgs]
    assert sum(p is not None and bool(p[0]) for p in parsed) > 25


def test_converter_skips_huge_renderings_and_writes_csvs_last(tmp_path, monkeypatch):
    root = tmp_path / "oc"
    for i in range(6):
        make_item(root, f"things/t{i}", f"Thing {'abcdef'[i]}", ["thing"])
    big = root / "png/things/t0.png"
    Image.new("RGB", (400, 400), (0, 0, 255)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)       # 160k px > 2x the limit: a "bomb"
    counts = write_openclipart(tmp_path / "out", root, size=16, n_test=1, progress=False)
    assert counts["too large"] == 1 and counts["train"] + counts["test"] == 5
    assert not list((tmp_path / "out").glob("*.partial"))
    assert read_pairs(tmp_path / "out/train.csv").n_images == counts["train"]


def test_native_keeps_each_drawings_aspect(tmp_path):
    root = tmp_path / "oc"
    for i in range(6):
        make_item(root, f"things/t{i}", f"Thing {'abcdef'[i]}", ["thing"])
    Image.new("RGBA", (300, 100), (0, 0, 255, 255)).save(root / "png/things/t0.png")   # 3:1, drawn on no background
    Image.new("RGBA", (20, 400), (0, 0, 0, 0)).save(root / "png/things/t1.png")        # thin and transparent
    write_openclipart(tmp_path / "out", root, n_test=1, progress=False, native=96)
    sizes = {}
    for split in ("train", "test"):
        p = read_pairs(tmp_path / f"out/{split}.csv")
        sizes.update({Path(x).stem: Image.open(p.image_path(i)).size for i, x in enumerate(p.images)})
    assert sizes["t0"] == (96, 32) and sizes["t1"] == (8, 96)
    assert Image.open(tmp_path / "out/images/things/t1.png").getpixel((4, 50)) == (255, 255, 255)   # on white
