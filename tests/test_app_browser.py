"""End to end: the real `clay-search app` server on loopback, driven by Debian's Chromium.

Loads the page, draws a box and reads the view on the map (the bundled map component, offline),
picks a chip in the gallery, searches, checks that every result card shows its own chip's
thumbnail, checks the GeoJSON download, marks a chip by clicking it on the map, and saves
screenshots under test-artifacts/ (or $CLAY_SEARCH_ARTIFACTS).

No step depends on the machine's speed: the test waits for the app's own signals (the map sets
``data-ready`` on its page once deck.gl has drawn; texts the app writes when a run is done) with
generous timeouts, and the assertions stay strict.
"""

from __future__ import annotations

import io
import json
import re
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

pytestmark = BROWSER_MARKS


ALL_CHIPS = "Browsing 30 chips (of 30). Mark positives, then Search."


@pytest.fixture(scope="module")
def store_path(sample_store: Path) -> Path:
    """The sample store the server serves (3 fragments)."""
    return sample_store


@pytest.fixture(scope="module")
def server(store_path: Path, nano_weights: Path, tmp_path_factory) -> Iterator[str]:
    """`clay-search app` on 127.0.0.1:<free port> for the sample store; always stopped."""
    with app_server(store_path, tmp_path_factory.mktemp("server"), weights=nano_weights) as url:
        yield url


def _thumbnails_in_table(store: Path) -> dict[str, bytes]:
    """chip id -> thumbnail, read from the LanceDB table itself (not through the Store)."""
    import lancedb

    t = lancedb.connect(str(store / "lancedb")).open_table("chips")
    data = t.search().select(["chip_id", "thumbnail"]).limit(None).to_arrow()
    return dict(zip(data["chip_id"].to_pylist(), data["thumbnail"].to_pylist(), strict=True))


def _pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _map_ready(page, chips: int) -> None:
    """Wait until the map has drawn ``chips`` chips (its own signal, set after deck.gl draws)."""
    from playwright.sync_api import expect

    body = page.frame_locator(MAP).locator("body")
    expect(body).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
    expect(body).to_have_attribute("data-chips", str(chips), timeout=WAIT_MS)


def _map_box(page) -> dict:
    """The deck.gl canvas's box on the page (the map's drawing area), once the layout has
    settled: an expander opening above the map (or a rerun) moves it, and a drag measured
    before that lands beside the map. Polls until three readings 0.2 s apart agree."""
    canvas = page.frame_locator(MAP).locator("#map canvas").first
    last, same = None, 0
    for _ in range(300):  # at most about a minute; the page normally settles in < 1 s
        box = canvas.bounding_box()
        assert box is not None
        key = tuple(round(box[k]) for k in ("x", "y", "width", "height"))
        same = same + 1 if key == last else 0
        if same >= 2:
            return box
        last = key
        page.wait_for_timeout(200)
    raise AssertionError(f"the map kept moving on the page (last box {last})")


def _mode(page, name: str):
    """Click a map toolbar mode button and wait until the component says it is on."""
    from playwright.sync_api import expect

    button = page.frame_locator(MAP).get_by_role("button", name=name, exact=True)
    on = re.compile(r"\bon\b")
    # A click while the page still moves (an expander just opened above the map) can land beside
    # the button: CI once clicked "Box" and waited 90 s for a mode that never came. Click once
    # the layout has settled, and again (choosing a mode twice is the same as once) if the
    # button did not take it.
    for _ in range(3):
        _map_box(page)
        button.click()
        try:
            expect(button).to_have_class(on, timeout=10_000)
            return
        except AssertionError:
            continue
    expect(button).to_have_class(on)


def test_draw_view_pick_search_export_and_map_click(
    server: str, store_path: Path, repo_root: Path
) -> None:
    import numpy as np
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    out = artifacts(repo_root)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            expect(page.get_by_text("Browsing 30 chips")).to_be_visible()
            _map_ready(page, 30)
            body = page.frame_locator(MAP).locator("body")
            expect(body).to_have_attribute("data-overviews", "30")  # imagery, offline
            expect(page.locator("[data-testid='stImage'] img")).to_have_count(24)
            page.screenshot(path=str(out / "app_browse.png"), full_page=True)

            # the upload box states the app's own limit (Streamlit's default says 200MB)
            page.get_by_text("Query by upload").click()
            expect(page.get_by_text("5MB per file • TIF, PNG")).to_be_visible()
            expect(page.get_by_text("200MB")).to_have_count(0)

            # draw a box over the left half of the map: the area filter follows it
            _mode(page, "Box")
            m = _map_box(page)
            page.mouse.move(m["x"] + 5, m["y"] + 5)
            page.mouse.down()
            page.mouse.move(m["x"] + m["width"] * 0.3, m["y"] + m["height"] * 0.5, steps=5)
            page.mouse.move(m["x"] + m["width"] * 0.5, m["y"] + m["height"] - 5, steps=5)
            page.mouse.up()
            expect(page.get_by_text("The shape drawn on the map.")).to_be_visible()
            browsing = page.get_by_text("Browsing ")
            expect(browsing).not_to_have_text(ALL_CHIPS)
            n_box = int(browsing.inner_text().split()[1])
            assert 0 < n_box < 30
            _map_ready(page, n_box)
            page.screenshot(path=str(out / "app_drawn_box.png"), full_page=True)
            page.frame_locator(MAP).get_by_role("button", name="Clear drawing").click()
            expect(page.get_by_text("Browsing 30 chips")).to_be_visible()

            # zoom in and send the view: fewer chips than the whole store
            _map_ready(page, 30)
            _mode(page, "Pick")
            m = _map_box(page)
            page.mouse.move(m["x"] + m["width"] * 0.25, m["y"] + m["height"] * 0.5)
            for _ in range(3):
                page.mouse.wheel(0, -300)
                time.sleep(0.3)  # wheel events, not a wait for rendering
            page.frame_locator(MAP).get_by_role("button", name="Use view").click()
            expect(page.get_by_text("The map's view:")).to_be_visible()
            expect(browsing).not_to_have_text(ALL_CHIPS)
            page.get_by_text("Anywhere", exact=True).click()
            expect(page.get_by_text("Browsing 30 chips")).to_be_visible()

            # pick: the first gallery card as positive
            page.get_by_role("button", name="Pos", exact=True).first.click()
            expect(page.get_by_text("Labels: 1 positive, 0 negative")).to_be_visible()

            # search
            t0 = time.perf_counter()
            page.get_by_role("button", name="Search", exact=True).click()
            expect(page.get_by_text("29 results (search: 1 positive")).to_be_visible()
            expect(page.get_by_text("score 0.").first).to_be_visible()
            seconds = time.perf_counter() - t0
            print(f"search -> rendered results: {seconds:.2f} s (30-chip sample store)")

            # every result card shows its own chip's thumbnail (as the table holds it)
            thumbs = _thumbnails_in_table(store_path)
            cards = page.locator("[class*='st-key-card-results-']")
            expect(cards).to_have_count(24)
            checked = 0
            for i in range(cards.count()):
                card = cards.nth(i)
                key = next(c for c in card.get_attribute("class").split() if "card-results-" in c)
                chip_id = key.removeprefix("st-key-card-results-")
                img = card.locator("[data-testid='stImage'] img")
                expect(img).to_have_count(1)
                src = img.get_attribute("src")
                got = page.request.get(src if src.startswith("http") else server + src).body()
                shown = [c for c, t in thumbs.items() if np.array_equal(_pixels(got), _pixels(t))]
                assert shown == [chip_id], f"the card of {chip_id} shows the thumbnail of {shown}"
                checked += 1
            assert checked == 24
            _map_ready(page, 30)  # 29 results + the positive example
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
            expect(page.get_by_text("1 results (search")).to_be_visible()
            page.get_by_text("Mark negative").click()
            _map_ready(page, 2)  # the result + the positive example (outline)
            m = _map_box(page)
            page.mouse.click(m["x"] + m["width"] / 2, m["y"] + m["height"] / 2)
            expect(page.get_by_text("Labels: 1 positive, 1 negative")).to_be_visible()
            expect(page.get_by_text("Picked on the map")).to_be_visible()
            page.screenshot(path=str(out / "app_map_click.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
