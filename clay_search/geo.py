"""Small geometry helpers: parsing query geometries, validating boxes, and the one footprint
function (pixel windows of a grid to lon/lat (Multi)Polygons in [-180, 180] x [-90, 90])."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from clay_search.errors import QueryError


def check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """A validated ``(minx, miny, maxx, maxy)`` in degrees (lon, lat), or :class:`QueryError`."""
    try:
        vals = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise QueryError(f"bbox must be four numbers minx,miny,maxx,maxy; got {bbox!r}") from e
    if len(vals) != 4:
        raise QueryError(f"bbox must be four numbers minx,miny,maxx,maxy; got {len(vals)}")
    minx, miny, maxx, maxy = vals
    if any(v != v for v in vals):
        raise QueryError("bbox holds NaN")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise QueryError(f"bbox longitudes must lie in [-180, 180] (EPSG:4326); got {minx}, {maxx}")
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise QueryError(f"bbox latitudes must lie in [-90, 90] (EPSG:4326); got {miny}, {maxy}")
    if minx > maxx:
        raise QueryError(
            f"bbox minx {minx} > maxx {maxx}: boxes across the antimeridian are not supported; "
            "split it into two searches (or swap the values)"
        )
    if miny > maxy:
        raise QueryError(f"bbox miny {miny} > maxy {maxy}; give minx,miny,maxx,maxy")
    return minx, miny, maxx, maxy


def _real(value: Any, where: str) -> float:
    """``value`` as a finite float, or :class:`QueryError` naming ``where`` it was."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise QueryError(
            f"{where} is {value!r} ({type(value).__name__}), not a real number; coordinates are "
            "longitude and latitude in degrees"
        )
    v = float(value)
    if not np.isfinite(v):
        raise QueryError(f"{where} is {v}; coordinates must be finite degrees")
    return v


def check_lonlat(lon: Any, lat: Any) -> tuple[float, float]:
    """A validated ``(lon, lat)`` point in degrees (EPSG:4326), or :class:`QueryError`."""
    lon, lat = _real(lon, "lon"), _real(lat, "lat")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise QueryError(f"lon {lon}, lat {lat} is out of range (EPSG:4326 degrees)")
    return lon, lat


def _check_coordinates(coords: Any, where: str = "coordinates", depth: int = 0) -> None:
    """Every leaf of GeoJSON ``coordinates`` is a finite real number (nesting at most 6 deep)."""
    if depth > 6:
        raise QueryError(f"{where} nests deeper than any GeoJSON geometry")
    if isinstance(coords, list | tuple):
        if coords and not isinstance(coords[0], list | tuple):
            for i, v in enumerate(coords):
                _real(v, f"{where}[{i}]")
            return
        for i, c in enumerate(coords):
            _check_coordinates(c, f"{where}[{i}]", depth + 1)
        return
    raise QueryError(f"{where} is {coords!r}, not a list of positions")


def _check_geojson(obj: dict, depth: int = 0) -> None:
    if depth > 8:
        raise QueryError("the query geometry nests too deeply")
    if obj.get("type") == "GeometryCollection":
        for g in obj.get("geometries") or []:
            if isinstance(g, dict):
                _check_geojson(g, depth + 1)
    elif "coordinates" in obj:
        _check_coordinates(obj["coordinates"])


def parse_geometry(geometry: Any) -> BaseGeometry:
    """A valid shapely geometry from shapely, GeoJSON (geometry, Feature or FeatureCollection:
    the union of its features; dict or text), WKT or WKB; in EPSG:4326 lon/lat (checked)."""
    try:
        if isinstance(geometry, BaseGeometry):
            geom = geometry
        elif isinstance(geometry, dict):
            if geometry.get("type") == "FeatureCollection":  # the union of its features
                parts = [parse_geometry(f) for f in geometry.get("features") or []]
                geom = shapely.union_all(parts) if parts else None
            else:
                if geometry.get("type") == "Feature":
                    geometry = geometry.get("geometry")
                if isinstance(geometry, dict):
                    _check_geojson(geometry)
                geom = shape(geometry)
        elif isinstance(geometry, bytes | bytearray | memoryview):
            geom = shapely.from_wkb(bytes(geometry))
        elif isinstance(geometry, str):
            text = geometry.strip()
            geom = (
                parse_geometry(json.loads(text)) if text.startswith("{") else shapely.from_wkt(text)
            )
        else:
            raise TypeError(type(geometry).__name__)
    except QueryError:
        raise
    except RecursionError as e:
        raise QueryError("the query geometry nests too deeply") from e
    except Exception as e:  # shapely raises several types for bad input
        raise QueryError(
            f"could not read the query geometry ({e}); give GeoJSON, WKT, WKB or a shapely geometry"
        ) from e
    if geom is None or geom.is_empty:
        raise QueryError("the query geometry is empty")
    if not geom.is_valid:
        raise QueryError(
            f"the query geometry is invalid ({shapely.is_valid_reason(geom)}); "
            "fix it (e.g. shapely.make_valid) and retry"
        )
    check_bbox(geom.bounds)
    return geom


def bbox_geometry(bbox: Sequence[float]) -> BaseGeometry:
    """The polygon of a validated bbox."""
    return box(*check_bbox(bbox))


class Footprint(NamedTuple):
    """A chip's footprint: WKB (Multi)Polygon in lon/lat, its bounds and a centre (or Nones)."""

    wkb: bytes | None
    bounds: tuple[float, float, float, float] | None
    centre: tuple[float, float] | None


NO_FOOTPRINT = Footprint(None, None, None)
WORLD = (-180.0, -90.0, 180.0, 90.0)
#: Grid cells per side sampled over a chip whose outline leaves the Earth (geostationary limb).
LIMB_GRID = 32


@functools.lru_cache(maxsize=64)
def _to_wgs84(crs_wkt: str):
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4326), always_xy=True)


def _project(crs, transform, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (col, row) points of the grid to lon/lat (inf where off the Earth)."""
    xs, ys = transform @ (cols.ravel(), rows.ravel())
    with np.errstate(all="ignore"):
        lon, lat = _to_wgs84(crs.to_wkt()).transform(
            np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        )
    lon = np.asarray(lon, dtype=np.float64).reshape(cols.shape)
    lat = np.asarray(lat, dtype=np.float64).reshape(cols.shape)
    bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lat) > 90 + 1e-9)
    lon[bad], lat[bad] = np.inf, np.inf
    return lon, lat


def _polygons(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of ``geom`` (a Polygon or MultiPolygon), or None."""
    if geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    parts = [p for g in parts for p in shapely.get_parts(g)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def wrap_world(geom: BaseGeometry) -> BaseGeometry | None:
    """``geom`` (lon/lat with continuous longitudes) cut at the antimeridian into [-180, 180].

    The part east of 180 (or west of -180) is shifted by 360 degrees, so a chip across the
    antimeridian becomes a MultiPolygon with one part on each side; latitudes are clipped to
    [-90, 90]. None when nothing is left.
    """
    minx = geom.bounds[0]
    shift = -360.0 * np.floor((minx + 180.0) / 360.0)
    if shift:
        geom = shapely.affinity.translate(geom, xoff=shift)
    pieces = []
    for k in (0, 1):
        part = geom.intersection(box(-180.0 + 360 * k, -90.0, 180.0 + 360 * k, 90.0))
        if not part.is_empty:
            pieces.append(shapely.affinity.translate(part, xoff=-360.0 * k) if k else part)
    if not pieces:
        return None
    out = pieces[0] if len(pieces) == 1 else shapely.union_all(pieces)
    return _polygons(out)


def _ring_geometry(lon: np.ndarray, lat: np.ndarray) -> BaseGeometry | None:
    """The polygon of a closed lon/lat ring (open: last point != first), made continuous.

    A ring that winds once around a pole (a polar chip) is closed over that pole.
    """
    u = np.unwrap(lon, period=360.0)
    step = (u[0] - u[-1] + 180.0) % 360.0 - 180.0
    total = u[-1] + step - u[0]
    if abs(total) > 180.0:  # the ring goes round a pole
        pole = 90.0 if float(np.mean(lat)) > 0 else -90.0
        end = u[0] + total
        xs = np.r_[u, end, end, u[0]]
        ys = np.r_[lat, lat[0], pole, pole]
    else:
        xs, ys = u, lat
    poly = shapely.Polygon(np.stack([xs, ys], axis=-1))
    if not poly.is_valid:
        poly = _polygons(poly)
        if poly is None:
            return None
    return wrap_world(poly)


def _limb_geometry(
    crs, transform, c0: float, r0: float, c1: float, r1: float
) -> BaseGeometry | None:
    """The on-Earth part of a window whose outline does not all project (geostationary limb).

    A ``LIMB_GRID`` x ``LIMB_GRID`` grid of cells over the window; cells whose four corners
    project are kept, each made continuous, and their union is cut at the antimeridian.
    """
    g = LIMB_GRID
    cc, rr = np.meshgrid(np.linspace(c0, c1, g + 1), np.linspace(r0, r1, g + 1))
    lon, lat = _project(crs, transform, cc, rr)
    corners = [
        (slice(0, -1), slice(0, -1)),
        (slice(0, -1), slice(1, None)),
        (slice(1, None), slice(1, None)),
        (slice(1, None), slice(0, -1)),
    ]
    qlon = np.stack([lon[a, b] for a, b in corners], -1).reshape(-1, 4)
    qlat = np.stack([lat[a, b] for a, b in corners], -1).reshape(-1, 4)
    ok = np.isfinite(qlon).all(1)
    if not ok.any():
        return None
    qlon, qlat = qlon[ok], qlat[ok]
    qlon = qlon[:, :1] + ((qlon - qlon[:, :1] + 180.0) % 360.0 - 180.0)  # each cell continuous
    qlon = qlon - 360.0 * np.floor((qlon.min(1, keepdims=True) + 180.0) / 360.0)
    cells = shapely.polygons(np.stack([qlon, qlat], axis=-1))
    cells = cells[shapely.is_valid(cells) & (shapely.area(cells) > 0)]
    if len(cells) == 0:
        return None
    return wrap_world(shapely.union_all(cells))


def _valid_extent(mask: np.ndarray, c0: float, r0: float, c1: float, r1: float):
    """The part of window (c0, r0, c1, r1) spanned by the valid pixels of ``mask`` [h, w]."""
    mask = np.asarray(mask, dtype=bool)
    if mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any():
        return c0, r0, c1, r1  # valid pixels on all four edges: the whole window (cheap)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    sy, sx = (r1 - r0) / mask.shape[0], (c1 - c0) / mask.shape[1]
    return (
        c0 + cols[0] * sx,
        r0 + rows[0] * sy,
        c0 + (cols[-1] + 1) * sx,
        r0 + (rows[-1] + 1) * sy,
    )


def footprints(
    crs,
    transform,
    windows: Sequence,
    *,
    size: tuple[int, int] | None = None,
    valid: Sequence[np.ndarray] | None = None,
    densify: int = 8,
) -> list[Footprint]:
    """The footprint in EPSG:4326 of each pixel window of one grid (the one footprint function).

    ``crs``/``transform``: the grid (rasterio CRS and affine); ``windows``: rasterio windows;
    ``size``: the raster's (width, height): windows are clipped to it, so padding past the edge
    gets no footprint; ``valid``: per window, the ``[h, w]`` mask of valid pixels as read (any
    resolution): the footprint covers the bounding box of the valid pixels only.
    Outlines are densified (``densify`` points per side) and projected; a chip across the
    antimeridian becomes a MultiPolygon cut at +-180, a chip round a pole is closed over it, a
    chip partly off the Earth (geostationary limb) gets the part that is on it; everything lies
    in [-180, 180] x [-90, 90]. Windows without a CRS, or wholly invalid/outside/off the Earth,
    get :data:`NO_FOOTPRINT`. The centre is the projected centre of the (valid) window, or a
    point inside the footprint where that is off the Earth.
    """
    n = len(windows)
    out: list[Footprint] = [NO_FOOTPRINT] * n
    if crs is None or n == 0:
        return out
    ext: list[tuple[float, float, float, float] | None] = []
    for i, w in enumerate(windows):
        x0, y0 = float(w.col_off), float(w.row_off)
        e: tuple[float, float, float, float] | None = (
            x0,
            y0,
            x0 + float(w.width),
            y0 + float(w.height),
        )
        if valid is not None and e is not None:
            e = _valid_extent(valid[i], *e)
        if size is not None and e is not None:
            width, height = size
            e = (max(e[0], 0.0), max(e[1], 0.0), min(e[2], float(width)), min(e[3], float(height)))
        if e is not None and (e[2] <= e[0] or e[3] <= e[1]):
            e = None
        ext.append(e)
    idx = np.array([i for i, e in enumerate(ext) if e is not None], dtype=np.int64)
    if len(idx) == 0:
        return out
    win = np.array([ext[i] for i in idx])
    c0, r0, c1, r1 = (win[:, k : k + 1] for k in range(4))
    t = np.linspace(0.0, 1.0, densify + 1)[:-1][None, :]
    full = np.ones_like(t)
    cols = np.concatenate([c0 + (c1 - c0) * t, c1 * full, c1 - (c1 - c0) * t, c0 * full], 1)
    rows = np.concatenate([r0 * full, r0 + (r1 - r0) * t, r1 * full, r1 - (r1 - r0) * t], 1)
    k = cols.shape[1]
    lon, lat = _project(
        crs,
        transform,
        np.concatenate([cols, (c0 + c1) / 2], 1),
        np.concatenate([rows, (r0 + r1) / 2], 1),
    )
    clon, clat = lon[:, k], lat[:, k]
    lon, lat = lon[:, :k], lat[:, :k]
    finite = np.isfinite(lon).all(1)
    with np.errstate(invalid="ignore"):
        jump = np.abs(np.diff(lon, axis=1, append=lon[:, :1])).max(1)
        simple = finite & (jump < 180.0) & (np.abs(lon) <= 180.0).all(1)
    geoms = np.empty(len(idx), dtype=object)
    if simple.any():
        polys = shapely.polygons(np.stack([lon[simple], lat[simple]], axis=-1))
        bad = ~shapely.is_valid(polys)
        if bad.any():
            polys[bad] = [_polygons(p) for p in polys[bad]]
        geoms[simple] = polys
    for j in np.flatnonzero(~simple).tolist():
        if finite[j]:
            geoms[j] = _ring_geometry(lon[j], lat[j])
        else:
            geoms[j] = _limb_geometry(crs, transform, *win[j])
    keep = [j for j in range(len(idx)) if geoms[j] is not None and not geoms[j].is_empty]
    if not keep:
        return out
    wkbs = shapely.to_wkb(geoms[keep])
    bounds = shapely.bounds(geoms[keep]).tolist()
    for m, j in enumerate(keep):
        if np.isfinite(clon[j]):
            centre = (float((clon[j] + 180.0) % 360.0 - 180.0), float(clat[j]))
        else:
            p = geoms[j].representative_point()
            centre = (float(p.x), float(p.y))
        out[int(idx[j])] = Footprint(wkbs[m], tuple(bounds[m]), centre)
    return out


def footprint(
    crs,
    transform,
    window,
    *,
    size: tuple[int, int] | None = None,
    valid: np.ndarray | None = None,
    densify: int = 8,
) -> Footprint:
    """:func:`footprints` of one window."""
    return footprints(
        crs,
        transform,
        [window],
        size=size,
        valid=None if valid is None else [valid],
        densify=densify,
    )[0]
