"""Spatial, time and attribute filters over one table version.

A :class:`Filters` holds a validated request. A :class:`FilterEngine` holds, per table version, the
bounds, times, sensors and labels as numpy arrays and the footprints as WKB. Filtering runs in two
steps: a cheap numpy prefilter (bounds overlap, time range, sensor, label), then the exact
``ST_Intersects`` test in DuckDB (spatial extension) on the prefiltered candidates only. Queries are
parameterised: user input never becomes SQL text. Chips without a footprint are excluded by
spatial filters; chips without a datetime are excluded by time filters.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from clay_search.errors import QueryError
from clay_search.geo import bbox_geometry, check_bbox, parse_geometry

#: Columns the engine needs from the chips table.
FILTER_COLUMNS = ["minx", "miny", "maxx", "maxy", "datetime", "sensor", "label", "geometry"]


def spatial_extension_path() -> Path:
    """The DuckDB spatial extension file shipped by the ``duckdb-extension-spatial`` package."""
    import duckdb
    import duckdb_extension_spatial

    root = Path(duckdb_extension_spatial.__file__).parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    if wanted.exists():
        return wanted
    found = sorted(root.glob("*/spatial.duckdb_extension"))
    if not found:
        raise RuntimeError(
            f"no DuckDB spatial extension under {root}; reinstall duckdb-extension-spatial "
            f"matching duckdb {duckdb.__version__}"
        )
    return found[-1]


def spatial_connection():
    """An in-memory DuckDB connection with the spatial extension loaded (never downloaded)."""
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute(f"LOAD '{spatial_extension_path().as_posix()}'")  # a package path, not user input
    return con


def _as_utc(value: Any, *, end: bool) -> datetime:
    from clay_search.dates import to_utc

    return to_utc(value, end=end, what="end" if end else "start")


def _as_set(value: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    vals = (value,) if isinstance(value, str) else tuple(value)
    if not vals or not all(isinstance(v, str) for v in vals):
        raise QueryError(f"{name} must be a name or a list of names; got {value!r}")
    return vals


@dataclass(frozen=True)
class Filters:
    """A validated filter request (all parts optional; all given parts must hold)."""

    geometry: BaseGeometry | None = None
    start: datetime | None = None
    end: datetime | None = None
    sensor: tuple[str, ...] | None = None
    label: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        """Whether no filter is set."""
        return all(
            v is None for v in (self.geometry, self.start, self.end, self.sensor, self.label)
        )

    def to_dict(self) -> dict:
        """JSON-able description (recorded with results)."""
        return {
            "geometry": None if self.geometry is None else self.geometry.wkt,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "sensor": list(self.sensor) if self.sensor else None,
            "label": list(self.label) if self.label else None,
        }


def make_filters(
    *,
    bbox: Sequence[float] | None = None,
    geometry: Any = None,
    start: Any = None,
    end: Any = None,
    sensor: str | Sequence[str] | None = None,
    label: str | Sequence[str] | None = None,
) -> Filters:
    """Validate filter arguments (bbox and geometry combine as their intersection).

    ``start``/``end`` are inclusive; naive times are UTC; a bare date as ``end`` covers that day.
    """
    geom = None
    if bbox is not None:
        geom = bbox_geometry(check_bbox(bbox))
    if geometry is not None:
        g = parse_geometry(geometry)
        geom = g if geom is None else geom.intersection(g)
        if geom.is_empty:
            raise QueryError("the bbox and the geometry do not overlap: nothing can match")
    s = None if start is None else _as_utc(start, end=False)
    e = None if end is None else _as_utc(end, end=True)
    if s is not None and e is not None and s > e:
        raise QueryError(f"start {s.isoformat()} is after end {e.isoformat()}; swap them")
    return Filters(geom, s, e, _as_set(sensor, "sensor"), _as_set(label, "label"))


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks().cast(pa.float64())
    return col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN


class FilterEngine:
    """Filter state for one table version: arrays in memory, DuckDB for exact geometry tests."""

    def __init__(self, table: pa.Table) -> None:
        self.n = table.num_rows
        self.minx = _float_column(table, "minx")
        self.miny = _float_column(table, "miny")
        self.maxx = _float_column(table, "maxx")
        self.maxy = _float_column(table, "maxy")
        ts = table.column("datetime").combine_chunks().cast(pa.int64())
        self.has_time = ~np.asarray(ts.is_null().to_numpy(zero_copy_only=False))
        self.time_us = ts.fill_null(0).to_numpy(zero_copy_only=False)
        self._codes = {}
        for name in ("sensor", "label"):
            enc = table.column(name).combine_chunks().dictionary_encode()
            self._codes[name] = (
                enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64),
                enc.dictionary.to_pylist(),
            )
        self.geometry = table.column("geometry").combine_chunks()
        self.has_geom = ~np.asarray(self.geometry.is_null().to_numpy(zero_copy_only=False))
        self._con = None
        self._lock = threading.Lock()

    def _attr_mask(self, name: str, values: tuple[str, ...]) -> np.ndarray:
        codes, names = self._codes[name]
        wanted = [i for i, v in enumerate(names) if v in set(values)]
        return np.isin(codes, np.array(wanted, dtype=np.int64))

    def prefilter(self, f: Filters) -> np.ndarray:
        """Boolean mask of rows passing the cheap tests (bounds overlap, time, sensor, label)."""
        mask = np.ones(self.n, dtype=bool)
        if f.geometry is not None:
            qminx, qminy, qmaxx, qmaxy = f.geometry.bounds
            with np.errstate(invalid="ignore"):
                mask &= self.has_geom & (self.maxx >= qminx) & (self.minx <= qmaxx)
                mask &= (self.maxy >= qminy) & (self.miny <= qmaxy)
        if f.start is not None or f.end is not None:
            mask &= self.has_time
            if f.start is not None:
                mask &= self.time_us >= _us(f.start)
            if f.end is not None:
                mask &= self.time_us <= _us(f.end)
        if f.sensor is not None:
            mask &= self._attr_mask("sensor", f.sensor)
        if f.label is not None:
            mask &= self._attr_mask("label", f.label)
        return mask

    def rows(self, f: Filters) -> np.ndarray:
        """Row numbers (ascending) of the chips matching ``f`` exactly."""
        cand = np.flatnonzero(self.prefilter(f))
        if f.geometry is None or len(cand) == 0:
            return cand
        if _is_box(f.geometry):
            # every footprint whose bounds lie inside the box intersects it: no exact test needed
            qminx, qminy, qmaxx, qmaxy = f.geometry.bounds
            inside = (
                (self.minx[cand] >= qminx)
                & (self.maxx[cand] <= qmaxx)
                & (self.miny[cand] >= qminy)
                & (self.maxy[cand] <= qmaxy)
            )
            sure, unsure = cand[inside], cand[~inside]
        else:
            sure, unsure = cand[:0], cand
        if len(unsure):
            unsure = self._intersects(unsure, f.geometry)
        return np.sort(np.concatenate([sure, unsure]))

    def _intersects(self, rows: np.ndarray, geom: BaseGeometry) -> np.ndarray:
        cand = pa.table(
            {
                "row": pa.array(rows, pa.int64()),
                "wkb": self.geometry.take(pa.array(rows, pa.int64())),
            }
        )
        with self._lock:
            if self._con is None:
                self._con = spatial_connection()
            con = self._con
            con.register("clay_candidates", cand)
            try:
                out = con.execute(
                    "SELECT row FROM clay_candidates "
                    "WHERE ST_Intersects(ST_GeomFromWKB(wkb), ST_GeomFromWKB(?))",
                    [shapely.to_wkb(geom)],
                ).fetchnumpy()["row"]
            finally:
                con.unregister("clay_candidates")
        return np.asarray(out, dtype=np.int64)


def _is_box(geom: BaseGeometry) -> bool:
    return (
        geom.geom_type == "Polygon"
        and abs(geom.area - shapely.box(*geom.bounds).area) <= (1e-12 * max(1.0, geom.area))
        and len(geom.exterior.coords) == 5
        and not geom.interiors
    )


def _us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
