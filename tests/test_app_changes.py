"""The app's Changes view driven with AppTest over a real store (the seeded NAIP series)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from change_fixtures import CHIP, make_series
from streamlit.testing.v1 import AppTest

import clay_search
from clay_search.app.changes_view import LIKE, UNLIKE, default_periods, toggle

SCRIPT = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
BEFORE = (date(2010, 1, 1), date(2012, 12, 31))
AFTER = (date(2019, 1, 1), date(2020, 12, 31))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, sample_dir) -> Path:
    from clay_search.ingest import run

    root = tmp_path_factory.mktemp("app_changes")
    files = make_series(root / "tifs", sample_dir)
    run([str(f) for f in files], root / "store", chip_size=CHIP, workers=0)
    return root / "store"


def _open_view(store_path: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(store_path))
    at = AppTest.from_file(str(SCRIPT), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.sidebar.radio(key="view").set_value("Changes").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_changes_view_finds_the_planted_change(store_path, monkeypatch):
    at = _open_view(store_path, monkeypatch)
    at.date_input(key="chg-before").set_value(BEFORE)
    at.date_input(key="chg-after").set_value(AFTER).run()
    at.button(key="chg-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    expect = clay_search.connect(store_path).changes(BEFORE, AFTER, k=200).to_pandas()
    top = expect.place_id.iloc[0]
    # the map (the Search view's component) is coloured by change: one polygon per pair
    maps = at.get("component_instance")
    assert len(maps) == 1
    args = json.loads(maps[0].proto.json_args)
    assert len(args["chips"]) == len(expect) == 16
    by_id = {c["chip_id"]: c for c in args["chips"]}
    hi, lo = by_id[expect.chip_id_after.iloc[0]], by_id[expect.chip_id_after.iloc[-1]]
    assert hi["fill"] != lo["fill"] and f"{expect.change.iloc[0]:.3f}" in hi["tip"]
    assert {t["chip_id"] for t in args["thumbnails"]} == set(expect.chip_id_after)
    # the gallery: one card per pair with both thumbnails, in rank order
    cards = _cards(at)
    assert cards == expect.place_id.tolist()[:12] and cards[0] == top
    # timeline of the top pair: five dates
    at.button(key=f"chg-tl-{top}").click().run()
    assert any("Timeline of place" in m.value for m in at.markdown)
    assert any("2020-06-15" in c.value for c in at.caption)
    # more changes like it (and unlike the second)
    at.button(key=f"chg-like-{top}").click().run()
    at.button(key=f"chg-unlike-{cards[1]}").click().run()
    at.button(key="chg-more").click().run()
    assert not at.exception, [e.value for e in at.exception]
    more = (
        clay_search.connect(store_path)
        .change_search([top], [cards[1]], before=BEFORE, after=AFTER, k=200)
        .to_pandas()
    )
    got = _cards(at)
    assert got == more.place_id.tolist()[:12] and top not in got
    assert any(b.label.startswith("Download GeoJSON") for b in at.get("download_button"))


def _cards(at: AppTest) -> list[str]:
    """Place ids of the gallery cards in rank order (cards fill 4 columns row by row; the
    element tree lists them column by column)."""
    from clay_search.app.changes_view import COLUMNS

    keys = [b.key.removeprefix("chg-like-") for b in at.button if b.key.startswith("chg-like-")]
    n = len(keys)
    per_col = [(n - c + COLUMNS - 1) // COLUMNS for c in range(COLUMNS)]
    cols, i = [], 0
    for m in per_col:
        cols.append(keys[i : i + m])
        i += m
    return [cols[j % COLUMNS][j // COLUMNS] for j in range(n)]


def test_changes_view_bad_periods_and_more_without_likes(store_path, monkeypatch):
    at = _open_view(store_path, monkeypatch)
    at.date_input(key="chg-before").set_value(AFTER)
    at.date_input(key="chg-after").set_value(BEFORE).run()
    at.button(key="chg-run").click().run()
    assert not at.exception
    assert any("swap" in e.value for e in at.error)
    at.button(key="chg-more").click().run()
    assert any("Like first" in w.value for w in at.warning)


def test_view_helpers():
    (b0, b1), (a0, a1) = default_periods(
        {"time_range": ["2009-08-18T00:00:00", "2020-08-31T00:00:00"]}
    )
    assert (b0, b1, a0, a1) == (
        date(2009, 8, 18),
        date(2009, 12, 31),
        date(2020, 1, 1),
        date(2020, 8, 31),
    )
    ss: dict = {}
    toggle(ss, LIKE, "p1")
    toggle(ss, UNLIKE, "p1")
    assert ss[LIKE] == [] and ss[UNLIKE] == ["p1"]
    toggle(ss, UNLIKE, "p1")
    assert ss[UNLIKE] == []
