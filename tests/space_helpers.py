"""space/app.py loaded once as a module, as a Space runs it, and what the tests of the demo share."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

from .helpers import REPO

APP_PATH = REPO / "space" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = "<script>window.__xss=1</script> Riñón derecho sin dilatación de la pelvis renal."
STARTUP_TIMEOUT_S = 90


def load_app():
    sys.path.insert(0, str(APP_PATH.parent))  # app.py imports render.py beside it, as on a Space
    spec = importlib.util.spec_from_file_location("space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


app = load_app()
import render  # noqa: E402, F401  (space/render.py, on the path once the app is loaded)


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")
