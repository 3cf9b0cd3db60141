"""Property-based tests (hypothesis, derandomised: the same examples on every run) for chip
windows, footprints (random real CRS, transforms, windows) and filters (random footprints,
boxes and dates against a brute-force answer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.windows import Window

from clay_search.filters import FilterEngine, Filters
from clay_search.geo import footprint, footprints, wrap_world
from clay_search.ingest.chips import chip_count, chip_windows

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(
    w=st.integers(1, 700),
    h=st.integers(1, 700),
    size=st.sampled_from([8, 16, 64, 256]),
    frac=st.floats(0.05, 1.0),
)
def test_chip_windows_cover_the_raster(w, h, size, frac):
    step = max(1, int(size * frac))
    wins = chip_windows(w, h, size, step)
    assert len(wins) == chip_count(w, h, size, step)
    assert len({(x.col_off, x.row_off) for x in wins}) == len(wins)
    cover = np.zeros((h, w), bool)
    for x in wins:
        assert x.width == x.height == size
        assert 0 <= x.col_off < w and 0 <= x.row_off < h
        cover[x.row_off : x.row_off + size, x.col_off : x.col_off + size] = True
    assert cover.all()
    keys = [(x.row_off, x.col_off) for x in wins]
    assert keys == sorted(keys)  # row-major


# real CRS with a point of their valid area (x, y in CRS units) and a sensible pixel size
GRIDS = [
    ("EPSG:32614", (500_000, 5_200_000), 10.0),
    ("EPSG:32660", (640_000, 6_700_000), 500.0),  # UTM 60N: chips can cross the antimeridian
    ("EPSG:3857", (1_000_000, 6_000_000), 30.0),
    ("EPSG:3413", (-200_000, 200_000), 2000.0),  # polar stereographic north, near the pole
    ("EPSG:3031", (0, 0), 5000.0),  # Antarctic polar stereographic, on the pole
    ("EPSG:27700", (400_000, 300_000), 25.0),
    ("EPSG:4326", (170.0, 60.0), 0.05),
    ("+proj=geos +h=35785831 +lon_0=0 +sweep=y +units=m", (-5_000_000, 0), 3000.0),
]


def _in_world(g) -> bool:
    minx, miny, maxx, maxy = g.bounds
    return -180 - 1e-9 <= minx <= maxx <= 180 + 1e-9 and -90 - 1e-9 <= miny <= maxy <= 90 + 1e-9


@SETTINGS
@given(
    grid=st.sampled_from(GRIDS),
    rot=st.sampled_from([0.0, 0.0, 15.0, -40.0]),
    dx=st.floats(-0.5, 0.5),
    dy=st.floats(-0.5, 0.5),
    size=st.integers(1, 300),
    col=st.integers(-100, 300),
    row=st.integers(-100, 300),
    w=st.integers(50, 400),
    h=st.integers(50, 400),
)
def test_footprints_are_valid_clipped_and_in_the_world(grid, rot, dx, dy, size, col, row, w, h):
    crs_text, (x0, y0), px = grid
    crs = CRS.from_user_input(crs_text)
    t = (
        Affine.translation(x0 + dx * px * w, y0 + dy * px * h)
        * Affine.rotation(rot)
        * Affine.scale(px, -px)
    )
    win = Window(col, row, size, size)
    fp = footprint(crs, t, win, size=(w, h))
    inside = col < w and row < h and col + size > 0 and row + size > 0
    if not inside:
        assert fp.wkb is None
        return
    if fp.wkb is None:  # only where the whole (clipped) window is off the Earth
        assert "geos" in crs_text
        return
    g = shapely.from_wkb(fp.wkb)
    assert g.is_valid and not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon")
    assert _in_world(g)
    np.testing.assert_allclose(fp.bounds, g.bounds)
    lon, lat = fp.centre
    assert -180 <= lon <= 180 and -90 <= lat <= 90
    # the clipped window's footprint lies within the whole window's (up to densification)
    whole = footprint(crs, t, win)
    if whole.wkb is not None:
        big = shapely.from_wkb(whole.wkb)
        tol = 0.02 * max(big.bounds[2] - big.bounds[0], big.bounds[3] - big.bounds[1], 1e-6)
        assert big.buffer(tol).covers(g)
    # a batch gives the same footprints as one window at a time
    two = footprints(crs, t, [win, Window(0, 0, min(w, 32), min(h, 32))], size=(w, h))
    assert two[0] == fp


@SETTINGS
@given(
    lon0=st.floats(-540, 540),
    lat0=st.floats(-120, 100),
    dlon=st.floats(0.01, 350),
    dlat=st.floats(0.01, 60),
)
def test_wrap_world_keeps_the_area_inside_the_world(lon0, lat0, dlon, dlat):
    """A lon/lat box anywhere (continuous longitudes) wraps into the world with its area."""
    g = shapely.box(lon0, lat0, lon0 + dlon, lat0 + dlat)
    out = wrap_world(g)
    clipped = max(0.0, min(lat0 + dlat, 90) - max(lat0, -90)) * dlon
    if clipped <= 1e-9:
        assert out is None or out.area < 1e-6
        return
    assert out is not None and _in_world(out)
    assert abs(out.area - clipped) <= 1e-6 * max(clipped, 1)


@st.composite
def _rows(draw):
    n = draw(st.integers(1, 40))
    boxes, times = [], []
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for _ in range(n):
        lon = draw(st.floats(-185, 185))
        lat = draw(st.floats(-80, 80))
        d = draw(st.floats(0.01, 10))
        g = wrap_world(shapely.box(lon, lat, lon + d, lat + d))
        boxes.append(g)
        days = draw(st.one_of(st.none(), st.integers(0, 2000)))
        times.append(None if days is None else base + timedelta(days=days, hours=days % 24))
    return boxes, times


@SETTINGS
@given(
    rows=_rows(),
    q=st.tuples(st.floats(-180, 179), st.floats(-90, 89), st.floats(0.01, 60), st.floats(0.01, 60)),
    start=st.one_of(st.none(), st.integers(0, 2000)),
    span=st.integers(0, 900),
)
def test_filters_match_brute_force(rows, q, start, span):
    boxes, times = rows
    table = pa.table(
        {
            "minx": [g.bounds[0] for g in boxes],
            "miny": [g.bounds[1] for g in boxes],
            "maxx": [g.bounds[2] for g in boxes],
            "maxy": [g.bounds[3] for g in boxes],
            "datetime": pa.array(times, pa.timestamp("us", tz="UTC")),
            "sensor": ["s"] * len(boxes),
            "label": [None] * len(boxes),
            "geometry": [shapely.to_wkb(g) for g in boxes],
        }
    )
    eng = FilterEngine(table)
    qb = (q[0], q[1], min(q[0] + q[2], 180), min(q[1] + q[3], 90))
    kw = {"bbox": qb}
    base = datetime(2020, 1, 1, tzinfo=UTC)
    lo = hi = None
    if start is not None:
        lo = base + timedelta(days=start)
        hi = lo + timedelta(days=span)
        kw.update(start=lo, end=hi)
    got = eng.rows(Filters(**kw)).tolist()
    qg = shapely.box(*qb)
    want = [
        i
        for i, (g, t) in enumerate(zip(boxes, times, strict=True))
        if g.intersects(qg) and (lo is None or (t is not None and lo <= t <= hi))
    ]
    assert got == want
