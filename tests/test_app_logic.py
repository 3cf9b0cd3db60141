"""App logic without a server: labels state, map layers, filters, store path resolution."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely

from clay_search.app import layers
from clay_search.app import state as S
from clay_search.app.filters import Filters, check_bbox, parse_area
from clay_search.app.store_access import open_store, store_uri
from clay_search.errors import QueryError


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
    with pytest.raises(ValueError):
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
    deck = json.loads(layers.build_deck(frame).to_json())
    ids = [lay["id"] for lay in deck["layers"]]
    assert ids == [layers.GRID_LAYER_ID, layers.LAYER_ID]
    assert deck.get("mapProvider") is None and deck["mapStyle"] == layers.NO_BASEMAP_STYLE
    assert 6 < deck["initialViewState"]["zoom"] < 9


def test_score_colours_edge_cases() -> None:
    assert layers.score_colors(np.array([])) == []
    same = layers.score_colors(np.array([0.5, 0.5]))
    assert same[0] == same[1]
    nan = layers.score_colors(np.array([np.nan, 1.0, 0.0]))
    assert len(nan) == 3 and nan[0] == nan[2]


def test_picked_chip_from_selection() -> None:
    sel = {"selection": {"indices": {"chips": [0]}, "objects": {"chips": [{"chip_id": "x1"}]}}}
    assert layers.picked_chip(sel) == "x1"
    assert layers.picked_chip({"selection": {"indices": {}, "objects": {}}}) is None
    assert layers.picked_chip(None) is None


def test_filters_kwargs_and_area_parsing() -> None:
    assert Filters().kwargs() == {} and Filters().describe() == "no filters"
    f = Filters(sensor=("sentinel-2-l2a",), bbox=check_bbox(1, 2, 3, 4))
    assert f.kwargs() == {"sensor": ["sentinel-2-l2a"], "bbox": (1.0, 2.0, 3.0, 4.0)}
    with pytest.raises(QueryError, match="empty"):
        check_bbox(3, 2, 1, 4)
    with pytest.raises(QueryError, match="outside"):
        check_bbox(0, 0, 200, 4)
    g = parse_area("POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))")
    assert g.area == 1
    gj = (
        '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
        "[[[0,0],[2,0],[2,2],[0,0]]]}}"
    )
    assert parse_area(gj).area == 2
    for bad in ("", "POINT(0 0)", "POLYGON((", '{"type": "Nope"}'):
        with pytest.raises(QueryError):
            parse_area(bad)


def test_store_uri_and_missing_store(tmp_path) -> None:
    assert store_uri(["--store", "/a"], {}) == "/a"
    assert store_uri(["--store=/b"], {"CLAY_SEARCH_STORE": "/c"}) == "/b"
    assert store_uri([], {"CLAY_SEARCH_STORE": "/c"}) == "/c"
    assert store_uri([], {}) is None
    opened = open_store(str(tmp_path / "nothing"))
    assert (
        opened.store is None and opened.kind == "missing" and "no clay-search store" in opened.error
    )
