"""End to end: the Changes view of the real `clay-search app` server in Debian's Chromium.

The store is the seeded NAIP series with a planted construction (tests/change_fixtures.py).
Switches to the Changes view, finds changes with the default periods, opens the top pair's
timeline, likes it and asks for more changes like it, downloads the GeoJSON. Screenshots go
to test-artifacts/ (or $CLAY_SEARCH_ARTIFACTS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_server import (
    BROWSER_MARKS,
    CHROMIUM,
    CHROMIUM_ARGS,
    MAP,
    WAIT_MS,
    app_server,
    artifacts,
)
from change_fixtures import CHIP, make_series

import clay_search

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def series_store(sample_dir: Path, tmp_path_factory) -> Path:
    from clay_search.ingest import run

    root = tmp_path_factory.mktemp("browser_changes")
    files = make_series(root / "tifs", sample_dir)
    run([str(f) for f in files], root / "store", chip_size=CHIP, workers=0)
    return root / "store"


@pytest.fixture(scope="module")
def server(series_store: Path, tmp_path_factory) -> Iterator[str]:
    """`clay-search app` for the series store (bundled weights); always stopped."""
    with app_server(series_store, tmp_path_factory.mktemp("server")) as url:
        yield url


def test_changes_view_in_the_browser(server: str, series_store: Path, repo_root: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    out = artifacts(repo_root)
    store = clay_search.connect(series_store)
    # the view's default periods: the first year of the store and its last year
    expect_df = store.changes(
        ("2010-06-15", "2010-12-31"), ("2020-01-01", "2020-06-15"), k=200
    ).to_pandas()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1600}, accept_downloads=True)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            expect(page.get_by_text("Browsing 80 chips")).to_be_visible(timeout=WAIT_MS)
            # the first deck.gl draw (software WebGL) can hold the page's main thread a while
            page.get_by_text("Changes", exact=True).click(timeout=120_000)
            expect(page.get_by_text("Pick two periods and press Find changes")).to_be_visible(
                timeout=WAIT_MS
            )
            page.get_by_role("button", name="Find changes").click()
            expect(page.get_by_text("16 pairs (largest changes (cosine)")).to_be_visible(
                timeout=WAIT_MS
            )
            body = page.frame_locator(MAP).locator("body")  # the map component
            expect(body).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
            expect(body).to_have_attribute("data-chips", "16", timeout=WAIT_MS)
            top = expect_df.iloc[0]
            expect(page.get_by_text(f"#1 | {top.change:.3f}")).to_be_visible()
            time.sleep(4)
            page.screenshot(path=str(out / "app_changes.png"), full_page=True)
            page.locator(MAP).first.screenshot(path=str(out / "app_changes_map.png"))
            expect(page.locator("[data-testid='stImage'] img")).to_have_count(24)  # 12 pairs

            page.get_by_role("button", name="Timeline").first.click()
            expect(page.get_by_text("Timeline of place")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("2020-06-15 d=")).to_be_visible(timeout=WAIT_MS)

            page.get_by_role("button", name="Like", exact=True).first.click()
            expect(page.get_by_text("1 liked, 0 unliked")).to_be_visible(timeout=WAIT_MS)
            page.get_by_role("button", name="More like these").click()
            expect(page.get_by_text("15 pairs (changes like 1 pair(s)")).to_be_visible(
                timeout=WAIT_MS
            )
            page.screenshot(path=str(out / "app_changes_like.png"), full_page=True)

            with page.expect_download() as dl:
                page.get_by_role("button", name="Download GeoJSON").click()
            path = out / "app_changes.geojson"
            dl.value.save_as(path)
            feats = json.loads(path.read_text())["features"]
            assert len(feats) == 15 and top.place_id not in {
                f["properties"]["place_id"] for f in feats
            }
        finally:
            browser.close()
    assert not errors, errors
