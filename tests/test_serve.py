"""`imgen serve` (imgen.web): request limits and uploads checked before any work, then one real server started by
the tests on a free 127.0.0.1 port and driven three ways: gradio_client round trips (prompt -> PNG with its
settings), a headless Debian chromium through playwright (type a prompt, click, the image appears), and 20
concurrent requests (all answered, RSS bounded, listening on 127.0.0.1 only)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgen.errors import ImgenError
from imgen.web.limits import Limits, check_count, check_prompt, read_upload

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T2I = "shapes-latent-t2i"


def _png(path: Path, size=(32, 32), mode="RGB", color=(200, 30, 30)) -> Path:
    Image.new(mode, size, color).save(path)
    return path


# ---- limits and uploads (no server) ---------------------------------------------------------------------------
def test_counts_and_prompts_are_bounded_with_messages_naming_the_limit():
    lim = Limits(max_n=4, max_prompt_chars=10)
    assert check_count(4.0, "n", lim.max_n) == 4  # gradio Number fields send floats
    for bad in (0, 5, 2.5, "x", None):
        with pytest.raises(ImgenError, match="n must be a whole number"):
            check_count(bad, "n", lim.max_n)
    assert check_prompt("a circle", "prompt", lim) == "a circle"
    assert check_prompt("  ", "negative prompt", lim, required=False) is None
    with pytest.raises(ImgenError, match="prompt is empty"):
        check_prompt(" ", "prompt", lim)
    with pytest.raises(ImgenError, match="11 characters, more than this server's limit of 10; shorten it"):
        check_prompt("x" * 11, "prompt", lim)


def test_uploads_of_any_mode_become_model_sized_images(tmp_path):
    rgb = read_upload(_png(tmp_path / "a.png", (64, 48)), Limits(), 3, 32)
    assert rgb.shape == (1, 3, 32, 32)
    assert np.allclose(rgb[0, :, 0, 0].numpy(), np.array([200, 30, 30]) / 127.5 - 1, atol=1e-6)
    for mode, color in (("RGBA", (0, 255, 0, 128)), ("P", 3), ("L", 77), ("CMYK", (0, 0, 0, 0)), ("I;16", 4000)):
        x = read_upload(_png(tmp_path / f"{mode}.png" if mode != "CMYK" else tmp_path / "c.jpg", (20, 20), mode,
                             color), Limits(), 3, 32)
        assert x.shape == (1, 3, 32, 32) and x.min() >= -1 and x.max() <= 1, mode
    assert read_upload(tmp_path / "a.png", Limits(), 1, 8).shape == (1, 1, 8, 8)


def test_bad_uploads_are_refused_with_a_message(tmp_path):
    lim = Limits(max_upload_bytes=20_000, max_upload_side=256)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImgenError, match="image A file is not an image .*upload a PNG or JPEG"):
        read_upload(tmp_path / "text.png", lim, 3, 32, "image A")
    good = _png(tmp_path / "good.png", (64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImgenError, match="corrupt or truncated"):
        read_upload(tmp_path / "cut.png", lim, 3, 32)
    _png(tmp_path / "wide.png", (4000, 4))  # a few hundred bytes on disk, refused from its header alone
    with pytest.raises(ImgenError, match="4000x4 pixels, more than this server's limit of 256 per side; downscale"):
        read_upload(tmp_path / "wide.png", lim, 3, 32)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImgenError, match="MiB, more than this server's limit"):
        read_upload(tmp_path / "big.png", lim, 3, 32)
    with pytest.raises(ImgenError, match="no image uploaded"):
        read_upload(None, lim, 3, 32)


def tiny_sr_config():
    """A tiny shapes-sr upsampler trained 2 steps: the upscale tab's mechanics, not quality."""
    from imgen.presets import get_preset

    c = get_preset("shapes-sr")
    c.data.options["n"], c.data.batch_size = 16, 4
    c.net.options.update(base_channels=8, channel_mults=[1, 2], num_heads=2)
    c.train.steps, c.train.warmup, c.train.ckpt_every = 2, 1, 2
    return c


@pytest.fixture(scope="module")
def app():
    """The request handlers over the shipped text-to-image model, without a server (imgen.web.app.App)."""
    import imgen
    from imgen.web.app import App

    return App({T2I: imgen.load(T2I)})


def test_image_to_image_handlers_return_pngs_with_their_settings(app, tmp_path):
    from imgen.metrics.adherence import inpaint_tasks

    prompts, _, inputs, holes = inpaint_tasks(1)
    from imgen.images import to_uint8
    path = tmp_path / "in.png"
    Image.fromarray(to_uint8(inputs)[0]).save(path)
    out = app.img2img(T2I, str(path), prompts[0], 0.5, 6, 0, 2)
    assert len(out) == 2 and json.loads(out[0][0].info["imgen"])["application"] == "img2img"
    rgba = np.concatenate([to_uint8(inputs)[0], np.full((32, 32, 1), 255, np.uint8)], axis=2)
    stroke = np.zeros((32, 32, 4), np.uint8)
    stroke[holes[0].numpy()] = 255  # the brush's white, opaque where drawn
    filled = app.inpaint(T2I, {"background": rgba, "layers": [stroke], "composite": rgba}, prompts[0],
                         "replacement", 0, 1)
    got = np.asarray(filled[0][0])
    keep = ~holes[0].numpy()
    assert np.array_equal(got[keep], to_uint8(inputs)[0][keep])  # outside the drawn hole: the upload, exactly
    edited = app.edit(T2I, str(path), "a red circle on the left", "a blue circle on the left", False)
    assert json.loads(edited[0][0].info["imgen"])["to"] == "a blue circle on the left"


@pytest.mark.parametrize("call,pattern", [
    (lambda a, p: a.inpaint(T2I, None, "a red star", "replacement", 0, 1), "no image uploaded"),
    (lambda a, p: a.inpaint(T2I, {"background": np.zeros((32, 32, 4), np.uint8), "layers": []}, "a red star",
                            "replacement", 0, 1), "no hole drawn"),
    (lambda a, p: a.inpaint(T2I, {"background": np.zeros((16, 16, 4), np.uint8), "layers": []}, "a red star",
                            "replacement", 0, 1), "the image is 16x16 but the model makes 32x32"),
    (lambda a, p: a.img2img(T2I, None, "a red star", 0.5, 4, 0, 1), "no image uploaded"),
    (lambda a, p: a.edit(T2I, str(p), "a red star", "a big blue star", False), "swaps words one for one"),
])
def test_image_to_image_handlers_refuse_bad_input_with_a_message(app, tmp_path, call, pattern):
    with pytest.raises(ImgenError, match=pattern):
        call(app, _png(tmp_path / "x.png"))


def test_upscale_tab_upscales_an_upload_with_an_upsampler_and_refuses_other_models(app, tmp_path):
    import imgen
    from imgen.apps.upscale import upscale
    from imgen.images import to_uint8
    from imgen.train import train
    from imgen.web.app import App, model_kinds

    train(tiny_sr_config(), tmp_path / "sr", progress=False)
    sr = imgen.load(tmp_path / "sr")
    assert model_kinds(sr) == {"upscale"}  # not a "Sample" tab that could only fail
    web = App({"sr": sr})
    big = _png(tmp_path / "in.png", size=(40, 40), color=(200, 30, 30))  # any size: resized to 8x8 first
    out = web.upscale("sr", str(big), 3, 5, None)
    settings = json.loads(out[0][0].info["imgen"])
    assert out[0][0].size == (32, 32) and settings["low_res"] == 8 and settings["steps"] == 3
    low = read_upload(big, Limits(), 3, 8)
    assert np.array_equal(np.asarray(out[0][0]), to_uint8(upscale(sr, low, steps=3, seed=5))[0])
    with pytest.raises(ImgenError, match="unknown model 'x'"):
        web.upscale("x", str(big), 3, 0, None)
    with pytest.raises(ImgenError, match="no low-res image uploaded"):
        web.upscale("sr", None, 3, 0, None)
    with pytest.raises(ImgenError, match="unknown model"):
        app.upscale(T2I, str(big), 3, 0, None)  # a text-to-image model is not an upsampler


def test_serve_command_errors_are_one_line(capsys):
    from imgen.cli import main

    assert main(["serve", "--model", "no-such-model"]) == 2
    assert "--model 'no-such-model' is neither a shipped model" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 1..65535, got 70000" in capsys.readouterr().err


# ---- one server for the round trip, browser and load tests ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _listen_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on `port` (IPv4 and IPv6, from /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`imgen serve` with the shipped text-to-image model, its autoencoder, a 1-step class-conditional digits
    model and a 2-step upsampler, as a user starts it: (url, process, class model name)."""
    pytest.importorskip("gradio")
    from conftest import tiny_config

    from imgen.train import train

    digits = tmp_path_factory.mktemp("serve") / "digits"
    train(tiny_config(steps=1), digits, progress=False)
    sr = digits.parent / "sr"
    train(tiny_sr_config(), sr, progress=False)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio"))}
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "imgen", "serve", "--model", T2I, "--model", "shapes-ae",
                                 "--model", str(digits), "--model", str(sr), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"imgen serve did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.25)
    yield url, proc, "digits"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _settings(path) -> dict:
    with Image.open(path) as img:
        return json.loads(img.info["imgen"])


def _t2i(client, prompt, seed=0, n=2, steps=4, negative="", sampler="euler", cfg=3.0):
    return client.predict(T2I, prompt, negative, cfg, steps, sampler, seed, n, api_name="/text_to_image")


def test_round_trip_prompt_to_pngs_with_their_settings(server):
    from gradio_client import Client

    url, proc, _ = server
    client = Client(url, verbose=False)
    out = _t2i(client, "a red circle in the top left", seed=7, n=2)
    assert len(out) == 2
    images = [np.asarray(Image.open(o["image"])) for o in out]
    for i, o in enumerate(out):
        assert Image.open(o["image"]).format == "PNG" and images[i].shape == (32, 32, 3)
        assert _settings(o["image"]) == {"model": T2I, "prompt": "a red circle in the top left", "negative": None,
                                         "cfg": 3.0, "steps": 4, "sampler": "euler", "seed": 7, "n": 2, "index": i,
                                         "imgen_version": _settings(o["image"])["imgen_version"]}
    assert images[0].std() > 5 and not np.array_equal(images[0], images[1])
    again = _t2i(client, "a red circle in the top left", seed=7, n=2)  # same seed, same images
    assert all(np.array_equal(a, np.asarray(Image.open(o["image"]))) for a, o in zip(images, again))
    job = client.submit(T2I, "a blue square", "", 3.0, 100, "euler", 0, 4, api_name="/text_to_image")
    seen = []
    while not job.done():  # the page's progress bar: one update per sampler step
        seen += [(p.index, p.length, p.unit) for p in job.status().progress_data or []]
        time.sleep(0.02)
    assert job.result() and len(seen) >= 3 and all(length == 100 and unit == "steps" for _, length, unit in seen)
    assert [i for i, _, _ in seen] == sorted(i for i, _, _ in seen) and seen[-1][0] > seen[0][0]
    from imgen.model import load
    local = load(T2I).generate(["a red circle in the top left"], n=2, sampler="euler", steps=4, cfg=3.0, seed=7)
    from imgen.images import to_uint8
    assert np.abs(to_uint8(local).astype(int) - np.stack(images).astype(int)).max() <= 1  # what imgen.load gives


def test_bad_requests_get_a_message_and_the_server_keeps_serving(server, tmp_path):
    from gradio_client import Client, handle_file

    url, proc, _ = server
    client = Client(url, verbose=False)
    for args, message in (((" ",), "the prompt is empty"), (("x" * 201,), "more than this server's limit of 200"),
                          (("a circle", 0, 2, 4, "", "nope"), "nope is not in the list of choices"),
                          (("a circle", 0, 9), "greater than maximum"), (("a circle", -1), "less than minimum value 0"),
                          (("a circle", 2 ** 64), "seed must be")):
        with pytest.raises(Exception, match=message):
            _t2i(client, *args)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 100)
    good = _png(tmp_path / "good.png")
    with pytest.raises(Exception, match="image A file is a corrupt or truncated image"):
        client.predict("shapes-ae", handle_file(str(tmp_path / "junk.png")), handle_file(str(good)), 4, "linear",
                       api_name="/interpolate")
    (tmp_path / "huge.png").write_bytes(good.read_bytes() + bytes(Limits().max_upload_bytes))  # over the limit
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):  # refused by the upload route itself
        client.predict("shapes-ae", handle_file(str(tmp_path / "huge.png")), handle_file(str(good)), 4, "linear",
                       api_name="/interpolate")
    assert proc.poll() is None
    assert len(_t2i(client, "a blue square", n=1, steps=2)) == 1
    port = url.rsplit(":", 1)[1].strip("/")  # a second server on a port in use: one line, not a traceback
    second = subprocess.run([sys.executable, "-m", "imgen", "serve", "--port", port], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert second.returncode == 2 and second.stderr.startswith(f"imgen: error: cannot listen on 127.0.0.1:{port} (")
    assert "pick a free port with --port" in second.stderr and len(second.stderr.strip().splitlines()) == 1


def test_class_conditional_and_latent_interpolation_tabs(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _, digits = server
    client = Client(url, verbose=False)
    out = client.predict(digits, "3", 1.0, 2, "euler", 0, 2, api_name="/sample")
    assert [_settings(o["image"])["label"] for o in out] == [3, 3]
    assert np.asarray(Image.open(out[0]["image"])).shape == (8, 8)  # digits: 8x8 grey
    a, b = _png(tmp_path / "a.png", color=(220, 20, 20)), _png(tmp_path / "b.png", (40, 40), "RGBA", (20, 20, 220, 255))
    frames = client.predict("shapes-ae", handle_file(str(a)), handle_file(str(b)), 5, "slerp", api_name="/interpolate")
    means = [np.asarray(Image.open(f["image"])).reshape(-1, 3).mean(0) for f in frames]
    assert len(frames) == 5 and _settings(frames[0]["image"])["mode"] == "slerp"
    assert means[0][0] > means[0][2] and means[-1][2] > means[-1][0]  # red end to blue end
    with pytest.raises(Exception, match="shapes-latent-t2i is not in the list of choices"):
        client.predict(T2I, "3", 1.0, 2, "euler", 0, 2, api_name="/sample")


def test_image_to_image_tabs_round_trip_through_the_server(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _, _ = server
    client = Client(url, verbose=False)
    image = _png(tmp_path / "in.png", color=(15, 20, 75))  # a navy background
    out = client.predict(T2I, handle_file(str(image)), "a red star in the center", 0.7, 6, 0, 1, api_name="/img2img")
    assert _settings(out[0]["image"])["strength"] == 0.7
    stroke = np.zeros((32, 32, 4), np.uint8)
    stroke[8:24, 8:24] = 255
    Image.fromarray(stroke, "RGBA").save(tmp_path / "stroke.png")
    editor = {"background": handle_file(str(image)), "layers": [handle_file(str(tmp_path / "stroke.png"))],
              "composite": None}
    out = client.predict(T2I, editor, "a red star in the center", "replacement", 0, 1, api_name="/inpaint")
    got = np.asarray(Image.open(out[0]["image"]).convert("RGB"))
    assert (got[:8] == (15, 20, 75)).all() and not (got[8:24, 8:24] == (15, 20, 75)).all()  # kept / redrawn
    out = client.predict("sr", handle_file(str(image)), 2, 0, api_name="/upscale")
    assert Image.open(out[0]["image"]).size == (32, 32) and _settings(out[0]["image"])["application"] == "upscale"


@pytest.mark.slow  # with the server's start, over the fast tier's share
def test_browser_types_a_prompt_and_gets_an_image(server, tmp_path):
    """Debian's chromium, headless, through playwright (no downloaded browser); every request it makes stays on
    127.0.0.1 (no fonts, scripts or analytics from outside)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; the README's test command installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    url = server[0]
    outside, inside = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_FLAGS, accept_downloads=True,
                                                       viewport={"width": 1100, "height": 700})
        try:
            def route(r):
                if r.request.url.startswith(url) or r.request.url.startswith(("data:", "blob:")):
                    inside.append(r.request.url)
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()
            browser.route("**/*", route)
            page = browser.new_page()
            page.goto(url, wait_until="networkidle", timeout=30_000)
            page.locator("#prompt textarea").fill("a green triangle in the bottom right")
            page.locator("#generate").click()
            img = page.locator("#t2i-gallery img").first
            img.wait_for(state="visible", timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle(),
                                   timeout=10_000)
            src = img.get_attribute("src")
            assert src.startswith(url) and src.endswith(".png"), src
            assert page.locator("#t2i-gallery img").count() == 4  # the default n
            img.click()  # the detailed view's Download button saves the PNG with its settings
            with page.expect_download(timeout=10_000) as download:
                page.locator('#t2i-gallery [aria-label="Download"]').first.click()
            saved = _settings(download.value.path())
            assert saved["prompt"] == "a green triangle in the bottom right" and saved["index"] == 0
            shot = tmp_path / "imgen-serve.png"
            page.screenshot(path=str(shot))
            assert Image.open(shot).size == (1100, 700)
            if os.environ.get("IMGEN_SCREENSHOT"):  # keep one for the README
                shutil.copy(shot, os.environ["IMGEN_SCREENSHOT"])
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside 127.0.0.1: {outside[:5]}"
    assert len(inside) > 5  # the route saw the page's own requests


@pytest.mark.slow  # with the server's start, over the fast tier's share
def test_twenty_concurrent_requests_are_all_answered_with_bounded_memory(server):
    from gradio_client import Client

    url, proc, _ = server
    assert _listen_addresses(int(url.rsplit(":", 1)[1].strip("/"))) == {"127.0.0.1"}
    client = Client(url, verbose=False)
    _t2i(client, "a warm-up circle", n=1, steps=2)
    before = _rss_kib(proc.pid)
    tic = time.monotonic()
    with ThreadPoolExecutor(20) as pool:  # 20 clients at once; the queue runs them one at a time
        futures = [pool.submit(_t2i, Client(url, verbose=False), f"a red circle number {i}", i, 1, 2)
                   for i in range(20)]
        results = [f.result(timeout=120) for f in futures]
    elapsed = time.monotonic() - tic
    after = _rss_kib(proc.pid)
    assert [_settings(r[0]["image"])["seed"] for r in results] == list(range(20))  # none lost, none mixed up
    assert [_settings(r[0]["image"])["prompt"] for r in results] == [f"a red circle number {i}" for i in range(20)]
    assert elapsed < 90
    assert after - before < 150 * 1024, f"RSS grew {before} -> {after} KiB over 20 requests"
    assert proc.poll() is None
