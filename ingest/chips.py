"""Chip windows, deterministic chip ids, footprints in EPSG:4326, GSD and thumbnails."""

from __future__ import annotations

import functools
import hashlib
import io
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
    """The ``window`` column: pixel window on the source's common grid."""
    return json.dumps(
        {"col_off": int(w.col_off), "row_off": int(w.row_off),
         "width": int(w.width), "height": int(w.height)},
        sort_keys=True,
    )


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
    from shapely.geometry import Polygon

    if crs is None:
        return None, None, None
    c0, r0 = float(window.col_off), float(window.row_off)
    c1, r1 = c0 + float(window.width), r0 + float(window.height)
    t = np.linspace(0.0, 1.0, densify + 1)[:-1]
    cols = np.concatenate([c0 + (c1 - c0) * t, np.full_like(t, c1), c1 - (c1 - c0) * t,
                           np.full_like(t, c0)])
    rows = np.concatenate([np.full_like(t, r0), r0 + (r1 - r0) * t, np.full_like(t, r1),
                           r1 - (r1 - r0) * t])
    xs, ys = transform @ (cols, rows)
    tr = _to_wgs84(crs.to_wkt())
    lon, lat = tr.transform(np.asarray(xs), np.asarray(ys))
    cx, cy = transform @ ((c0 + c1) / 2, (r0 + r1) / 2)
    clon, clat = tr.transform(cx, cy)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None, None, None
    poly = Polygon(list(zip(lon.tolist(), lat.tolist(), strict=True)))
    if not poly.is_valid:
        poly = poly.buffer(0)
    return poly.wkb, tuple(float(v) for v in poly.bounds), (float(clon), float(clat))


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


def thumbnail_png(chip: np.ndarray, valid: np.ndarray, rgb: list[int] | None, *,
                  size: int = 64, log: bool = False) -> bytes:
    """A small PNG: ``rgb`` band indices (grey from the first band otherwise), 2-98 % stretch."""
    from PIL import Image

    idx = rgb if rgb and len(rgb) == 3 else [0, 0, 0]
    img = chip[idx].astype(np.float32)
    if log:
        img = 10 * np.log10(np.maximum(img, 1e-10))
    flat = img.reshape(3, -1)
    mask = valid.reshape(-1)
    vals = flat[:, mask] if mask.any() else flat
    vals = vals[:, :: max(1, vals.shape[1] // 2048)]  # a stretch needs no more pixels
    lo, hi = np.percentile(vals, [2, 98], axis=1)
    scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1e-12), 0.0)
    out = np.clip((img - lo[:, None, None]) * scale[:, None, None], 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    pil = Image.fromarray(np.ascontiguousarray(np.moveaxis(out, 0, -1)), mode="RGB")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
