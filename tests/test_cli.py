import json
import re

import pytest

from mmue.cli import main


def test_train_then_eval_cli(tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["-q", "train", "--train-data", str(tiny_synth / "train.csv"), "--val-data", str(tiny_synth / "test.csv"),
               "--out", str(run), "--epochs", "2", "--batch-size", "32", "--device", "cpu"])
    assert rc == 0
    params = json.loads((run / "params.json").read_text())
    assert params["epochs"] == 2 and params["seed"] == 0 and "versions" in params
    out = tmp_path / "m.json"
    rc = main(["eval", "--checkpoint", str(run), "--data", str(tiny_synth / "test.csv"), "--json", str(out),
               "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "random guess" in text and "i2t R@1" in text
    m = json.loads(out.read_text())
    assert m["n_images"] == 48 and 0 <= m["image_to_text_R@1"] <= 1
    assert m["random_guess"]["text_to_image_R@1"] == 1 / 48


def test_errors_give_nonzero_exit_and_clear_message(tmp_path, tiny_synth, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("pic,words\nx.png,hello\n")
    rc = main(["train", "--train-data", str(bad), "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--csv-img-key" in err and "bad.csv" in err
    rc = main(["eval", "--checkpoint", str(tmp_path / "nope"), "--data", str(tiny_synth / "test.csv")])
    assert rc == 2


def test_module_entry_point():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "mmue", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "mmue" in r.stdout


def test_help_and_version_load_neither_torch_nor_open_clip():
    """`mmue --help`, `--version` and a mistyped flag answer at once: the parser reads presets and defaults from
    modules that import no torch (torch and open_clip take seconds to import)."""
    import subprocess
    import sys
    code = ("import sys; from mmue.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_methods_and_check_load_neither_torch_nor_open_clip(tmp_path):
    """`mmue methods` and `mmue check` (an owner's last step before uploading) need no model: they answer without
    importing torch, and check still tells a good copy from a changed one."""
    import hashlib
    import json
    import subprocess
    import sys
    pub = tmp_path / "publish"
    (pub / "images").mkdir(parents=True)
    (pub / "images" / "a.png").write_bytes(b"pixels")
    (pub / "train.csv").write_text("filepath,title\nimages/a.png,a cat\n")
    files = {rel: hashlib.sha256((pub / rel).read_bytes()).hexdigest() for rel in ("images/a.png", "train.csv")}
    (pub / "manifest.json").write_text(json.dumps({"files": files}))
    code = ("import sys; from mmue.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules))")

    def run(*argv):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        return r.stdout.strip().splitlines()[-1], r.stdout

    assert run("methods")[0] == "0 []"
    last, out = run("check", str(tmp_path))
    assert last == "0 []" and "ok: 2 files" in out, out
    (pub / "images" / "a.png").write_bytes(b"pixels, changed")
    last, out = run("check", str(tmp_path))
    assert last == "1 []" and "changed: images/a.png" in out, out


def test_models_lists_every_architecture_without_loading_torch():
    """`mmue models` reads config files only; what it lists under open_clip is what open_clip itself registers (in a
    fresh interpreter, before MMUE adds its own), and it names the pretrained towers too."""
    import subprocess
    import sys
    code = ("import sys; from mmue.cli import main; rc = main(['models']); "
            "print(rc, sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules)); "
            "import open_clip; from mmue.models import catalog; "
            "print(sorted(open_clip.list_models()) == catalog.open_clip_architectures(), len(open_clip.list_models()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-2] == "0 []", out
    same, n = lines[-1].split()
    assert same == "True" and int(n) > 50, out
    listed = dict(line.split(": ", 1) for line in lines[:-2])
    assert "mmue-tiny-rn" in listed["built-in tiny (CPU)"] and "RN50" in listed["open_clip"].split(", ")
    assert any("mmue-effl0-minilm" in v for k, v in listed.items() if k.startswith("pretrained towers")), out


def test_protect_help_reads_as_the_product_first(capsys):
    """The offered presets and the everyday knobs come first; the bench's variation points under their own heading,
    each still a working flag; knobs the strength sets say so."""
    from mmue.cli import EVERYDAY_KNOBS, build_parser, knob_settings
    from mmue.protect import OFFERED
    from mmue.protect.config import knobs
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["protect", "--help"])
    text = capsys.readouterr().out
    options, research = text.split("\nresearch knobs:")
    assert f"protection preset: {', '.join(OFFERED)}" in " ".join(options.split())
    assert text.splitlines()[0].startswith("usage: mmue protect --train-data DATA --out OUT [--method METHOD]")
    for f in knobs():
        flag = "--" + f.name.replace("_", "-")
        listed = re.compile(rf"^  {flag}[ ,\n]", re.M)
        assert bool(listed.search(options)) == (f.name in EVERYDAY_KNOBS), flag
        assert bool(listed.search(research)) == (f.name not in EVERYDAY_KNOBS), flag
    assert "--strength's (low: 3, mid: 10, high: 20) unless --method sets it" in " ".join(options.split())
    args = parser.parse_args(["protect", "--train-data", "d.csv", "--out", "o", "--noise-block", "8", "--eps", "4"])
    settings = knob_settings(args)
    assert args.method == OFFERED[0] and settings["noise_block"] == 8 and settings["eps"] == 4 / 255
