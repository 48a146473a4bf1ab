"""Regenerate the README's pictures: a ``zooprune viz`` figure and a screenshot of ``zooprune demo``.

    python docs/make_images.py [--model PATH]      # default: the embedded testbed model

Needs the demo extra, playwright (``pip install playwright``) and Debian's chromium
(``apt-get install chromium``); never downloads a browser.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from zooprune.cli import main as zooprune_main
from zooprune.cli.common import resolve_model
from zooprune.eval.data import generated_items
from zooprune.testbed.variant import model_testbed_variant

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def example(model: str, seed: int, index: int, out: Path) -> tuple[Path, str]:
    """A held-out question of the model's testbed: its image saved to ``out`` and its question."""
    item = generated_items(seed, index + 1, model_testbed_variant(model) or "v1")[index]
    item.image.save(out)
    return out, item.question


def viz_figure(model: str, image: Path, question: str, out: Path, keep: int) -> None:
    code = zooprune_main(
        ["viz", "--model", model, "--image", str(image), "--prompt", question, "--keep", str(keep),
         "--methods", "zoo,divprune,visionzip,fastv,pool,random", "--dpi", "90", "--out", str(out)]
    )  # fmt: skip
    if code:
        raise SystemExit(code)


def demo_screenshot(model: str, image: Path, question: str, out: Path, keep: int, port: int) -> None:
    from playwright.sync_api import sync_playwright

    command = [sys.executable, "-c", "from zooprune.cli import main; raise SystemExit(main())"]
    command += ["demo", "--model", model, "--port", str(port), "--keep", str(keep)]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("the demo exited") from None
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="networkidle")
            page.locator("#image input[type=file]").set_input_files(str(image))
            page.locator("#question textarea").fill(question)
            page.locator("#methods").get_by_label("fastv", exact=True).check()
            page.locator("#run").click()
            page.locator("#results table").wait_for(timeout=300_000)
            page.locator("#overlays img").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded testbed model)")
    parser.add_argument("--keep", type=int, default=24, help="budget (default: 24 of 196)")
    parser.add_argument("--seed", type=int, default=7, help="held-out testbed split of the example")
    parser.add_argument("--index", type=int, default=4, help="question index in that split (default: 4, a reading question)")
    parser.add_argument("--out-dir", default=str(HERE / "images"))
    args = parser.parse_args()
    model = resolve_model(args.model)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        image, question = example(model, args.seed, args.index, Path(tmp) / "example_scene.png")
        print(f"question: {question}")
        viz_figure(model, image, question, out_dir / "viz_example.png", args.keep)
        demo_screenshot(model, image, question, out_dir / "demo.png", args.keep, free_port())
    print(f"wrote {out_dir}/viz_example.png and {out_dir}/demo.png")


if __name__ == "__main__":
    main()
