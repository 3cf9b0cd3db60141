"""App logic without a server: labels state, map layers, filters, store path resolution."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely

from clay_search.app import layers
from clay_search.app import state as S
from clay_search.app.map_component import MapEvent, map_args
from clay_search.app.query import date_effect
from clay_search.app.store_access import open_store, store_uri
from clay_search.errors import QueryError
from clay_search.filters import Filters


def test_labels_toggle_and_export() -> None:
    ss: dict = {}
    S.init_state(ss)
    assert S.toggle_label(ss, "a", S.POSITIVE) == S.POSITIVE
    assert S.toggle_label(ss, "b", S.NEGATIVE) == S.NEGATIVE
    assert S.toggle_label(ss, "c", S.POSITIVE) == S.POSITIVE
    assert S.toggle_label(ss, "c", S.POSITIVE) is None  # second click clears
    assert S.toggle_label(ss, "b", S.POSITIVE) == S.POSITIVE  # switch sides
    assert S.positives(ss) == ["a", "b"] and S.negatives(ss) == []
    S.set_label(ss, "d", S.NEGATIVE)
    S.record_round(ss, "search", 10, 0.1234)
    doc = json.loads(S.labels_json(ss, "/store", 3))
    assert doc["positives"] == ["a", "b"] and doc["negatives"] == ["d"]
    assert doc["table_version"] == 3 and doc["rounds"][0]["positives"] == 2
    assert S.parse_labels_json(S.labels_json(ss)) == {"a": 1, "b": 1, "d": -1}
    assert S.labels_csv(ss).decode().splitlines() == [
        "chip_id,label",
        "a,positive",
        "b,positive",
        "d,negative",
    ]
    with pytest.raises(ValueError, match="a label is"):
        S.set_label(ss, "e", 2)
    with pytest.raises(ValueError, match="labels file"):
        S.parse_labels_json(b"[1, 2")
    S.clear_labels(ss)
    assert S.labels(ss) == {}


def _frame() -> pd.DataFrame:
    quad = shapely.Polygon([(10.0, 50.0), (10.01, 50.0), (10.011, 50.01), (10.001, 50.01)])
    return pd.DataFrame(
        {
            "chip_id": ["a", "b", "c"],
            "geometry": [shapely.to_wkb(quad), None, None],
            "minx": [10.0, 11.0, np.nan],
            "miny": [50.0, 51.0, np.nan],
            "maxx": [10.011, 11.5, np.nan],
            "maxy": [50.01, 51.5, np.nan],
            "score": [0.9, 0.1, 0.5],
            "label": ["River", None, "Forest"],
        }
    )


def test_footprints_colours_and_outlines() -> None:
    frame = layers.footprint_frame(_frame(), {"a": S.POSITIVE, "b": S.NEGATIVE})
    assert list(frame["chip_id"]) == ["a", "b"]  # c has no footprint
    ring_a = frame["polygon"].iloc[0]
    assert len(ring_a) == 5 and [10.011, 50.01] in ring_a  # the WKB quad, not its bbox
    assert frame["polygon"].iloc[1][2] == [11.5, 51.5]  # from bounds
    assert frame["line"].iloc[0][:3] == [0, 200, 83] and frame["line"].iloc[1][:3] == [229, 57, 53]
    hi, lo = frame["fill"].iloc[0], frame["fill"].iloc[1]
    assert hi != lo and hi[0] > lo[0]  # top of the ramp is yellow, bottom purple
    assert "score 0.900" in frame["tip"].iloc[0] and "River" in frame["tip"].iloc[0]
    w, s, e, n = layers.extent(frame)
    assert (w, s, e, n) == (10.0, 50.0, 11.5, 51.5)
    # over imagery: browsing fills nothing, scores fill half-transparent
    over = layers.footprint_frame(_frame(), {}, imagery=True)
    assert over["fill"].iloc[0][3] == 110
    browse = layers.footprint_frame(_frame().drop(columns=["score"]), {}, imagery=True)
    assert {f[3] for f in browse["fill"]} == {0}
    grid = layers.grid_paths((w, s, e, n))
    assert all(-180 <= x <= 180 and -85 <= y <= 85 for line in grid for x, y in line)
    assert any(line[0][0] == line[1][0] == 10.0 for line in grid)  # a meridian at 10 degrees
    args = map_args(frame, bounds=(w, s, e, n), fit_key="k", grid=grid)
    assert json.loads(json.dumps(args))["chips"][0]["chip_id"] == "a"  # JSON-able
    assert args["bounds"] == [10.0, 50.0, 11.5, 51.5] and args["drawn"] is None


def test_score_colours_edge_cases() -> None:
    assert layers.score_colors(np.array([])) == []
    same = layers.score_colors(np.array([0.5, 0.5]))
    assert same[0] == same[1]
    nan = layers.score_colors(np.array([np.nan, 1.0, 0.0]))
    assert len(nan) == 3 and nan[0] == nan[2]


def test_map_events_from_the_component() -> None:
    click = MapEvent.parse({"event": "click", "chip_id": "x1", "seq": 3, "nonce": "n"})
    assert click.kind == "click" and click.chip_id == "x1" and click.key == ("n", 3)
    ring = [[0, 0], [1, 0], [1, 1], [0, 0]]
    draw = MapEvent.parse({"event": "draw", "geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert draw.geometry["type"] == "Polygon"
    view = MapEvent.parse({"event": "view", "bounds": [1, 2, 3, 4], "seq": 1})
    assert view.bounds == (1.0, 2.0, 3.0, 4.0)
    for bad in (None, {}, {"event": "view", "bounds": [1, 2]}, {"event": "click"}, {"event": 1}):
        assert MapEvent.parse(bad) is None


def test_map_events_label_filter_and_clear() -> None:
    from clay_search.app.streamlit_app import MAP_KEY, handle_map_event

    ss: dict = {"click-action": "Mark negative"}
    S.init_state(ss)
    ss[MAP_KEY] = {"event": "click", "chip_id": "c1", "seq": 1, "nonce": "a"}
    handle_map_event(ss)
    assert S.labels(ss) == {"c1": S.NEGATIVE} and ss[S.PICKED] == "c1"
    S.clear_labels(ss)
    handle_map_event(ss)  # the same event again (a rerun): nothing happens
    assert S.labels(ss) == {}
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    ss[MAP_KEY] = {"event": "draw", "geometry": poly, "seq": 2, "nonce": "a"}
    handle_map_event(ss)
    assert ss[S.DRAWN] == poly and ss["f-area"] == "Drawn on the map"
    ss[MAP_KEY] = {"event": "view", "bounds": [1, 2, 3, 4], "seq": 1, "nonce": "b"}  # reloaded
    handle_map_event(ss)
    assert ss[S.VIEW] == (1.0, 2.0, 3.0, 4.0) and ss["f-area"] == "Map view"
    ss["f-area"] = "Drawn on the map"
    ss[MAP_KEY] = {"event": "clear", "seq": 2, "nonce": "b"}
    handle_map_event(ss)
    assert ss[S.DRAWN] is None and ss["f-area"] == "Anywhere"


def test_changes_map_click_opens_the_timeline() -> None:
    from clay_search.app import changes_view as cv

    ss: dict = {}
    ss[cv.MAP_KEY] = {"event": "click", "chip_id": "after1", "seq": 1, "nonce": "a"}
    cv.handle_map_event(ss)
    assert ss[cv.PLACE] == "after1"
    ss[cv.PLACE] = "p2"  # a Timeline button later; the same event on a rerun changes nothing
    cv.handle_map_event(ss)
    assert ss[cv.PLACE] == "p2"
    ss[cv.MAP_KEY] = {"event": "view", "bounds": [1, 2, 3, 4], "seq": 2, "nonce": "a"}
    cv.handle_map_event(ss)
    assert ss[cv.PLACE] == "p2"


def test_app_filters_are_the_core_filters() -> None:
    """One filter object: the app builds clay_search.filters.Filters, with the core's rules."""
    import inspect

    from clay_search.app import sidebar

    assert "Filters(" in inspect.getsource(sidebar.render_filters)
    f = Filters(sensor="sentinel-2-l2a", bbox=(1, 2, 3, 4), start="2019-01-01")
    assert f.describe() == "2019-01-01.., sensor=sentinel-2-l2a, bbox=1,2,3,4"
    # the core's bbox rule: a one-point-wide box is allowed, west > east is not
    assert Filters(bbox=(1, 2, 1, 4)).bbox == (1.0, 2.0, 1.0, 4.0)
    with pytest.raises(QueryError, match="antimeridian"):
        Filters(bbox=(3, 2, 1, 4))
    for bad in ("POLYGON((", '{"type": "Nope"}'):
        with pytest.raises(QueryError):
            Filters(geometry=bad)


class _Chips:
    """A stand-in for ``Store.count`` over plain rows, counted by the real FilterEngine."""

    def __init__(self, table) -> None:
        from clay_search.filters import FilterEngine

        self.engine = FilterEngine(table)

    def count(self, filters: Filters) -> dict:
        return self.engine.explain(filters)


def test_date_effect_counts_undated_and_outside() -> None:
    import datetime as dt

    import pyarrow as pa

    times = [None, None, None, dt.datetime(2018, 5, 1), dt.datetime(2019, 5, 1), None]
    table = pa.table(
        {
            "minx": [0.0] * 6,
            "miny": [0.0] * 6,
            "maxx": [1.0] * 6,
            "maxy": [1.0] * 6,
            "datetime": pa.array(times, pa.timestamp("us", tz="UTC")),
            "sensor": ["s2"] * 5 + ["l8"],
            "label": [None] * 6,
            "geometry": pa.array([None] * 6, pa.binary()),
        }
    )
    store = _Chips(table)
    assert date_effect(store, Filters(sensor="s2")) is None  # no date range: nothing said
    eff = date_effect(store, Filters(start="2019-01-01", end="2019-12-31", sensor="s2"))
    assert (eff.before, eff.after, eff.undated, eff.outside) == (5, 1, 3, 1)
    assert eff.removed == 4
    assert eff.message() == (
        "The date filter removed 4 of 5 chips: 3 have no acquisition date and 1 are outside "
        "the date range."
    )
    keep = Filters(start="2019-01-01", end="2019-12-31", sensor="s2", undated=True)
    kept = date_effect(store, keep)
    assert (kept.after, kept.undated, kept.outside, kept.removed) == (4, 0, 1, 1)


def test_store_uri_and_missing_store(tmp_path) -> None:
    assert store_uri(["--store", "/a"], {}) == "/a"
    assert store_uri(["--store=/b"], {"CLAY_SEARCH_STORE": "/c"}) == "/b"
    assert store_uri([], {"CLAY_SEARCH_STORE": "/c"}) == "/c"
    assert store_uri([], {}) is None
    opened = open_store(str(tmp_path / "nothing"))
    assert (
        opened.store is None and opened.kind == "missing" and "no clay-search store" in opened.error
    )


def test_card_caption_shows_date_and_sensor() -> None:
    from clay_search.app.gallery import card_caption

    row = pd.Series(
        {
            "chip_id": "0123456789abcdef",
            "rank": 2,
            "score": 0.5,
            "label": "River",
            "datetime": pd.Timestamp("2019-06-03T10:00:00Z"),
            "sensor": "sentinel-2-l2a",
        }
    )
    assert card_caption(row, S.POSITIVE) == (
        "#2 | score 0.500 | River | POSITIVE | 0123456789  \n2019-06-03 | sentinel-2-l2a"
    )
    undated = row.drop(["rank", "score"]).copy()
    undated["datetime"] = pd.NaT
    assert card_caption(undated, None).endswith("0123456789  \nundated | sentinel-2-l2a")
