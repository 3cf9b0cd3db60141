"""Small geometry helpers: parsing query geometries, validating boxes, footprints in EPSG:4326."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import shapely
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


def footprint_4326(bounds: Sequence[float], crs: Any) -> BaseGeometry:
    """The footprint polygon of native ``bounds`` (left, bottom, right, top) in EPSG:4326."""
    from pyproj import Transformer

    left, bottom, right, top = bounds
    ring = [(left, bottom), (right, bottom), (right, top), (left, top)]
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs, ys = tr.transform([p[0] for p in ring], [p[1] for p in ring])
    return shapely.Polygon(list(zip(xs, ys, strict=True)))
