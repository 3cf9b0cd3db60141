"""The one footprint function (clay_search.geo.footprints): clipped to the raster and to the
world, cut at the antimeridian, closed over poles, the on-Earth part of geostationary chips; and
the ingest regressions behind it (edge chips, full-Earth grids, geostationary scenes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from test_ingest_helpers import read_chips

from clay_search.filters import FilterEngine, Filters
from clay_search.geo import NO_FOOTPRINT, footprint, footprints

WGS84 = CRS.from_epsg(4326)
GEOS = CRS.from_proj4("+proj=geos +h=35785831 +lon_0=0 +sweep=y +ellps=WGS84 +units=m")
GEOS_HALF = 5_434_000.0  # half the full disk's width in the projection, metres


def _geom(fp):
    return shapely.from_wkb(fp.wkb)


def _in_world(g) -> bool:
    minx, miny, maxx, maxy = g.bounds
    return -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90


def test_edge_chip_is_clipped_to_the_raster():
    """A chip reaching past the raster's edge covers only the raster (issue 10, item 5)."""
    t = from_origin(500_000, 5_200_000, 10, 10)  # UTM 14N, 10 m
    crs = CRS.from_epsg(32614)
    edge = Window(96, 96, 64, 64)  # a 128 x 128 raster: 32 x 32 px of the chip are inside
    clipped = footprint(crs, t, edge, size=(128, 128))
    inside = footprint(crs, t, Window(96, 96, 32, 32))
    np.testing.assert_allclose(clipped.bounds, inside.bounds, atol=1e-9)
    unclipped = footprint(crs, t, edge)
    assert _geom(unclipped).area > 3.9 * _geom(clipped).area
    assert footprint(crs, t, Window(200, 0, 64, 64), size=(128, 128)) == NO_FOOTPRINT


def test_valid_mask_shrinks_the_footprint_to_the_valid_pixels():
    t = from_origin(500_000, 5_200_000, 10, 10)
    crs = CRS.from_epsg(32614)
    mask = np.zeros((64, 64), bool)
    mask[:32, :16] = True  # valid: the top-left 16 x 32 px
    fp = footprint(crs, t, Window(0, 0, 64, 64), valid=mask)
    np.testing.assert_allclose(fp.bounds, footprint(crs, t, Window(0, 0, 16, 32)).bounds)
    # a mask at another resolution (whole-file chips are resampled) scales to the window
    small = mask[::2, ::2]
    np.testing.assert_allclose(
        footprint(crs, t, Window(0, 0, 64, 64), valid=small).bounds, fp.bounds
    )
    assert footprint(crs, t, Window(0, 0, 64, 64), valid=np.zeros((64, 64), bool)) == NO_FOOTPRINT


def test_full_earth_grid_stays_in_the_world():
    """A full-Earth grid whose last chips run past its edge: longitudes never pass 180."""
    t = from_origin(-180, 90, 1.0, 1.0)  # 360 x 180 px of 1 degree
    wins = [Window(c, r, 64, 64) for r in range(0, 180, 64) for c in range(0, 360, 64)]
    fps = footprints(WGS84, t, wins, size=(360, 180))
    assert all(fp.wkb is not None for fp in fps)
    for fp in fps:
        g = _geom(fp)
        assert g.is_valid and _in_world(g) and g.geom_type == "Polygon"
    assert max(fp.bounds[2] for fp in fps) == pytest.approx(180)
    assert min(fp.bounds[1] for fp in fps) == pytest.approx(-90)


def test_grid_past_the_antimeridian_wraps_and_splits():
    """A 0..360 longitude grid: chips east of 180 are shifted, the chip across it is split."""
    t = from_origin(0, 10, 1.0, 1.0)
    across = footprint(WGS84, t, Window(170, 0, 20, 10), size=(360, 20))
    g = _geom(across)
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2 and _in_world(g)
    assert g.area == pytest.approx(200, rel=1e-6)
    east = footprint(WGS84, t, Window(200, 0, 10, 10), size=(360, 20))
    np.testing.assert_allclose(east.bounds, (-160, 0, -150, 10))
    assert -180 <= across.centre[0] <= 180


def test_utm_chip_across_the_antimeridian_is_a_multipolygon_found_by_filters():
    """A UTM zone 60N chip across 180 E: two parts, found by boxes on both sides of it."""
    crs = CRS.from_epsg(32660)
    # x of 180 E at 60 N in zone 60 (central meridian 177 E) is about 667 km
    t = from_origin(600_000, 6_700_000, 1000, 1000)
    fp = footprint(crs, t, Window(0, 0, 200, 50), size=(200, 50))
    g = _geom(fp)
    assert g.geom_type == "MultiPolygon" and _in_world(g)
    inside = footprint(crs, t, Window(0, 0, 20, 20), size=(200, 50))  # wholly west of 180
    table = pa.table(
        {
            "minx": [fp.bounds[0], inside.bounds[0]],
            "miny": [fp.bounds[1], inside.bounds[1]],
            "maxx": [fp.bounds[2], inside.bounds[2]],
            "maxy": [fp.bounds[3], inside.bounds[3]],
            "datetime": pa.array([None, None], pa.timestamp("us", tz="UTC")),
            "sensor": ["s", "s"],
            "label": [None, None],
            "geometry": [fp.wkb, inside.wkb],
        }
    )
    eng = FilterEngine(table)
    lat = (fp.bounds[1] + fp.bounds[3]) / 2
    east = Filters(bbox=(-179.9, lat - 0.05, -179.5, lat + 0.05))
    west = Filters(bbox=(179.5, lat - 0.05, 179.99, lat + 0.05))
    far = Filters(bbox=(0, lat - 0.05, 1, lat + 0.05))  # inside the bounds, not the chip
    assert eng.rows(east).tolist() == [0]
    assert 0 in eng.rows(west).tolist()
    assert eng.rows(far).tolist() == []


def test_polar_chip_is_closed_over_the_pole():
    crs = CRS.from_epsg(3413)  # NSIDC polar stereographic north
    t = from_origin(-500_000, 500_000, 10_000, 10_000)
    fp = footprint(crs, t, Window(0, 0, 100, 100), size=(100, 100))
    g = _geom(fp)
    assert g.is_valid and _in_world(g)
    assert g.intersects(shapely.Point(0, 89.99)) and g.intersects(shapely.Point(179, 89.99))
    assert fp.bounds[3] == pytest.approx(90)


def test_geostationary_limb_chips_get_their_on_earth_part():
    """Chips partly on the Earth (geostationary full disk) get a footprint; off-Earth none."""
    px = 2 * GEOS_HALF / 256
    t = from_origin(-GEOS_HALF, GEOS_HALF, px, px)
    limb = footprint(GEOS, t, Window(0, 96, 32, 64), size=(256, 256))  # west limb at the equator
    assert limb.wkb is not None
    g = _geom(limb)
    assert g.is_valid and _in_world(g) and g.area > 0
    assert limb.bounds[0] < -75 and limb.bounds[2] < -35  # the far west of the disk
    lon, lat = limb.centre
    assert g.buffer(1e-6).contains(shapely.Point(lon, lat))
    corner = footprint(GEOS, t, Window(0, 0, 8, 8), size=(256, 256))  # space only
    assert corner == NO_FOOTPRINT


def test_no_crs_gives_no_footprint():
    assert footprint(None, from_origin(0, 0, 1, 1), Window(0, 0, 8, 8)) == NO_FOOTPRINT


def _write(path, crs, transform, data, nodata=0):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)


def test_ingest_geostationary_scene_gives_footprints_to_limb_chips(nano_embedder, tmp_path):
    """Regression: chips partly on the Earth had null footprints, so filters never found them."""
    from clay_search.ingest import run

    n = 256
    px = 2 * GEOS_HALF / n
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx + 0.5 - n / 2, yy + 0.5 - n / 2)
    disk = r < n / 2 * 0.995
    rng = np.random.default_rng(0)
    data = np.where(disk[None], rng.integers(1, 255, (4, n, n)), 0).astype(np.uint8)
    src = tmp_path / "in" / "m_4709963_se_14_1_20200831_geos.tif"
    src.parent.mkdir()
    _write(src, GEOS, from_origin(-GEOS_HALF, GEOS_HALF, px, px), data)
    store = tmp_path / "store"
    report = run([src], store, embedder=nano_embedder, sensor="naip", chip_size=64, max_nodata=0.95)
    assert not report.failed, report.failed
    df = read_chips(store)
    assert len(df) == 16  # every chip holds Earth pixels
    assert df["geometry"].notna().all()
    for wkb in df["geometry"]:
        g = shapely.from_wkb(wkb)
        assert g.is_valid and _in_world(g)
    from clay_search import connect

    hits = connect(store).chips(bbox=(-80, -10, -60, 10))
    assert len(hits) >= 1  # the west limb chips


def test_ingest_full_earth_grid_never_passes_the_antimeridian(nano_embedder, tmp_path):
    """Regression: a full-Earth grid's last column got footprints reaching longitude 193."""
    from clay_search.ingest import run

    data = np.random.default_rng(1).integers(1, 255, (4, 180, 360)).astype(np.uint8)
    src = tmp_path / "in" / "m_4709963_se_14_1_20200831_world.tif"
    src.parent.mkdir()
    _write(src, WGS84, from_origin(-180, 90, 1.0, 1.0), data)
    store = tmp_path / "store"
    report = run([src], store, embedder=nano_embedder, sensor="naip", chip_size=64)
    assert not report.failed, report.failed
    df = read_chips(store)
    assert len(df) == 18  # 6 x 3 chips, the last row and column partly padding
    assert df["maxx"].max() <= 180 and df["minx"].min() >= -180
    assert df["miny"].min() >= -90 and df["maxy"].max() <= 90
    assert df["maxx"].max() == pytest.approx(180)
