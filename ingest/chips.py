"""Chip windows, deterministic chip ids, footprints in EPSG:4326 and GSD."""

from __future__ import annotations

import functools
import hashlib
import json
import math

import numpy as np
from rasterio.windows import Window

CHIP_ID_VERSION = "1"


def chip_windows(width: int, height: int, size: int, step: int) -> list[Window]:
    """Windows of ``size`` px every ``step`` px over a ``width`` x ``height`` grid (row-major).

    The last row/column of windows may reach past the raster; those pixels are padding.
    """
    def starts(n: int) -> list[int]:
        out = list(range(0, max(n - size, 0) + 1, step))
        if out[-1] + size < n:
            out.append(out[-1] + step)
        return out

    return [Window(c, r, size, size) for r in starts(height) for c in starts(width)]


def window_json(w: Window) -> str:
    """The ``window`` column: pixel window on the source's common grid.

    The text of ``json.dumps`` of the four ints with ``sort_keys=True``.
    """
    return (f'{{"col_off": {int(w.col_off)}, "height": {int(w.height)}, '
            f'"row_off": {int(w.row_off)}, "width": {int(w.width)}}}')


def chip_id(identity: str, window: Window, *, chip_size: int, step: int, bands: list[str],
            whole: bool = False) -> str:
    """Deterministic id: sha1 of the source identity, window, chip size, stride and bands."""
    key = json.dumps(
        [CHIP_ID_VERSION, identity, window_json(window), chip_size, step, list(bands), whole],
        separators=(",", ":"),
    )
    return hashlib.sha1(key.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=64)
def _to_wgs84(crs_wkt: str):
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4326), always_xy=True)


def footprint(crs, transform, window: Window, *, densify: int = 8):
    """(WKB polygon in lon/lat, (minx, miny, maxx, maxy), (lon, lat) of the centre) or Nones."""
    return footprints(crs, transform, [window], densify=densify)[0]


def footprints(crs, transform, windows: list[Window], *, densify: int = 8) -> list[tuple]:
    """:func:`footprint` of many windows of one grid: one projection of all their points."""
    import shapely

    n = len(windows)
    if crs is None or n == 0:
        return [(None, None, None)] * n
    win = np.array([[float(w.col_off), float(w.row_off), float(w.width), float(w.height)]
                    for w in windows])
    c0, r0 = win[:, :1], win[:, 1:2]
    c1, r1 = c0 + win[:, 2:3], r0 + win[:, 3:4]
    t = np.linspace(0.0, 1.0, densify + 1)[:-1][None, :]
    full = np.ones_like(t)
    cols = np.concatenate([c0 + (c1 - c0) * t, c1 * full, c1 - (c1 - c0) * t, c0 * full], 1)
    rows = np.concatenate([r0 * full, r0 + (r1 - r0) * t, r1 * full, r1 - (r1 - r0) * t], 1)
    k = cols.shape[1]
    # the corner points and the centres, through the affine grid and one projection
    px = np.concatenate([cols.ravel(), ((c0 + c1) / 2).ravel()])
    py = np.concatenate([rows.ravel(), ((r0 + r1) / 2).ravel()])
    xs, ys = transform @ (px, py)
    lon, lat = _to_wgs84(crs.to_wkt()).transform(np.asarray(xs), np.asarray(ys))
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    clon, clat = lon[n * k:], lat[n * k:]
    lon, lat = lon[:n * k].reshape(n, k), lat[:n * k].reshape(n, k)
    ok = np.isfinite(lon).all(1) & np.isfinite(lat).all(1)
    out: list[tuple] = [(None, None, None)] * n
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    polys = shapely.polygons(np.stack([lon[idx], lat[idx]], axis=-1))
    bad = ~shapely.is_valid(polys)
    if bad.any():
        polys[bad] = shapely.buffer(polys[bad], 0)
    wkbs = shapely.to_wkb(polys)
    bounds = shapely.bounds(polys).tolist()
    for j, i in enumerate(idx.tolist()):
        out[i] = (wkbs[j], tuple(bounds[j]), (float(clon[i]), float(clat[i])))
    return out


def ground_sample_distance(crs, transform, lat: float | None, default: float) -> float:
    """Pixel size in metres from the grid (mean of x and y), ``default`` without a CRS."""
    if crs is None:
        return float(default)
    rx, ry = abs(transform.a), abs(transform.e)
    res = (rx * ry) ** 0.5 if rx and ry else max(rx, ry)
    if crs.is_geographic:
        return float(res * 111_320.0 * math.cos(math.radians(lat or 0.0)) ** 0.5)
    factor = 1.0
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - unusual CRS: assume metres
        factor = 1.0
    gsd = res * factor
    if crs.to_epsg() in (3857, 900913) and lat is not None:
        gsd *= math.cos(math.radians(lat))  # Web Mercator stretches with latitude
    return float(gsd)

