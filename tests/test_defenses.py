import pytest
import torch
from PIL import Image

from mmue.data import read_pairs
from mmue.defenses import apply_defense, keeps_files, transform_captions, transform_image, validate
from mmue.augment import rrc_flip


def test_validate_names():
    for ok in ("none", "jpeg-50", "grayscale", "blur-0.5", "bits-3", "resize-0.5", "strip-3", "rare-5",
               "shuffle-captions", "rrc-flip", "oracle-captions", "rare-10+jpeg-75+rrc-flip", "crop-0.9",
               "jpeg-75+crop-0.9", "bn-clean", "oracle-captions+bn-clean"):
        assert validate(ok) == ok
    for bad in ("jpeg-0", "bits-9", "resize-2", "strip-0", "rare-1", "sharpen", "none+jpeg-75", "jpeg-75+jpeg-75",
                "rare-10+sharpen", "crop-0.01", "crop-1.5", "crop-", "bn-clean+jpeg-75", "none+bn-clean"):
        with pytest.raises(ValueError):
            validate(bad)


def test_only_training_views_leave_the_files_as_published():
    assert all(keeps_files(d) for d in ("none", "rrc-flip", "rrc-whole", "crop-0.9"))
    assert not any(keeps_files(d) for d in ("oracle-captions", "jpeg-75", "strip-3", "jpeg-75+crop-0.9"))


def test_bn_clean_is_a_model_defense_on_the_victim_of_the_rest_of_the_name(tiny_synth, tmp_path):
    from mmue.defenses import recalibrates, trained_as
    assert recalibrates("bn-clean") and recalibrates("jpeg-75+bn-clean") and not recalibrates("jpeg-75")
    assert trained_as("bn-clean") == "none" and trained_as("rare-10+jpeg-75+bn-clean") == "rare-10+jpeg-75"
    assert trained_as("jpeg-75") == "jpeg-75"
    assert keeps_files("bn-clean") and keeps_files("crop-0.9+bn-clean") and not keeps_files("jpeg-75+bn-clean")
    csv = tiny_synth / "train.csv"
    assert apply_defense(csv, "bn-clean", tmp_path / "d") == csv and not (tmp_path / "d").exists()


def test_image_transforms():
    img = Image.new("RGB", (16, 16), (200, 30, 90))
    g, _ = transform_image(img, "grayscale")
    r, gg, b = g.getpixel((3, 3))
    assert r == gg == b
    q, _ = transform_image(img, "bits-3")
    assert all(v % 32 == 16 for v in q.getpixel((0, 0)))
    assert transform_image(img, "jpeg-30")[1] == ".jpg"
    assert transform_image(img, "resize-0.5")[0].size == (16, 16)


def test_caption_transforms():
    caps = ["alpha beta gamma red circle", "alpha beta gamma blue square", "one two"]
    assert transform_captions(caps, [[0, 1], [2]], "strip-3") == ["red circle", "blue square", "one two"]
    shuffled = transform_captions(caps, [[0, 1], [2]], "shuffle-captions", seed=1)
    assert sorted(shuffled[:2]) == sorted(caps[:2]) and shuffled[2] == caps[2]


def test_rare_words_counts_images_not_captions():
    caps = ["zork a red Circle", "zork a red circle.", "a red circle qux", "a red square", "wug"]
    images = [[0, 1], [2], [3], [4]]   # "zork" is in 2 captions but only 1 image
    assert transform_captions(caps, images, "rare-2") == ["a red Circle", "a red circle.", "a red circle", "a red",
                                                          "wug"]   # every word rare: kept whole, not emptied
    assert transform_captions(caps, images, "rare-3")[:2] == ["a red", "a red"]
    assert transform_captions(caps, images, "rare-4") == caps


def test_apply_defense_writes_a_copy(tiny_synth, tmp_path):
    src = tiny_synth / "train.csv"
    before = (tiny_synth / "images/train_00000.png").read_bytes()
    out = apply_defense(src, "jpeg-30", tmp_path / "jpeg")
    pairs = read_pairs(out)
    assert pairs.images[0].endswith(".jpg") and Image.open(pairs.image_path(0)).format == "JPEG"
    assert (tiny_synth / "images/train_00000.png").read_bytes() == before
    stripped = read_pairs(apply_defense(src, "strip-2", tmp_path / "strip"))
    original = read_pairs(src)
    assert stripped.captions[0] == " ".join(original.captions[0].split()[2:])
    rare = read_pairs(apply_defense(src, "rare-3", tmp_path / "rare"))   # captions only: images are links
    assert len(rare.captions) == len(original.captions) and rare.image_path(0).is_symlink()
    assert apply_defense(src, "rrc-flip", tmp_path / "x") == src


def test_rrc_flip_is_seeded_and_in_range():
    x = torch.rand(4, 3, 16, 16)
    a = rrc_flip(x, torch.Generator().manual_seed(0))
    b = rrc_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)


def test_rrc_whole_crops_at_the_native_aspect_and_reaches_the_ends():
    from mmue.augment import rrc_flip_whole
    # a 3:1 photo squashed to 32 x 32: left third red, middle green, right third blue
    x = torch.zeros(64, 3, 32, 32)
    for c, cols in enumerate((slice(0, 11), slice(11, 21), slice(21, 32))):
        x[:, c, :, cols] = 1
    sizes = torch.tensor([[300, 100]] * 64)
    a = rrc_flip_whole(x, sizes, torch.Generator().manual_seed(0), 16)
    assert torch.equal(a, rrc_flip_whole(x, sizes, torch.Generator().manual_seed(0), 16))
    assert a.shape == (64, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    # square crops of at most a third of the area (<= 100 x 100 native px) of a 300 x 100 photo: at most two
    # of its thirds in any crop (a crop of the squashed grid's own squares would span all three)
    a = rrc_flip_whole(x, sizes, torch.Generator().manual_seed(0), 16, scale=(0.3, 1 / 3), ratio=(1, 1))
    share = a.mean((2, 3))
    assert (share.min(1).values < 0.05).all()
    assert (share[:, 0] > 0.5).any() and (share[:, 2] > 0.5).any()        # both ends are reached
    with pytest.raises(ValueError, match="one training augmentation"):
        from mmue.defenses import uses_augment
        uses_augment("rrc-flip+rrc-whole")


def test_oracle_captions_and_composition(tiny_synth, tmp_path):
    src = tiny_synth / "train.csv"
    released = read_pairs(apply_defense(src, "strip-2", tmp_path / "released"))   # stands in for a protected copy
    original = read_pairs(src)
    with pytest.raises(ValueError, match="original CSV"):
        apply_defense(released.source, "oracle-captions", tmp_path / "o0")
    oracle = read_pairs(apply_defense(released.source, "oracle-captions", tmp_path / "o", original=src))
    assert oracle.captions == original.captions and oracle.image_path(0).resolve() == released.image_path(0).resolve()
    composed = apply_defense(released.source, "oracle-captions+jpeg-75+rrc-flip", tmp_path / "c", original=src)
    pairs = read_pairs(composed)
    assert pairs.captions == original.captions and pairs.images[0].endswith(".jpg")
    assert composed.parent.name == "1-jpeg-75"
    from mmue.defenses import uses_augment
    assert uses_augment("oracle-captions+jpeg-75+rrc-flip") == "rrc-flip" and uses_augment("jpeg-75") == "none"
    assert uses_augment("jpeg-75+crop-0.9") == "crop-0.9"
    assert apply_defense(src, "crop-0.9", tmp_path / "crop") == src            # acts in training: no file written
    with pytest.raises(ValueError, match="one training augmentation"):
        uses_augment("crop-0.9+rrc-flip")
    other = tmp_path / "one_row.csv"
    other.write_text(f"filepath,caption\n{tiny_synth / 'images/train_00000.png'},a\n")
    with pytest.raises(ValueError, match="not the data it was protected from"):
        apply_defense(released.source, "oracle-captions", tmp_path / "o2", original=other)
    # the same rows in another order would pair every image with another's caption: refused, naming the row
    lines = src.read_text().splitlines()
    swapped = tmp_path / "swapped.csv"
    rows = [ln.replace("images/", f"{tiny_synth}/images/") for ln in lines[1:]]
    first = [r for r in rows if "train_00000" in r]
    second = [r for r in rows if "train_00001" in r]
    rest = [r for r in rows if r not in first + second]
    swapped.write_text("\n".join([lines[0]] + second + first + rest) + "\n")
    with pytest.raises(ValueError, match=r"image 1 of the released copy is .*train_00000.*train_00001"):
        apply_defense(released.source, "oracle-captions", tmp_path / "o3", original=swapped)


def test_describe_says_what_a_scraper_does():
    from mmue.defenses import describe
    assert describe("none") == "takes your copy as published"
    assert describe("rare-10+jpeg-75+crop-0.9") == ("drops caption words used by fewer than 10 images, then re-saves "
                                                   "the images as JPEG at quality 75, then trains with random crops "
                                                   "of 0.9-1 of the area")
    assert describe("oracle-captions").startswith("re-captions your images")
    assert "BatchNorm statistics on clean images" in describe("jpeg-75+bn-clean")
    with pytest.raises(ValueError):
        describe("sharpen")


def test_a_defended_copy_is_reused_only_for_its_own_source(tiny_synth, tmp_path):
    src = tiny_synth / "train.csv"
    other = apply_defense(src, "strip-2", tmp_path / "released")   # another dataset, also named train.csv
    first = apply_defense(src, "rare-3", tmp_path / "d")
    stamp = (tmp_path / "d" / "defense.json").stat().st_mtime_ns
    assert apply_defense(src, "rare-3", tmp_path / "d") == first            # the same source: reused as it is
    assert (tmp_path / "d" / "defense.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made from .*train.csv"):
        apply_defense(other, "rare-3", tmp_path / "d")
    with pytest.raises(ValueError, match="made from"):
        apply_defense(src, "rare-3", tmp_path / "d", seed=1)
    # the same file rewritten with other captions (a scraper's mix made again from another copy): refused too
    from mmue.data.csvfile import write_rows
    pairs = read_pairs(src)
    rows = [(str(pairs.image_path(pairs.caption_image[c]).resolve()), pairs.captions[c])
            for c in range(len(pairs.captions))]
    mix = write_rows(rows, tmp_path / "mix.csv")
    apply_defense(mix, "rare-3", tmp_path / "m")
    write_rows([(p, cap + " again") for p, cap in rows], mix)
    with pytest.raises(ValueError, match="made from other images or captions in .*mix.csv"):
        apply_defense(mix, "rare-3", tmp_path / "m")
    (tmp_path / "d" / "defense.json").unlink()                              # a copy from before stamps: rebuilt
    again = read_pairs(apply_defense(other, "rare-3", tmp_path / "d"))
    assert again.captions == read_pairs(apply_defense(other, "rare-3", tmp_path / "e")).captions
    assert again.image_path(0).resolve() == read_pairs(other).image_path(0).resolve()   # relinked, not kept


def test_a_defended_copy_never_writes_beside_the_originals(tiny_synth, tmp_path):
    # an owner's mix lists its images by absolute path: the copy must go into its own folder, never over them
    src = read_pairs(tiny_synth / "train.csv")
    mix = tmp_path / "mix.csv"
    mix.write_text("filepath,caption\n" + "".join(f"{src.image_path(i).resolve()},a b c\n" for i in range(3)))
    before = sorted(p.name for p in src.image_path(0).parent.iterdir())
    for name in ("strip-1", "oracle-captions", "jpeg-75"):
        out = read_pairs(apply_defense(mix, name, tmp_path / name, original=mix))
        assert all(tmp_path / name in out.image_path(i).parents for i in range(3))
        assert src.image_path(0).is_file()
    assert sorted(p.name for p in src.image_path(0).parent.iterdir()) == before
