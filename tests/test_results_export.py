"""Results exports: Arrow, pandas, GeoDataFrame, GeoJSON, GeoParquet, merged footprints."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

import clay_search


@pytest.fixture(scope="module")
def results(sample_store):
    store = clay_search.connect(sample_store)
    return store.search([store.attrs.column("chip_id")[0].as_py()], k=25)


def test_arrow_and_pandas(results):
    t = results.to_arrow()
    assert t.num_rows == 25 and "embedding" not in t.column_names
    assert {"chip_id", "score", "rank", "geometry", "thumbnail"} <= set(t.column_names)
    assert all(th.startswith(b"\x89PNG") for th in t.column("thumbnail").to_pylist())
    meta = json.loads(t.schema.metadata[b"clay_search.results"])
    assert meta["table_version"] == results.version
    df = results.to_pandas()
    assert list(df["chip_id"]) == results.chip_ids


def test_geoparquet_reads_back(results, tmp_path):
    import geopandas as gpd

    out = results.to_geoparquet(tmp_path / "r.parquet")
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    gdf = gpd.read_parquet(out)
    # the same CRS as GeoJSON read back and as to_geopandas (EPSG:4326, lon/lat)
    from_json = gpd.read_file(results.to_geojson(tmp_path / "r.geojson"))
    assert gdf.crs == from_json.crs == results.to_geopandas().crs == "EPSG:4326"
    assert list(gdf["chip_id"]) == results.chip_ids
    direct = results.to_geopandas()
    assert gdf.geometry.geom_equals(direct.geometry).all()
    assert np.allclose(col["bbox"], gdf.total_bounds)


def test_geojson(results, tmp_path):
    out = results.to_geojson(tmp_path / "r.geojson")
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 25
    props = doc["features"][0]["properties"]
    assert "thumbnail" not in props and "embedding" not in props and "geometry" not in props
    assert props["rank"] == 1 and isinstance(props["datetime"], str)
    assert shapely.geometry.shape(doc["features"][0]["geometry"]).is_valid


def test_merge_touching_footprints(results, tmp_path):
    import geopandas as gpd

    merged = results.merged()
    geoms = shapely.from_wkb(results.to_arrow().column("geometry").to_numpy(zero_copy_only=False))
    # groups are the connected components of the "intersects" graph: check by union
    assert sum(merged.column("count").to_pylist()) == 25
    assert shapely.union_all(geoms).equals(
        shapely.union_all(shapely.from_wkb(merged.column("geometry").to_numpy(False)))
    )
    parts = shapely.from_wkb(merged.column("geometry").to_numpy(False))
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not parts[i].intersects(parts[j])
    gdf = gpd.read_parquet(results.to_geoparquet(tmp_path / "m.parquet", merge=True))
    assert len(gdf) == merged.num_rows


def test_merge_joins_adjacent_boxes():
    import pyarrow as pa

    from clay_search.results import Results

    boxes = [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), shapely.box(5, 5, 6, 6)]
    t = pa.table(
        {
            "chip_id": ["a", "b", "c"],
            "geometry": [shapely.to_wkb(b) for b in boxes],
            "score": pa.array([0.9, 0.8, 0.95], pa.float32()),
            "rank": pa.array([1, 2, 3], pa.int32()),
        }
    )
    m = Results(t, version=1).merged()
    assert m.column("count").to_pylist() == [1, 2]
    assert shapely.from_wkb(m.column("geometry")[1].as_py()).equals(shapely.box(0, 0, 2, 1))
