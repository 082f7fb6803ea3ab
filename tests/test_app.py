"""``mmue app``: uploads stay inside the working folder, and the page works end to end in a real browser
(Debian's Chromium driven by Playwright: upload a zip, protect with one round, download the copy, check it)."""
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from mmue import api
from tests.helpers.layouts import make_layout

gradio = pytest.importorskip("gradio") if not os.environ.get("MMUE_REQUIRE_BROWSER") else __import__("gradio")
from mmue.app import (CHECK_MODELS, AppError, Upload, check_dir, check_models, receive, safe_extract,  # noqa: E402
                      verify_command)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _zip(folder: Path, path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, prefix + str(p.relative_to(folder)))
    return path


def test_safe_extract_refuses_escapes_links_and_bombs(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in ("../evil.txt", "/etc/evil.txt", "a/../../evil.txt"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr(name, "x")
        with pytest.raises(AppError, match="zip-slip"):
            safe_extract(bad, dest, 2**20)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("photos/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(AppError, match="symbolic link"):
        safe_extract(link, dest, 2**20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.bin", b"\0" * (4 * 2**20))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(AppError, match="more than 1 MB"):
        safe_extract(bomb, dest, 2**20)
    assert not list(dest.iterdir()) and not (tmp_path / "evil.txt").exists()
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("hello")
    with pytest.raises(AppError, match="not a readable zip"):
        safe_extract(not_zip, dest, 2**20)


def test_receive_reads_zips_and_loose_files_into_content_named_jobs(tiny_synth, tmp_path):
    folder = make_layout(tiny_synth, tmp_path / "in", "captions-txt", n=3)
    work = tmp_path / "work"
    a = receive([_zip(folder, tmp_path / "a.zip", "my photos/")], work, 2**26)
    assert a.layout == "captions-txt" and a.n_images == 3 and a.folder.parent == work / "jobs"
    assert receive([tmp_path / "a.zip"], work, 2**26).folder == a.folder      # same upload, same job (resume)
    loose = [*folder.joinpath("photos").iterdir()]
    b = receive(loose, work, 2**26)
    assert b.n_images == 3 and b.folder != a.folder
    with pytest.raises(AppError, match="limit"):
        receive([tmp_path / "a.zip"], work, 10)
    with pytest.raises(AppError, match="upload"):
        receive([], work, 2**26)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_check_offers_fine_tuning_where_the_towers_are_installed(monkeypatch, tmp_path):
    import mmue.app as app
    scratch, finetune = CHECK_MODELS
    monkeypatch.setattr(app, "pretrained_tower_models", lambda installed=False: [])
    assert check_models() == [scratch]
    monkeypatch.setattr(app, "pretrained_tower_models", lambda installed=False: ["mmue-effl0-minilm"])
    assert check_models() == [scratch, finetune]
    up = Upload(tmp_path, tmp_path / "input", "captions-txt", 8, 8)
    out = tmp_path / "runs" / "mem-3-low"
    # each epoch setting has its own victims (a victim of other epochs is refused, not reused); empty = the recipes;
    # the copies of every preset share them (the clean models are trained once)
    assert check_dir(up, None) == tmp_path / "verify" / "recipe"
    assert check_dir(up, 3) != check_dir(up, 5)
    cmd = verify_command(up, out, check_dir(up, None), finetune, None, "cpu")
    assert cmd[cmd.index("--model") + 1] == finetune and "--epochs" not in cmd
    cmd = verify_command(up, out, check_dir(up, 2), scratch, 2.0, "cpu")
    assert cmd[cmd.index("--epochs") + 1] == "2"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM and not os.environ.get("MMUE_REQUIRE_BROWSER"),
                    reason="needs Debian's chromium (apt-get install chromium); CI installs it")
def test_app_in_a_browser(tiny_synth, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    folder = make_layout(tiny_synth, tmp_path / "in", "captions-txt", n=8)
    upload = _zip(folder, tmp_path / "my photos.zip", "my photos/")
    others = _zip(make_layout(tiny_synth, tmp_path / "others", "imagefolder-jsonl", n=14, skip=8),
                  tmp_path / "others.zip")
    shots = Path(os.environ.get("MMUE_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    port, work = _free_port(), tmp_path / "appwork"
    log = open(tmp_path / "app.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mmue", "app", "--port", str(port), "--workdir", str(work),
                               "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "app.log").read_text()
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(url)
            expect(page.locator("#protect")).to_be_disabled(timeout=30_000)
            page.screenshot(path=shots / "1-start.png", full_page=True)
            page.locator("#upload input[type=file]").set_input_files(str(upload))
            expect(page.locator("#found")).to_contain_text("8 images", timeout=60_000)
            expect(page.locator("#protect")).to_be_enabled()
            page.locator("#preset").get_by_text("mem-3-robust —").click()
            expect(page.locator("#about")).to_contain_text("mem-3-robust")
            page.locator("#format").get_by_text("JPEG, quality 90").click()
            page.get_by_text("advanced").click()
            page.locator("#rounds input").fill("3")
            page.locator("#epochs input").fill("1")
            page.screenshot(path=shots / "2-uploaded.png", full_page=True)
            # cancel during the rounds, then Protect again resumes the stopped run from its checkpoint
            page.locator("#protect").click()
            expect(page.locator("#status")).to_contain_text("round 1 of 3", timeout=300_000)
            page.screenshot(path=shots / "3-running.png", full_page=True)
            page.locator("#cancel").click()
            expect(page.locator("#status")).to_contain_text("Cancelled", timeout=30_000)
            page.locator("#protect").click()
            expect(page.locator("#status")).to_contain_text("Protected 8 images (resumed after a stop)",
                                                            timeout=300_000)
            expect(page.locator("#captions mark").first).to_be_visible()
            expect(page.locator("#gallery img")).to_have_count(6)
            page.wait_for_function("[...document.querySelectorAll('#gallery img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=shots / "4-protected.png", full_page=True)
            with page.expect_download() as dl:
                page.locator('#downloads a[download="protected.zip"]').click()
            got = tmp_path / "downloaded.zip"
            dl.value.save_as(got)
            # the check with the fine-tuning scraper too, among others' images: cancelled after its first model,
            # then resumed
            page.locator("#models").get_by_text("fine-tuned").click()
            page.locator("#others input[type=file]").set_input_files(str(others))
            page.locator("#verify").click()
            expect(page.locator("#verdict")).to_contain_text("training model 1 of 9", timeout=120_000)
            page.locator("#cancel-check").click()
            expect(page.locator("#verdict")).to_contain_text("Cancelled", timeout=30_000)
            page.locator("#verify").click()
            expect(page.locator("#verdict")).to_contain_text("protected copy", timeout=600_000)
            expect(page.locator("#verdict")).to_contain_text("fine-tuned")
            expect(page.locator("#verdict")).to_contain_text("gallery 14 images")   # 8 of mine + 6 others'
            page.screenshot(path=shots / "5-verified.png", full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    with zipfile.ZipFile(got) as z:
        names = z.namelist()
        z.extractall(tmp_path / "copy")
    assert "manifest.json" in names and not any("private" in n for n in names)
    assert sum(n.endswith(".jpg") for n in names) == 8 and sum(n.endswith(".txt") for n in names) == 8
    assert api.check(tmp_path / "copy")["ok"]
    # gradio's own upload copy went to the app's working folder, not to a system temp folder
    assert any((work / "uploads").rglob("my photos.zip"))
