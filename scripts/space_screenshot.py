"""Take the README's screenshot of the demo: start space/app.py, analyse one example in headless Chromium.

    python scripts/space_screenshot.py --model runs/tiny/model --output docs/space.png [--example 5]

Needs the dev setup (gradio, playwright) and Debian's chromium. The example is the N-th of the page's examples
(the bundled sample's test reports first).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the app exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: the app did not listen on port {port} within {STARTUP_TIMEOUT_S} s")


def screenshot(url: str, example: int, output: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1.25)
        page.goto(url, timeout=60_000)
        page.locator("#examples button").nth(example - 1).click()
        expect(page.get_by_label("Informe")).not_to_have_value("", timeout=30_000)
        page.get_by_role("button", name="Analizar").click()
        expect(page.locator("#stacked-view .rn-legend")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder or Hub repo id")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "space.png")
    parser.add_argument("--example", type=int, default=5, help="which example to analyse, from 1")
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    app = subprocess.Popen([sys.executable, str(REPO / "space" / "app.py"), "--model", args.model], env=env)
    try:
        wait_for_port(port, app)
        screenshot(f"http://127.0.0.1:{port}/", args.example, args.output)
    finally:
        app.terminate()
        app.wait(timeout=30)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
