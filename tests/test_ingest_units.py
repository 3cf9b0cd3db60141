"""Unit-level ingest checks: datetimes, windows, chip ids, footprints, sensor/band mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely import wkb
from test_ingest_helpers import EUROSAT_ORDER

from clay_search.errors import BandMismatchError, UnknownSensorError
from clay_search.geo import footprint
from clay_search.ingest.bands import plan_bands
from clay_search.ingest.chips import chip_id, chip_windows
from clay_search.ingest.datetimes import datetime_from_name, parse_datetime
from clay_search.ingest.params import IngestOptionError
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.sources import discover
from clay_search.ingest.thumbnails import thumbnail_png
from clay_search.model import SensorRegistry


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LC08_L1TP_224077_20200518_20200518_01_RT_B2", datetime(2020, 5, 18, tzinfo=UTC)),
        ("S2A_MSIL2A_20170613T101031_87_48_B02", datetime(2017, 6, 13, 10, 10, 31, tzinfo=UTC)),
        ("S2B_MSIL2A_20170924T93020_69_24", datetime(2017, 9, 24, tzinfo=UTC)),
        ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP", datetime(2017, 6, 13, 16, 50, 43, tzinfo=UTC)),
        ("m_4709963_se_14_1_20090818", datetime(2009, 8, 18, tzinfo=UTC)),
        ("AnnualCrop_1227", None),
    ],
)
def test_datetime_from_product_names(name, expected):
    assert datetime_from_name(name) == expected


def test_parse_datetime_option():
    assert parse_datetime("2020-05-18") == datetime(2020, 5, 18, tzinfo=UTC)
    assert parse_datetime("2020-05-18T10:00:00Z").hour == 10
    with pytest.raises(IngestOptionError, match="ISO 8601"):
        parse_datetime("18/05/2020")


def test_chip_windows_cover_the_grid_with_padding_at_the_edges():
    wins = chip_windows(130, 64, 64, 64)
    assert [(w.col_off, w.row_off) for w in wins] == [(0, 0), (64, 0), (128, 0)]
    assert len(chip_windows(64, 64, 64, 32)) == 1
    assert len(chip_windows(128, 128, 64, 32)) == 9


def test_chip_id_is_deterministic_and_parameter_sensitive():
    w = Window(64, 0, 64, 64)
    a = chip_id("/data/x.tif", w, chip_size=64, step=64, bands=["red", "green"])
    assert a == chip_id(
        "/data/x.tif", Window(64, 0, 64, 64), chip_size=64, step=64, bands=["red", "green"]
    )
    assert len(a) >= 20
    others = {
        chip_id("/data/y.tif", w, chip_size=64, step=64, bands=["red", "green"]),
        chip_id("/data/x.tif", Window(0, 0, 64, 64), chip_size=64, step=64, bands=["red", "green"]),
        chip_id("/data/x.tif", w, chip_size=64, step=32, bands=["red", "green"]),
        chip_id("/data/x.tif", w, chip_size=64, step=64, bands=["red"]),
    }
    assert a not in others and len(others) == 4


def test_footprint_matches_rasterio_bounds(sample_dir):
    path = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    with rasterio.open(path) as d:
        win = Window(64, 128, 64, 64)
        geom, bounds, centre = footprint(d.crs, d.transform, win)
        native = rasterio.windows.bounds(win, d.transform)
        expected = transform_bounds(d.crs, "EPSG:4326", *native, densify_pts=21)
    poly = wkb.loads(geom)
    assert poly.is_valid and poly.geom_type == "Polygon"
    np.testing.assert_allclose(bounds, expected, atol=1e-6)
    assert -100 < centre[0] < -99 and 47 < centre[1] < 47.1  # North Dakota, lon/lat order
    assert poly.contains(poly.centroid)


def test_thumbnail_is_a_small_rgb_png():
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(0)
    chip = rng.uniform(0, 3000, (4, 64, 64)).astype(np.float32)
    valid = np.ones((64, 64), bool)
    img = Image.open(BytesIO(thumbnail_png(chip, valid, [2, 1, 0], size=32)))
    assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"


def _plan(path, **kw):
    (src,) = discover([str(path)])
    with SourceReader(src) as r:
        meta = r.meta
    return plan_bands(src, meta, SensorRegistry.default(), **kw)


def test_eurosat_band_order_maps_b8a_last(shared_data):
    f = next((shared_data / "eurosat_ms" / "River").glob("*.tif"))
    plan = _plan(f, sensor="sentinel-2-l2a", bands=EUROSAT_ORDER.split(","))
    # B01, B09, B10 have no statistics: dropped; B8A is the file's 13th band
    assert plan.bands[-1].id == "B8A" and plan.indices[-1] == 12
    assert [b.id for b in plan.bands] == [
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B11",
        "B12",
        "B8A",
    ]
    assert any("dropped B01, B09, B10" in n for n in plan.notes)
    kept = _plan(f, sensor="sentinel-2-l2a", bands=EUROSAT_ORDER.split(","), keep_unstats=True)
    assert len(kept.bands) == 13


def test_sample_eurosat_bands_come_from_descriptions(sample_dir):
    f = next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))
    plan = _plan(f)
    assert plan.sensor.name == "sentinel-2-l2a"
    assert plan.indices[-1] == 12 and plan.bands[-1].id == "B8A"


def test_unknown_sensor_lists_known_ones(sample_dir):
    f = next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))
    with pytest.raises(UnknownSensorError, match="Known sensors: .*sentinel-2-l2a.*Register"):
        _plan(f, sensor="sentinel-7")


def test_wrong_band_count_for_bands_option(sample_dir):
    f = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    with pytest.raises(BandMismatchError, match="--bands names 3 bands but .* has 4"):
        _plan(f, bands=["red", "green", "blue"])
    plan = _plan(f)
    assert plan.sensor.name == "naip" and plan.band_names == ["red", "green", "blue", "nir"]


def test_discovery_finds_labels_bandsets_and_stac(shared_data):
    found = discover(
        [
            str(shared_data / "bigearthnet" / "BigEarthNet-S2-Example"),
            str(shared_data / "stac_planet_disaster"),
            str(shared_data / "eurosat_ms"),
        ]
    )
    kinds = [s.kind for s in found]
    assert kinds.count("bandset") == 6 and kinds.count("stac") == 5
    bandset = next(s for s in found if s.kind == "bandset")
    assert len(bandset.paths) == 12 and "B8A" in bandset.band_keys
    labelled = [s for s in found if s.kind == "labelled"]
    assert {s.label for s in labelled} >= {"River", "SeaLake", "Industrial"}
    stac = next(s for s in found if s.item_id == "20170831_172754_101c")
    assert stac.paths[0].endswith("_3B_AnalyticMS.tif") and stac.band_keys[0] == "blue"
    assert stac.datetime.year == 2017 and stac.sensor_hint == "planetscope-sr"
