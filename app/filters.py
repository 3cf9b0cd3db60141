"""Search filters chosen in the sidebar, turned into keyword arguments of the Store API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from clay_search.errors import QueryError


@dataclass(frozen=True)
class Filters:
    """Date range, sensor, label and area; ``None`` means "any"."""

    start: date | None = None
    end: date | None = None
    sensor: tuple[str, ...] | None = None
    label: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None
    geometry: Any = None  # a shapely geometry (the drawn area)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Store.search`` / ``refine`` / ``chips`` (only those set)."""
        out: dict[str, Any] = {}
        if self.start is not None:
            out["start"] = datetime.combine(self.start, time.min, tzinfo=UTC)
        if self.end is not None:
            out["end"] = datetime.combine(self.end, time.max, tzinfo=UTC)
        if self.sensor:
            out["sensor"] = list(self.sensor)
        if self.label:
            out["label"] = list(self.label)
        if self.bbox is not None:
            out["bbox"] = self.bbox
        if self.geometry is not None:
            out["geometry"] = self.geometry
        return out

    def describe(self) -> str:
        """Short human summary, e.g. ``sensor=sentinel-2-l2a, 2020-01-01..``."""
        parts = []
        if self.start or self.end:
            parts.append(f"{self.start or ''}..{self.end or ''}")
        if self.sensor:
            parts.append("sensor=" + "|".join(self.sensor))
        if self.label:
            parts.append("label=" + "|".join(self.label))
        if self.bbox:
            parts.append("bbox=" + ",".join(f"{v:.4g}" for v in self.bbox))
        if self.geometry is not None:
            parts.append("drawn area")
        return ", ".join(parts) or "no filters"


def check_bbox(w: float, s: float, e: float, n: float) -> tuple[float, float, float, float]:
    """Validate a lon/lat box; QueryError with a clear message if it is not one."""
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise QueryError(
            f"box ({w}, {s}, {e}, {n}) is outside lon -180..180 / lat -90..90 (EPSG:4326)"
        )
    if w >= e or s >= n:
        raise QueryError(f"box ({w}, {s}, {e}, {n}) is empty: west < east and south < north")
    return (float(w), float(s), float(e), float(n))


def parse_area(text: str) -> Any:
    """A polygon drawn elsewhere and pasted as WKT or GeoJSON (EPSG:4326) -> shapely geometry."""
    import shapely
    from shapely.geometry import shape

    text = (text or "").strip()
    if not text:
        raise QueryError("the area is empty; paste a WKT or GeoJSON polygon in lon/lat")
    try:
        if text.startswith("{"):
            doc = json.loads(text)
            if doc.get("type") == "FeatureCollection":
                geoms = [shape(f["geometry"]) for f in doc.get("features", [])]
                geom = shapely.union_all(geoms) if geoms else None
            elif doc.get("type") == "Feature":
                geom = shape(doc["geometry"])
            else:
                geom = shape(doc)
        else:
            geom = shapely.from_wkt(text)
    except (ValueError, KeyError, TypeError, AttributeError, shapely.errors.ShapelyError) as e:
        raise QueryError(f"could not read the area as WKT or GeoJSON ({e})") from e
    if geom is None or geom.is_empty or geom.geom_type not in {"Polygon", "MultiPolygon"}:
        kind = "nothing" if geom is None else geom.geom_type
        raise QueryError(f"the area must be a Polygon or MultiPolygon, got {kind}")
    w, s, e, n = geom.bounds
    check_bbox(w, s, e, n)
    return geom
