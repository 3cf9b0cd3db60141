"""Spatial/time/attribute filters, checked against a plain shapely computation."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import shapely
from store_fixtures import cached_store

import clay_search
from clay_search.errors import QueryError
from clay_search.filters import make_filters

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory):
    return clay_search.connect(cached_store(tmp_path_factory, shared_data))


def _truth(store, geom=None, start=None, end=None, label=None):
    t = store.attrs.to_pylist()
    out = []
    for row in t:
        if geom is not None:
            if row["geometry"] is None or not shapely.from_wkb(row["geometry"]).intersects(geom):
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
    ],
)
def test_bad_filters(kwargs, match):
    with pytest.raises(QueryError, match=match):
        make_filters(**kwargs)


def test_null_geometry_is_excluded_by_spatial_filters(tmp_path, shared_data, tmp_path_factory):
    import pyarrow as pa

    from clay_search.store import sync_index
    from clay_search.store import open_chips_table, read_store_info

    src = clay_search.connect(cached_store(tmp_path_factory, shared_data))
    info = read_store_info(src.path)
    import shutil

    shutil.copytree(info.path, tmp_path / "copy")
    table = open_chips_table(read_store_info(tmp_path / "copy"))
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
