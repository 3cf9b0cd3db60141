"""Ingesting the sample shipped in the repository: labels, footprints, dates, idempotence."""

from __future__ import annotations

import json
from io import BytesIO

import numpy as np
from PIL import Image
from shapely import wkb
from test_ingest_helpers import (
    embeddings,
    read_chips,
    table_version,
)

from clay_search.ingest import run
from clay_search.schema import chips_schema


def test_ingest_sample_root(sample_dir, nano_embedder, tmp_path):
    store = tmp_path / "store"
    report = run([sample_dir], store, embedder=nano_embedder, workers=2)
    assert report.ok, [s.error for s in report.failed]
    n_eurosat = len(list((sample_dir / "eurosat_ms").rglob("*.tif")))
    n_naip = len(list((sample_dir / "naip").glob("*.tif")))
    # EuroSAT chips are whole files; each 256 px NAIP crop gives 4 x 4 chips of 64 px
    assert report.chips_written == n_eurosat + 16 * n_naip
    df = read_chips(store)
    assert len(df) == report.chips_written and df["chip_id"].is_unique
    eurosat = df[df["sensor"] == "sentinel-2-l2a"]
    assert set(eurosat["label"]) == {p.name for p in (sample_dir / "eurosat_ms").iterdir()}
    naip = df[df["sensor"] == "naip"]
    assert naip["label"].isna().all()
    assert {d.year for d in naip["datetime"]} == {2009, 2020}
    # footprints: valid lon/lat polygons matching the bounds columns
    for _, row in df.iterrows():
        poly = wkb.loads(row["geometry"])
        np.testing.assert_allclose(poly.bounds, [row.minx, row.miny, row.maxx, row.maxy])
        assert -180 <= row.minx < row.maxx <= 180 and -90 <= row.miny < row.maxy <= 90
    assert naip["crs"].eq("EPSG:26914").all() and (naip["gsd"] == 5.0).all()
    emb = embeddings(df)
    assert emb.shape == (len(df), nano_embedder.dim) and np.isfinite(emb).all()
    assert np.linalg.matrix_rank(emb) > 10  # distinct chips, distinct vectors
    assert (df["model_id"] == nano_embedder.model_id).all()
    thumb = Image.open(BytesIO(df["thumbnail"].iloc[0]))
    assert thumb.format == "PNG" and thumb.size == (64, 64)
    # the store's files
    meta = json.loads((store / "store.json").read_text())
    assert meta["model_id"] == nano_embedder.model_id and meta["dim"] == nano_embedder.dim
    manifest = json.loads(open(report.manifest).read())
    assert manifest["status"] == "done" and manifest["totals"]["chips_written"] == len(df)
    assert report.index["count"] == len(df)  # the FAISS index was brought up to date


def test_rerun_skips_finished_chips(sample_dir, nano_embedder, tmp_path):
    store = tmp_path / "store"
    src = sample_dir / "naip"
    first = run([src], store, embedder=nano_embedder)
    version = table_version(store)
    again = run([src], store, embedder=nano_embedder)
    assert first.chips_written == 32 and again.chips_written == 0
    assert again.chips_existing == 32
    assert table_version(store) == version  # nothing committed
    assert len(read_chips(store)) == 32


def test_patch_embeddings_and_stride(sample_dir, nano_embedder, tmp_path):
    store = tmp_path / "store"
    src = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    report = run(
        [src], store, embedder=nano_embedder, chip_size=128, stride=64, patch_embeddings=True
    )
    assert report.ok and report.chips_written == 9  # starts 0, 64, 128 on each axis
    df = read_chips(store)
    grid = (128 // 8) ** 2
    assert len(df["patch_embeddings"].iloc[0]) == grid * nano_embedder.dim
    expected = chips_schema(nano_embedder.dim, patch_dim=grid * nano_embedder.dim)
    assert set(expected.names) <= set(df.columns)
