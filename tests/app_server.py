"""The real `clay-search app` server on loopback and Debian's Chromium, for the browser tests.

:func:`app_server` starts the server for a store and always stops it; :data:`BROWSER_MARKS`
are the marks of a test module that drives Chromium (skipped where it is not installed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # software WebGL for the deck.gl map
]

#: pytestmark of a module that drives the browser
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium); `make browser` installs it",
    ),
]

#: the bundled map component's iframe
MAP = "iframe[title*='clay_search_map']"

#: How long to wait for anything the app renders (a loaded machine is slow, never wrong).
WAIT_MS = 90_000

#: seconds the server may take to answer its health check (a loaded machine is slow)
START_S = 90


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts(repo_root: Path) -> Path:
    """The screenshots folder: $CLAY_SEARCH_ARTIFACTS or test-artifacts/ (created)."""
    out = Path(os.environ.get("CLAY_SEARCH_ARTIFACTS") or repo_root / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def app_server(store: Path, log_dir: Path, *, weights: Path | None = None) -> Iterator[str]:
    """`clay-search app --store STORE` on 127.0.0.1:<free port>; yields its URL once its health
    check answers; the server's process group is always stopped (SIGTERM, then SIGKILL)."""
    port = free_port()
    log = log_dir / "server.log"
    cmd = [sys.executable, "-m", "clay_search.cli.main", "app", "--store", str(store)]
    if weights is not None:
        cmd += ["--weights", str(weights)]
    cmd += ["--port", str(port)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
