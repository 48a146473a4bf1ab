"""End to end: ``zooprune demo`` served on localhost, driven in headless Debian Chromium by Playwright.

Skipped only when gradio, playwright or a chromium binary is missing (CI installs all three).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooprune.cli.common import DEFAULT_MODEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = [name for name in ("gradio", "playwright") if importlib.util.find_spec(name) is None]
if CHROMIUM is None:
    MISSING.append("chromium")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"browser test needs {', '.join(MISSING)}")

#: Chromium flags for a closed network (no background connections, no GPU, root without sandbox).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 180
ANSWER_TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"demo exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"demo did not answer on {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")


@contextmanager
def serve_demo(options: list[str], log: Path) -> Iterator[str]:
    """``zooprune demo OPTIONS`` in a subprocess on a free localhost port; yields its URL."""
    port = free_port()
    command = [sys.executable, "-c", "from zooprune.cli import main; raise SystemExit(main())"]
    command += ["demo", "--port", str(port), *options]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def browser_page(url: str) -> Iterator:
    """A headless Debian-chromium page (Playwright, no browser download) opened at ``url``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="networkidle")
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def demo_url(tiny_llava_dir: Path, tmp_path_factory) -> Iterator[str]:
    """``zooprune demo --model <tiny checkpoint>``."""
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    options = ["--model", str(tiny_llava_dir), "--keep", "5", "--max-new-tokens", "3"]
    with serve_demo(options, log) as url:
        yield url


@pytest.fixture
def page(demo_url: str) -> Iterator:
    with browser_page(demo_url) as page:
        yield page


def test_upload_ask_and_see_answers_and_overlays(page, tmp_path: Path) -> None:
    image_path = tmp_path / "upload.png"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(image_path)

    page.locator("#image input[type=file]").set_input_files(str(image_path))
    page.locator("#question textarea").fill("what is in the image ?")
    methods = page.locator("#methods")
    for name in ("zoo", "divprune", "visionzip"):  # the defaults
        assert methods.get_by_label(name, exact=True).is_checked()
    methods.get_by_label("pool", exact=True).check()
    slider = page.locator("#budget input[type=range]")
    assert slider.input_value() == "5"  # --keep 5
    slider.fill("7")  # the budget slider, as a person drags it
    page.locator("#run").click()

    page.locator("#results table").wait_for(timeout=ANSWER_TIMEOUT_MS)
    rows = page.locator("#results tbody tr")
    assert rows.count() == 4
    seen = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        seen[cells[0]] = cells
        assert cells[1].strip(), f"no answer for {cells[0]}"
        kept, total = (int(v) for v in cells[2].split("/"))
        assert total == 16 and (kept == 7 or cells[0] == "pool" and kept <= 7)  # pool keeps a whole grid
        assert float(cells[4]) > 0  # prefill ms
    assert set(seen) == {"zoo", "divprune", "visionzip", "pool"}

    overlays = page.locator("#overlays img")
    overlays.first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert overlays.count() == 5  # four methods and the zoo sensitivity heatmap
    for i in range(overlays.count()):
        # decoded images enlarged from the 48 x 40 upload by 8 (shorter side >= 320 px)
        overlays.nth(i).evaluate("img => img.decode()")
        size = overlays.nth(i).evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [384, 320]
    captions = " ".join(page.locator("#overlays").all_inner_texts())
    assert "zoo sensitivity" in captions and "(7/16 tokens)" in captions


def test_asking_without_an_image_shows_an_error(page) -> None:
    page.locator("#question textarea").fill("what is in the image ?")
    page.locator("#run").click()
    page.get_by_text("upload an image first").first.wait_for(timeout=30_000)
    assert page.locator("#results table").count() == 0


@pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="the embedded testbed model is not in this checkout")
def test_demo_starts_on_the_embedded_model_without_arguments(tmp_path: Path) -> None:
    from zooprune.eval.data import generated_items

    item = generated_items(7, 13, "v2")[12]  # the default model's testbed: "what number is on the white tile?"
    item.image.save(tmp_path / "scene.png")
    with serve_demo([], tmp_path / "demo.log") as url, browser_page(url) as page:
        assert "testbed-llava" in page.locator("body").inner_text()
        page.locator("#image input[type=file]").set_input_files(str(tmp_path / "scene.png"))
        page.locator("#question textarea").fill(item.question)
        for name in ("divprune", "visionzip"):
            page.locator("#methods").get_by_label(name, exact=True).uncheck()
        page.locator("#run").click()
        page.locator("#results table").wait_for(timeout=ANSWER_TIMEOUT_MS)
        cells = page.locator("#results tbody tr").first.locator("td").all_inner_texts()
        assert cells[0] == "zoo" and cells[2] == "64 / 196"  # default budget 64 of 14 x 14 tokens
        assert cells[1].strip()  # an answer (which one depends on the trained weights)
        assert page.locator("#overlays img").count() == 2  # zoo overlay + sensitivity heatmap
