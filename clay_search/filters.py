"""Spatial, time and attribute filters over one table version.

A :class:`Filters` holds a validated request. A :class:`FilterEngine` holds, per table version, the
bounds, times, sensors and labels as numpy arrays and the footprints as WKB. Filtering runs in two
steps: a cheap numpy prefilter (bounds overlap, time range, sensor, label), then the exact
``ST_Intersects`` test in DuckDB (spatial extension) on the prefiltered candidates only. Queries are
parameterised: user input never becomes SQL text. Chips without a footprint are excluded by
spatial filters; chips without a datetime are excluded by time filters unless ``undated=True``.
:meth:`FilterEngine.explain` says how many chips each part of a filter removes.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from clay_search.errors import DependencyError, QueryError
from clay_search.geo import bbox_geometry, check_bbox, parse_geometry

#: Columns the engine needs from the chips table.
FILTER_COLUMNS = ["minx", "miny", "maxx", "maxy", "datetime", "sensor", "label", "geometry"]
#: Optional columns written by predictions; ``pred_label``/``min_pred_score`` filter on them.
PREDICTION_COLUMNS = ("pred_label", "pred_score")
#: The quality score column written at ingest (``max_recon_error`` filters on it).
QUALITY_COLUMN = "recon_error"


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
        raise DependencyError(
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


def _as_number(value: Any, name: str) -> float:
    """``value`` as a float; :class:`QueryError` naming the filter ``name`` if it is not one."""
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise QueryError(f"{name} must be a number; got {value!r}") from e


def _as_set(value: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        vals: tuple = (value,)
    elif isinstance(value, Sequence | set | frozenset | np.ndarray):
        vals = tuple(value)
    else:
        vals = ()
    if not vals or not all(isinstance(v, str) for v in vals):
        raise QueryError(f"{name} must be a name or a list of names; got {value!r}")
    return vals


class FilterKeywords(TypedDict, total=False):
    """The keywords of :class:`Filters`, accepted by every :class:`~clay_search.store.Store`
    query method next to (or instead of) ``filters=Filters(...)``."""

    bbox: Sequence[float] | None
    geometry: Any
    start: Any
    end: Any
    sensor: str | Sequence[str] | None
    label: str | Sequence[str] | None
    undated: bool
    pred_label: str | Sequence[str] | None
    min_pred_score: float | None
    max_recon_error: float | None


#: Names of the filter keywords (the fields of :class:`Filters`).
FILTER_KEYWORDS: tuple[str, ...] = tuple(FilterKeywords.__annotations__)


@dataclass(frozen=True)
class Filters:
    """A validated filter request: every part is optional and every given part must hold.

    - ``bbox`` (minx, miny, maxx, maxy in degrees) and ``geometry`` (shapely, GeoJSON dict or
      text, WKT or WKB; EPSG:4326 lon/lat) combine as their intersection (:attr:`area`); chips
      without a footprint never match an area.
    - ``start``/``end``: inclusive; dates, datetimes or ISO text; naive times are UTC; a bare
      date as ``end`` covers that day. Chips without a datetime are dropped by a time range
      unless ``undated=True`` ("also keep chips without a datetime").
    - ``sensor``, ``label``: a name or a list of names.
    - ``pred_label`` (a name or list) and ``min_pred_score`` apply to the ``pred_label`` and
      ``pred_score`` columns that predictions write; a store without them refuses these filters.
    - ``max_recon_error``: drop chips whose quality score (``recon_error``, the model's masked
      reconstruction error written at ingest; high = cloudy, broken or unusual) is above it.
      Chips without a score (weights without a decoder, ``--no-quality-score``, stores made
      before the column) are kept: the filter cannot judge them, and
      :meth:`FilterEngine.explain` counts them as ``unscored``.

    Invalid input raises :class:`~clay_search.errors.QueryError` saying what to fix.
    """

    bbox: tuple[float, float, float, float] | None = None
    geometry: BaseGeometry | None = None
    start: datetime | None = None
    end: datetime | None = None
    sensor: tuple[str, ...] | None = None
    label: tuple[str, ...] | None = None
    undated: bool = False
    pred_label: tuple[str, ...] | None = None
    min_pred_score: float | None = None
    max_recon_error: float | None = None

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)
        if self.bbox is not None:
            put("bbox", check_bbox(self.bbox))
        if self.geometry is not None:
            put("geometry", parse_geometry(self.geometry))
        area = self.area
        if (
            self.bbox is not None
            and self.geometry is not None
            and area is not None
            and area.is_empty
        ):
            raise QueryError("the bbox and the geometry do not overlap: nothing can match")
        if self.start is not None:
            put("start", _as_utc(self.start, end=False))
        if self.end is not None:
            put("end", _as_utc(self.end, end=True))
        if self.start is not None and self.end is not None and self.start > self.end:
            raise QueryError(
                f"start {self.start.isoformat()} is after end {self.end.isoformat()}; swap them"
            )
        if not isinstance(self.undated, bool | np.bool_):
            raise QueryError(f"undated must be True or False; got {self.undated!r}")
        put("undated", bool(self.undated))
        put("sensor", _as_set(self.sensor, "sensor"))
        put("label", _as_set(self.label, "label"))
        put("pred_label", _as_set(self.pred_label, "pred_label"))
        if self.min_pred_score is not None:
            score = _as_number(self.min_pred_score, "min_pred_score")
            if score != score:
                raise QueryError("min_pred_score is NaN; give a number like 0.5")
            put("min_pred_score", score)
        if self.max_recon_error is not None:
            limit = _as_number(self.max_recon_error, "max_recon_error")
            if limit != limit or limit < 0:
                raise QueryError(
                    f"max_recon_error {self.max_recon_error!r} must be a number >= 0 (the "
                    "recon_error column's units), e.g. 0.5"
                )
            put("max_recon_error", limit)

    @classmethod
    def of(cls, filters: Filters | None = None, **keywords: Any) -> Filters:
        """``filters`` with ``keywords`` (the :class:`FilterKeywords`) set on top of it.

        What every query method calls: ``store.search(ids, filters=f)``, ``store.search(ids,
        bbox=...)`` and both together (keywords that are not ``None`` win) mean the same thing.
        """
        unknown = sorted(set(keywords) - set(FILTER_KEYWORDS))
        if unknown:
            raise QueryError(
                f"unknown filter {', '.join(unknown)}; filters are {', '.join(FILTER_KEYWORDS)}"
            )
        if filters is not None and not isinstance(filters, Filters):
            raise QueryError(
                f"filters must be a clay_search.filters.Filters, got {type(filters).__name__}"
            )
        if filters is None:
            return cls(**keywords)
        given = {k: v for k, v in keywords.items() if v is not None}  # None: not given
        return dataclasses.replace(filters, **given) if given else filters

    @property
    def area(self) -> BaseGeometry | None:
        """The query area: the bbox's box, the geometry, or their intersection."""
        box_geom = None if self.bbox is None else bbox_geometry(self.bbox)
        if box_geom is None or self.geometry is None:
            return box_geom if self.geometry is None else self.geometry
        return box_geom.intersection(self.geometry)

    @property
    def has_time(self) -> bool:
        """Whether a time range is set."""
        return self.start is not None or self.end is not None

    @property
    def empty(self) -> bool:
        """Whether no filter is set (``undated`` alone filters nothing)."""
        return all(getattr(self, name) is None for name in _PARTS)

    def to_dict(self) -> dict:
        """JSON-able description (recorded with results)."""
        return {
            "bbox": None if self.bbox is None else list(self.bbox),
            "geometry": None if self.geometry is None else self.geometry.wkt,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "sensor": list(self.sensor) if self.sensor else None,
            "label": list(self.label) if self.label else None,
            "undated": self.undated,
            "pred_label": list(self.pred_label) if self.pred_label else None,
            "min_pred_score": self.min_pred_score,
            "max_recon_error": self.max_recon_error,
        }

    def describe(self) -> str:
        """A short human summary, e.g. ``2020-01-01..2020-12-31 (+undated), sensor=naip``."""
        out = []
        if self.has_time:
            start = "" if self.start is None else self.start.date().isoformat()
            end = "" if self.end is None else self.end.date().isoformat()
            out.append(f"{start}..{end}" + (" (+undated)" if self.undated else ""))
        for name in ("sensor", "label", "pred_label"):
            values = getattr(self, name)
            if values:
                out.append(f"{name}=" + "|".join(values))
        if self.min_pred_score is not None:
            out.append(f"pred_score>={self.min_pred_score:g}")
        if self.max_recon_error is not None:
            out.append(f"recon_error<={self.max_recon_error:g}")
        if self.bbox is not None:
            out.append("bbox=" + ",".join(f"{v:.4g}" for v in self.bbox))
        if self.geometry is not None:
            out.append(f"area ({self.geometry.geom_type})")
        return ", ".join(out) or "no filters"

    def parts(self) -> dict[str, Filters]:
        """One single-part filter per part that is set, keyed ``area``, ``time``, ``sensor``,
        ``label``, ``pred_label``, ``pred_score``, ``recon_error`` (what
        :meth:`FilterEngine.explain` counts)."""
        out: dict[str, Filters] = {}
        if self.bbox is not None or self.geometry is not None:
            out["area"] = Filters(bbox=self.bbox, geometry=self.geometry)
        if self.has_time:
            out["time"] = Filters(start=self.start, end=self.end, undated=self.undated)
        for name in ("sensor", "label", "pred_label"):
            if getattr(self, name) is not None:
                out[name] = Filters(**{name: getattr(self, name)})
        if self.min_pred_score is not None:
            out["pred_score"] = Filters(min_pred_score=self.min_pred_score)
        if self.max_recon_error is not None:
            out["recon_error"] = Filters(max_recon_error=self.max_recon_error)
        return out


_PARTS = (
    "bbox",
    "geometry",
    "start",
    "end",
    "sensor",
    "label",
    "pred_label",
    "min_pred_score",
    "max_recon_error",
)


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
        for name in ("sensor", "label", *PREDICTION_COLUMNS[:1]):
            if name not in table.column_names:
                continue
            enc = table.column(name).combine_chunks().cast(pa.string()).dictionary_encode()
            self._codes[name] = (
                enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64),
                enc.dictionary.to_pylist(),
            )
        score = PREDICTION_COLUMNS[1]
        self.pred_score = _float_column(table, score) if score in table.column_names else None
        #: quality scores (NaN: not scored); None when the table has no such column
        self.recon_error = (
            _float_column(table, QUALITY_COLUMN) if QUALITY_COLUMN in table.column_names else None
        )
        self.geometry = table.column("geometry").combine_chunks()
        self.has_geom = ~np.asarray(self.geometry.is_null().to_numpy(zero_copy_only=False))
        self._con: Any = None  # a DuckDB connection with the spatial extension, made on first use
        self._lock = threading.Lock()

    def _attr_mask(self, name: str, values: tuple[str, ...]) -> np.ndarray:
        if name not in self._codes:
            raise QueryError(
                f"this table version has no {name!r} column, so it cannot filter on it; "
                "write predictions first (`clay-search predict ...`) or drop the filter"
            )
        codes, names = self._codes[name]
        wanted = [i for i, v in enumerate(names) if v in set(values)]
        return np.isin(codes, np.array(wanted, dtype=np.int64))

    def prefilter(self, f: Filters) -> np.ndarray:
        """Boolean mask of rows passing the cheap tests (bounds overlap, time, attributes)."""
        mask = np.ones(self.n, dtype=bool)
        area = f.area
        if area is not None:
            qminx, qminy, qmaxx, qmaxy = area.bounds
            with np.errstate(invalid="ignore"):
                mask &= self.has_geom & (self.maxx >= qminx) & (self.minx <= qmaxx)
                mask &= (self.maxy >= qminy) & (self.miny <= qmaxy)
        if f.has_time:
            in_range = self.has_time.copy()
            if f.start is not None:
                in_range &= self.time_us >= _us(f.start)
            if f.end is not None:
                in_range &= self.time_us <= _us(f.end)
            mask &= (in_range | ~self.has_time) if f.undated else in_range
        for name in ("sensor", "label", "pred_label"):
            values = getattr(f, name)
            if values is not None:
                mask &= self._attr_mask(name, values)
        if f.min_pred_score is not None:
            if self.pred_score is None:
                raise QueryError(
                    "this table version has no 'pred_score' column, so min_pred_score cannot "
                    "apply; write predictions first (`clay-search predict ...`) or drop it"
                )
            with np.errstate(invalid="ignore"):
                mask &= self.pred_score >= f.min_pred_score  # NaN (no prediction) fails
        if f.max_recon_error is not None and self.recon_error is not None:
            with np.errstate(invalid="ignore"):
                mask &= ~(self.recon_error > f.max_recon_error)  # NaN (not scored) is kept
        return mask

    @property
    def unscored(self) -> int:
        """Chips without a quality score (all of them when the table has no ``recon_error``)."""
        if self.recon_error is None:
            return self.n
        return int(np.isnan(self.recon_error).sum())

    def explain(self, f: Filters) -> dict:
        """How many chips ``f`` keeps and, per part, how many that part alone removes.

        ``{"total", "matched", "removed": {part: count}, "undated": count}``; ``undated`` is the
        number of chips without a datetime that the time range removed (0 with ``undated=True``).
        With ``max_recon_error`` set, ``unscored`` is the number of chips it kept because they
        have no quality score.
        The parts overlap, so ``removed`` need not add up to ``total - matched``.
        """
        removed = {name: self.n - len(self.rows(part)) for name, part in f.parts().items()}
        dropped_undated = int((~self.has_time).sum()) if f.has_time and not f.undated else 0
        out = {
            "total": self.n,
            "matched": int(len(self.rows(f))) if not f.empty else self.n,
            "removed": removed,
            "undated": dropped_undated,
        }
        if f.max_recon_error is not None:
            out["unscored"] = self.unscored
        return out

    def rows(self, f: Filters) -> np.ndarray:
        """Row numbers (ascending) of the chips matching ``f`` exactly."""
        cand = np.flatnonzero(self.prefilter(f))
        area = f.area
        if area is None or len(cand) == 0:
            return cand
        if _is_box(area):
            # every footprint whose bounds lie inside the box intersects it: no exact test needed
            qminx, qminy, qmaxx, qmaxy = area.bounds
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
            unsure = self._intersects(unsure, area)
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
