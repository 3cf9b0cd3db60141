"""End to end: the real `clay-search app` server on loopback, driven by Debian's Chromium.

Loads the page, picks a chip in the gallery, searches, checks the results and the GeoJSON
download, marks a chip by clicking it on the map, and saves screenshots under test-artifacts/
(or $CLAY_SEARCH_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium); `make browser` installs it",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts(repo_root: Path) -> Path:
    out = Path(os.environ.get("CLAY_SEARCH_ARTIFACTS") or repo_root / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def server(sample_store: Path, nano_weights: Path, tmp_path_factory) -> Iterator[str]:
    """`clay-search app` on 127.0.0.1:<free port> for the sample store; always stopped."""
    store, weights = sample_store, nano_weights
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "clay_search.cli.main", "app", "--store", str(store),
           "--weights", str(weights), "--port", str(port)]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
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


def test_pick_search_export_and_map_click(server: str, repo_root: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    out = _artifacts(repo_root)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            expect(page.get_by_text("Browsing 30 chips")).to_be_visible(timeout=60_000)
            expect(page.locator("[data-testid='stDeckGlJsonChart'] canvas").first).to_be_visible()
            expect(page.locator("[data-testid='stImage'] img")).to_have_count(24)

            # pick: the first gallery card as positive
            page.get_by_role("button", name="Pos", exact=True).first.click()
            expect(page.get_by_text("Labels: 1 positive, 0 negative")).to_be_visible()

            # search
            t0 = time.perf_counter()
            page.get_by_role("button", name="Search", exact=True).click()
            expect(page.get_by_text("29 results (search: 1 positive")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("score 0.").first).to_be_visible()
            seconds = time.perf_counter() - t0
            print(f"search -> rendered results: {seconds:.2f} s (30-chip sample store)")
            time.sleep(1.5)  # let deck.gl draw before the screenshot
            page.screenshot(path=str(out / "app_search_results.png"), full_page=True)

            # export: the GeoJSON download holds the results
            with page.expect_download() as dl:
                page.get_by_role("button", name="Download GeoJSON").click()
            path = out / "app_results.geojson"
            dl.value.save_as(path)
            features = json.loads(path.read_text())["features"]
            assert len(features) == 29 and features[0]["properties"]["rank"] == 1

            # map click: one result fills the map; clicking its centre marks it negative
            slider = page.get_by_role("slider")
            slider.focus()
            page.keyboard.press("Home")
            expect(slider).to_have_value("1")
            page.get_by_role("button", name="Search", exact=True).click()
            expect(page.get_by_text("1 results (search")).to_be_visible(timeout=30_000)
            page.get_by_text("Mark negative").click()
            time.sleep(1.5)
            canvas = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
            box = canvas.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            expect(page.get_by_text("Labels: 1 positive, 1 negative")).to_be_visible(timeout=20_000)
            expect(page.get_by_text("Picked on the map")).to_be_visible()
            page.screenshot(path=str(out / "app_map_click.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
