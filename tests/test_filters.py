"""Spatial/time/attribute filters, checked against a plain shapely computation (on the sample
store the repository ships)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import shapely

import clay_search
from clay_search.errors import QueryError
from clay_search.filters import Filters


@pytest.fixture(scope="module")
def store(sample_store):
    return clay_search.connect(sample_store)


def _truth(store, geom=None, start=None, end=None, label=None):
    t = store.attrs.to_pylist()
    out = []
    for row in t:
        if geom is not None and (
            row["geometry"] is None or not shapely.from_wkb(row["geometry"]).intersects(geom)
        ):
            continue
        if start is not None and (row["datetime"] is None or row["datetime"] < start):
            continue
        if end is not None and (row["datetime"] is None or row["datetime"] > end):
            continue
        if label is not None and row["label"] != label:
            continue
        out.append(row["chip_id"])
    return set(out)


def _several_bboxes(store):
    eng = store.engine
    rng = np.random.default_rng(0)
    for i in rng.choice(len(store), 6, replace=False):
        cx, cy = (eng.minx[i] + eng.maxx[i]) / 2, (eng.miny[i] + eng.maxy[i]) / 2
        for half in (0.002, 0.01, 2.0):  # smaller than a chip, about a chip, a region
            yield (cx - half, cy - half * 0.7, cx + half, cy + half * 0.7)


def test_bbox_matches_shapely(store):
    for bbox in _several_bboxes(store):
        got = set(store.chips(bbox=bbox).chip_ids)
        assert got == _truth(store, shapely.box(*bbox)), bbox
        assert got  # each box is centred on a chip


def test_polygon_and_time_and_label(store):
    eng = store.engine
    i = int(np.argmax(eng.maxy))
    cx, cy = (eng.minx[i] + eng.maxx[i]) / 2, (eng.miny[i] + eng.maxy[i]) / 2
    tri = shapely.Polygon([(cx - 3, cy - 3), (cx + 3, cy - 3), (cx, cy + 0.001)])
    start, end = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC)
    got = set(store.chips(geometry=tri, start="2019-01-01", end="2020-12-31").chip_ids)
    assert got == _truth(store, tri, start, end)
    got_geojson = set(store.chips(geometry=shapely.geometry.mapping(tri)).chip_ids)
    assert got_geojson == _truth(store, tri)
    collection = {  # a FeatureCollection (as drawn on a map) is the union of its features
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": shapely.geometry.mapping(tri),
                      "properties": {}}],
    }  # fmt: skip
    assert set(store.chips(geometry=collection).chip_ids) == _truth(store, tri)
    assert set(store.chips(label="River").chip_ids) == _truth(store, label="River")
    assert store.chips(sensor="landsat-c2l1").chip_ids == []


def test_filtered_search_is_exact_within_filter(store):
    vecs = store.vectors
    ids = np.array(store.attrs.column("chip_id").to_pylist())
    for bbox in list(_several_bboxes(store))[2::3]:
        allowed = _truth(store, shapely.box(*bbox), start=datetime(2018, 6, 1, tzinfo=UTC))
        q = ids[0]
        res = store.search([q], k=10, bbox=bbox, start="2018-06-01")
        mask = np.isin(ids, sorted(allowed - {q}))
        scores = vecs[mask] @ vecs[0]
        expect = ids[mask][np.argsort(-scores, kind="stable")][:10]
        assert res.chip_ids == list(expect)  # recall 1.0 and the same order
        assert res.meta["index"] == "exact-in-filter"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bbox": (10, 50, 5, 60)}, "antimeridian"),
        ({"bbox": (0, 0, 200, 10)}, "longitudes"),
        ({"bbox": (0, -95, 10, 10)}, "latitudes"),
        ({"bbox": (0, 1, 2)}, "four numbers"),
        ({"start": "2021-01-01", "end": "2020-01-01"}, "after end"),
        ({"start": "yesterday"}, "ISO 8601"),
        ({"geometry": "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))"}, "invalid"),
        ({"geometry": "not a geometry"}, "could not read"),
        ({"geometry": {"type": "Polygon", "coordinates": []}}, "empty|could not"),
        ({"bbox": (0, 0, 1, 1), "geometry": "POLYGON ((5 5, 6 5, 6 6, 5 5))"}, "do not overlap"),
        ({"sensor": 3}, "sensor must be"),
        ({"min_pred_score": "high"}, "min_pred_score must be a number"),
        ({"undated": "yes"}, "undated must be"),
    ],
)
def test_bad_filters(kwargs, match):
    with pytest.raises(QueryError, match=match):
        Filters(**kwargs)


def _copy(sample_store, dest):
    import shutil

    from clay_search.store import open_chips_table, read_store_info

    shutil.copytree(sample_store, dest)
    return open_chips_table(read_store_info(dest))


def test_null_geometry_is_excluded_by_spatial_filters(tmp_path, sample_store):
    import pyarrow as pa

    from clay_search.store import sync_index

    table = _copy(sample_store, tmp_path / "copy")
    row = table.search().limit(1).to_arrow()
    row = row.set_column(0, "chip_id", pa.array(["no-footprint"]))
    for col in ("geometry", "minx", "miny", "maxx", "maxy"):
        i = row.schema.get_field_index(col)
        row = row.set_column(i, col, pa.nulls(1, row.schema.field(col).type))
    table.add(row)
    sync_index(tmp_path / "copy")
    store = clay_search.connect(tmp_path / "copy")
    assert "no-footprint" not in store.chips(bbox=(-180, -90, 180, 90)).chip_ids
    assert "no-footprint" in store.chips().chip_ids
    assert "no-footprint" in store.search(["no-footprint"], k=3, exclude_examples=False).chip_ids


def test_filters_object_and_keywords_mean_the_same(store):
    ids = store.attrs.column("chip_id").to_pylist()
    f = Filters(bbox=(-20, 30, 40, 70), start="2019-01-01", label=["River", "Forest"])
    kw = {"bbox": (-20, 30, 40, 70), "start": "2019-01-01", "label": ["River", "Forest"]}
    assert store.chips(f).chip_ids == store.chips(**kw).chip_ids
    assert (
        store.search([ids[0]], k=5, filters=f).chip_ids
        == store.search([ids[0]], k=5, **kw).chip_ids
    )
    assert (
        store.refine(ids[:2], k=5, filters=f).chip_ids == store.refine(ids[:2], k=5, **kw).chip_ids
    )
    # keywords override the object's parts
    rivers = store.chips(**{**kw, "label": "River"}).chip_ids
    assert store.chips(f, label="River").chip_ids == rivers
    assert store.chips(f, label=None, bbox=None).chip_ids == store.chips(f).chip_ids  # not given
    with pytest.raises(QueryError, match="unknown filter"):
        store.chips(lable="River")
    with pytest.raises(QueryError, match="must be a clay_search.filters.Filters"):
        store.chips({"label": "River"})


def test_undated_chips_and_the_count_of_what_a_filter_removed(tmp_path, sample_store):
    import pyarrow as pa

    from clay_search.store import sync_index

    table = _copy(sample_store, tmp_path / "copy")
    rows = table.search().limit(3).to_arrow()
    rows = rows.set_column(0, "chip_id", pa.array(["undated-1", "undated-2", "undated-3"]))
    i = rows.schema.get_field_index("datetime")
    rows = rows.set_column(i, "datetime", pa.nulls(3, rows.schema.field("datetime").type))
    table.add(rows)
    sync_index(tmp_path / "copy")
    store = clay_search.connect(tmp_path / "copy")
    undated = {"undated-1", "undated-2", "undated-3"}
    dated = set(store.chips(start="2018-01-01", end="2021-12-31").chip_ids)
    assert not dated & undated and len(dated) == 30
    kept = set(store.chips(start="2018-01-01", end="2021-12-31", undated=True).chip_ids)
    assert kept == dated | undated
    assert undated <= set(store.chips().chip_ids)  # no time range: undated=False drops nothing
    count = store.count(start="2018-01-01", end="2021-12-31", label="River")
    assert count["total"] == 33 and count["matched"] == 3
    assert count["undated"] == 3 and count["removed"]["time"] == 3
    assert count["removed"]["label"] == 33 - len(store.chips(label="River"))
    assert store.count(Filters(start="2018-01-01", undated=True))["undated"] == 0
    res = store.search(["undated-1"], k=40, start="2018-01-01", exclude_examples=False)
    assert res.meta["candidates"] == 30 and res.meta["total"] == 33
    assert store.overview()["undated"] == 3


def test_prediction_filters(tmp_path, sample_store):
    from clay_search.store import sync_index

    store = clay_search.connect(sample_store)
    with pytest.raises(QueryError, match="no 'pred_label' column"):
        store.chips(pred_label="water")
    with pytest.raises(QueryError, match="no 'pred_score' column"):
        store.search([store.chips().chip_ids[0]], min_pred_score=0.5)
    table = _copy(sample_store, tmp_path / "copy")
    table.add_columns({"pred_label": "cast(NULL as string)", "pred_score": "cast(NULL as float)"})
    assert sync_index(tmp_path / "copy").action == "unchanged"  # columns only: no rebuild
    table.update(where="label = 'SeaLake'", values={"pred_label": "water", "pred_score": 0.9})
    table.update(where="label != 'SeaLake'", values={"pred_label": "land", "pred_score": 0.2})
    sync_index(tmp_path / "copy")
    st = clay_search.connect(tmp_path / "copy")
    lakes = set(st.chips(label="SeaLake").chip_ids)
    assert set(st.chips(pred_label="water").chip_ids) == lakes
    assert set(st.chips(min_pred_score=0.5).chip_ids) == lakes
    assert set(st.chips(pred_label=["water", "land"], min_pred_score=0.1).chip_ids) == set(
        st.chips().chip_ids
    )
    some = st.chips().chip_ids[0]
    assert set(st.search([some], k=30, pred_label="water").chip_ids) <= lakes


def test_describe():
    assert Filters().describe() == "no filters"
    f = Filters(start="2020-01-01", end="2020-12-31", undated=True, sensor=["naip", "s2"],
                bbox=(1, 2, 3, 4), min_pred_score=0.5)  # fmt: skip
    assert f.describe() == (
        "2020-01-01..2020-12-31 (+undated), sensor=naip|s2, pred_score>=0.5, bbox=1,2,3,4"
    )
