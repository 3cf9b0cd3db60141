"""Chip windows, deterministic chip ids and GSD (footprints: :func:`clay_search.geo.footprints`)."""

from __future__ import annotations

import hashlib
import json
import math

from rasterio.windows import Window

CHIP_ID_VERSION = "1"
#: Most chips one source may make: the windows of a source are listed before reading, so a
#: header declaring absurd dimensions must not turn into billions of windows.
MAX_CHIPS_PER_SOURCE = 1_000_000


def chip_count(width: int, height: int, size: int, step: int) -> int:
    """``len(chip_windows(width, height, size, step))`` without listing them."""

    def n(m: int) -> int:
        k = max(m - size, 0) // step + 1
        return k + 1 if (k - 1) * step + size < m else k

    return n(width) * n(height)


def check_chip_count(width: int, height: int, size: int, step: int, name: str) -> None:
    """Refuse a source that would make more than ``MAX_CHIPS_PER_SOURCE`` chips."""
    from clay_search.errors import SourceReadError

    count = chip_count(width, height, size, step)
    if count > MAX_CHIPS_PER_SOURCE:
        raise SourceReadError(
            f"{name} declares {width:,} x {height:,} px: {count:,} chips of {size} px at stride "
            f"{step}, more than the {MAX_CHIPS_PER_SOURCE:,} one source may make; if the size "
            "is real, split the scene (gdal_retile.py) or use a larger --chip-size/--stride, "
            "else the header is corrupt"
        )


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
    return (
        f'{{"col_off": {int(w.col_off)}, "height": {int(w.height)}, '
        f'"row_off": {int(w.row_off)}, "width": {int(w.width)}}}'
    )


def chip_id(
    identity: str,
    window: Window,
    *,
    chip_size: int,
    step: int,
    bands: list[str],
    whole: bool = False,
) -> str:
    """Deterministic id: sha1 of the source identity, window, chip size, stride and bands."""
    key = json.dumps(
        [CHIP_ID_VERSION, identity, window_json(window), chip_size, step, list(bands), whole],
        separators=(",", ":"),
    )
    return hashlib.sha1(key.encode()).hexdigest()[:24]


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
