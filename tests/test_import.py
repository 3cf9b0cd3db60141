"""`clay-search import` of Clay's embeddings GeoParquet made from real rows (other layouts, bad
rows and files: tests/test_interop.py)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import clay_search
from clay_search.cli.main import app
from clay_search.errors import StoreMismatchError
from clay_search.ingest.importer import import_geoparquet

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def clay_file(shared_store, tmp_path_factory):
    """A GeoParquet in Clay's format (source_url, date, embeddings, geometry) from real rows."""
    import geopandas as gpd
    import shapely

    store = clay_search.connect(shared_store)
    df = store.chips().to_pandas()
    vecs = store.vectors
    gdf = gpd.GeoDataFrame(
        {
            "source_url": df["source"],
            "date": df["datetime"].dt.date,
            "embeddings": [v.astype(np.float32).tolist() for v in vecs],
        },
        geometry=gpd.GeoSeries(shapely.from_wkb(df["geometry"]), crs="EPSG:4326"),
    )
    path = tmp_path_factory.mktemp("clay") / "eurosat_clay-v1.5_embeddings.gpq"
    gdf.to_parquet(path)
    return path, df, vecs


def test_import_then_search(clay_file, tmp_path):
    path, df, vecs = clay_file
    report = import_geoparquet(path, tmp_path / "s", sensor="sentinel-2-l2a")
    assert report["model_id"] == "clay-v1.5" and report["added"] == len(df)
    assert report["index"]["count"] == len(df)
    store = clay_search.connect(tmp_path / "s")
    assert len(store) == len(df) and store.dim == vecs.shape[1]
    # same footprints as the source rows
    got = store.chips(bbox=(0, 40, 20, 60)).to_pandas()
    assert set(got["source"]) <= set(df["source"]) and len(got) > 0
    res = store.search_vector(vecs[7], k=1, exclude_examples=False)
    assert store.get(res.chip_ids).to_pandas()["source"].iloc[0] == df["source"].iloc[7]
    again = import_geoparquet(path, tmp_path / "s")
    assert again["added"] == 0 and again["skipped_existing"] == len(df)


def test_import_refuses_other_model(clay_file, tmp_path):
    path, _, _ = clay_file
    import_geoparquet(path, tmp_path / "s", model_id="clay-v1.5")
    with pytest.raises(StoreMismatchError, match="clay-v1.5"):
        import_geoparquet(path, tmp_path / "s", model_id="some-other-model")
    result = CliRunner().invoke(
        app, ["import", str(path), "--store", str(tmp_path / "s"), "--model-id", "other"]
    )
    assert result.exit_code == 2 and "holds embeddings of model" in result.output
