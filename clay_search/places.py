"""Places: which chips show the same piece of ground on different dates.

A *place* is one chip cell of one pixel grid. Chips of sources that share a grid (same CRS and
pixel grid, as in a time series of one scene) and the same window are one place and get the same
``place_id``: a hash of the CRS text, the chip's bounds in that CRS snapped to the pixel lattice
(multiples of the pixel size: float noise and sub-pixel misregistration under half a pixel, as
between NAIP dates of one quarter quad, do not split a place) and the chip size in pixels. The id
does not depend on the date, the file or the bands.

Stores written before the ``place_id`` column existed get the same ids computed on read from the
stored ``crs``, ``window`` and footprint (the footprint's vertices projected back to the CRS):
see :func:`place_ids`. Chips without a CRS or footprint have no place id.

Chips of different grids (other scenes, other CRS) are never one place by id; they are paired by
footprint overlap instead (:func:`overlap_pairs`: intersection over union above a threshold, in
DuckDB spatial).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

PLACE_ID_VERSION = "1"
#: Bounds are rounded to multiples of this fraction of the pixel size before hashing.
GRID_TOLERANCE = 1.0
#: Default intersection-over-union for pairing chips of different grids.
DEFAULT_MIN_IOU = 0.5

_local = threading.local()


def place_id_from_bounds(
    crs: str | None, bounds: Sequence[float], width: int, height: int
) -> str | None:
    """Place id of a ``width`` x ``height`` px chip with ``bounds`` (minx, miny, maxx, maxy)
    in ``crs`` (its text as stored in the ``crs`` column). ``None`` without a CRS."""
    if not crs or width <= 0 or height <= 0 or bounds is None:
        return None
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not all(np.isfinite([minx, miny, maxx, maxy])):
        return None
    q = GRID_TOLERANCE * max((maxx - minx) / width, (maxy - miny) / height)
    if q <= 0:
        return None
    # the rounding step itself is rounded (to 4 significant digits) so that it is the same for
    # every chip of one grid even with float noise in the bounds
    q_key = float(f"{q:.4g}")
    cells = [int(round(v / q_key)) for v in (minx, miny, maxx, maxy)]
    key = json.dumps(
        [PLACE_ID_VERSION, crs, q_key, cells, int(width), int(height)], separators=(",", ":")
    )
    return "p" + hashlib.sha1(key.encode()).hexdigest()[:23]


def place_id_for_window(crs, transform, window) -> str | None:
    """Place id of a pixel ``window`` on a grid (rasterio ``crs`` and affine ``transform``).

    This is what ingest stores in the ``place_id`` column.
    """
    if crs is None or transform is None:
        return None
    c0, r0 = float(window.col_off), float(window.row_off)
    c1, r1 = c0 + float(window.width), r0 + float(window.height)
    xs, ys = transform @ (np.array([c0, c1, c1, c0]), np.array([r0, r0, r1, r1]))
    bounds = (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys)))
    return place_id_from_bounds(crs.to_string(), bounds, int(window.width), int(window.height))


@functools.lru_cache(maxsize=64)
def _from_wgs84(crs_text: str):
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_user_input(crs_text), always_xy=True)


def place_ids(attrs: pa.Table) -> np.ndarray:
    """The place id of every row of a chips table (object array; ``None`` where unknown).

    Uses the stored ``place_id`` column where it is filled and computes the rest from ``crs``,
    ``window`` and ``geometry`` (the same value ingest would have stored).
    """
    import shapely

    n = attrs.num_rows
    out = np.full(n, None, dtype=object)
    if "place_id" in attrs.column_names:
        out[:] = attrs.column("place_id").to_pylist()
    todo = np.flatnonzero(np.array([v is None for v in out], dtype=bool))
    if not len(todo) or "crs" not in attrs.column_names:
        return out
    crs = attrs.column("crs").to_pylist()
    win = attrs.column("window").to_pylist()
    wkb = attrs.column("geometry").to_pylist()
    by_crs: dict[str, list[int]] = {}
    for i in todo.tolist():
        if crs[i] and win[i] and wkb[i] is not None:
            by_crs.setdefault(crs[i], []).append(i)
    for text, rows in by_crs.items():
        try:
            tr = _from_wgs84(text)
        except Exception:  # noqa: BLE001 - an unreadable CRS: no place id for these chips
            continue
        geoms = shapely.from_wkb([wkb[i] for i in rows])
        for i, g in zip(rows, geoms, strict=True):
            xy = shapely.get_coordinates(g)
            if not len(xy):
                continue
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            w = json.loads(win[i])
            out[i] = place_id_from_bounds(
                text,
                (np.min(x), np.min(y), np.max(x), np.max(y)),
                int(w["width"]),
                int(w["height"]),
            )
    return out


def overlap_pairs(
    wkb_a: Sequence[bytes],
    wkb_b: Sequence[bytes],
    *,
    min_iou: float = DEFAULT_MIN_IOU,
    best_only: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j, iou)`` of footprints (WKB, EPSG:4326) of ``a`` and ``b`` that overlap with
    intersection over union >= ``min_iou``; with ``best_only`` each ``i`` keeps its best ``j``.

    Runs in DuckDB spatial (``ST_Intersects`` join, areas in degrees², fine for chip-sized
    footprints away from the poles).
    """
    import shapely

    from clay_search.filters import spatial_connection

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if not len(wkb_a) or not len(wkb_b):
        return empty

    def table(name: str, wkb: Sequence[bytes]) -> pa.Table:
        geoms = shapely.from_wkb(np.array(list(wkb), dtype=object))
        bounds = shapely.bounds(geoms)  # NaN where missing
        cols = {
            name: pa.array(np.arange(len(wkb)), pa.int64()),
            "wkb": pa.array(list(wkb), pa.binary()),
        }
        for k, c in enumerate(("minx", "miny", "maxx", "maxy")):
            cols[c] = pa.array(bounds[:, k], pa.float64(), from_pandas=True)
        return pa.table(cols)

    a, b = table("i", wkb_a), table("j", wkb_b)
    if getattr(_local, "con", None) is None:
        _local.con = spatial_connection()  # loading the extension takes ~1 s: once per thread
    con = _local.con
    try:
        con.register("clay_a", a)
        con.register("clay_b", b)
        out = con.execute(
            """
            WITH cand AS (  -- bounding boxes overlap (a range join), then the exact test
                   SELECT a.i, b.j, ST_GeomFromWKB(a.wkb) AS ga, ST_GeomFromWKB(b.wkb) AS gb
                   FROM clay_a a JOIN clay_b b
                     ON a.maxx >= b.minx AND a.minx <= b.maxx
                    AND a.maxy >= b.miny AND a.miny <= b.maxy
                   WHERE a.wkb IS NOT NULL AND b.wkb IS NOT NULL),
                 pairs AS (
                   SELECT i, j, ST_Area(ST_Intersection(ga, gb)) AS inter,
                          ST_Area(ga) AS area_a, ST_Area(gb) AS area_b
                   FROM cand WHERE ST_Intersects(ga, gb)),
                 scored AS (
                   SELECT i, j, inter / NULLIF(area_a + area_b - inter, 0) AS iou FROM pairs)
            SELECT i, j, iou FROM scored WHERE iou >= ?
            QUALIFY NOT ? OR row_number() OVER (PARTITION BY i ORDER BY iou DESC, j) = 1
            ORDER BY i, j
            """,
            [float(min_iou), bool(best_only)],
        ).fetchnumpy()
    finally:
        con.unregister("clay_a")
        con.unregister("clay_b")
    return (
        np.asarray(out["i"], np.int64),
        np.asarray(out["j"], np.int64),
        np.asarray(out["iou"], np.float64),
    )
