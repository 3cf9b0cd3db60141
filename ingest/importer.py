"""Import embeddings made elsewhere (GeoParquet / Parquet files) into a store, streaming.

Layouts read (see ``docs/interop.md``):

- **Clay** v0/v1/v1.5 GeoParquet: ``embeddings`` (or ``embedding``), ``geometry`` (WKB),
  ``date``/``datetime``, ``source_url``, optional ``id``/``index``.
- **emb** convention (Earth Index / geo-embeddings): ``id``, ``embedding``, ``geometry``; the
  model, licence, providers, time range and quantisation come from the ``emb`` metadata.
- **Major TOM** embeddings: ``unique_id``, ``embedding``, ``timestamp``, ``product_id``,
  ``grid_cell``, ``geometry`` (WKB, EPSG:4326) or, without it, the footprint of the grid cell
  (or the ``centre_lon``/``centre_lat`` point).
- **plain** Parquet/GeoParquet: a vector column named with ``embedding_column``.
- files written by ``clay-search export`` (all chips columns kept).

Files are read one row group batch at a time (memory bounded by the batch, not the file).
Rows with a missing or malformed embedding are skipped and counted by reason in the run
manifest ``<store>/runs/import-<run_id>.json``; ``strict=True`` checks every file first and
writes nothing if any row is bad. Chip ids come from the file (``chip_id``/``id``/``unique_id``)
or hash source, date and footprint, so re-importing adds nothing and an interrupted import
resumes where its last commit ended.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from clay_search.dates import to_utc
from clay_search.emb import EmbInfo, read_emb
from clay_search.errors import (
    BadRowsError,
    CRSContradictionError,
    ImportFormatError,
    InvalidDateError,
    QueryError,
    SourceNotFoundError,
    SourceReadError,
)
from clay_search.schema import chips_schema

if TYPE_CHECKING:
    from clay_search.location import RemotePath
    from clay_search.store.layout import StoreInfo

EMBEDDING_COLUMNS = ("embedding", "embeddings", "vector", "emb")
ID_COLUMNS = ("chip_id", "id", "unique_id")
DATE_COLUMNS = ("datetime", "date", "timestamp", "start_datetime", "acquired")
SOURCE_COLUMNS = ("source_url", "source", "parquet_url")
ITEM_COLUMNS = ("item_id", "product_id")
LONLAT_COLUMNS = (
    ("centre_lon", "centre_lat"),
    ("center_lon", "center_lat"),
    ("centroid_lon", "centroid_lat"),
    ("lon", "lat"),
    ("longitude", "latitude"),
)
MODEL_ID_KEYS = (b"model_id", b"clay_search.model_id", b"clay_model_id")
#: Chips columns copied as they are when a file has them (files from ``clay-search export``).
PASSTHROUGH = ("sensor", "gsd", "crs", "window", "label")
#: Major TOM's grid spacing (km) and the Earth radius its grid uses.
MAJORTOM_KM = 10.0
_EARTH_RADIUS_KM = 6378.137
#: Rows per read batch, and rows (or embedding bytes) per LanceDB commit.
BATCH_ROWS = 16_384
COMMIT_BYTES = 128 * 2**20
EXAMPLES_KEPT = 20


# -- file layout ---------------------------------------------------------------------------------
@dataclass
class FileLayout:
    """How one file's columns map to the chips table (found by :func:`inspect_file`)."""

    path: Path
    format: str
    embedding: str
    rows: int
    row_groups: int
    geometry: str | None = None
    encoding: str = "WKB"
    lonlat: tuple[str, str] | None = None
    grid_cell: str | None = None
    date: str | None = None
    chip_id: str | None = None
    source: str | None = None
    item_id: str | None = None
    passthrough: list[str] = field(default_factory=list)
    utm_crs: str | None = None
    crs: Any = None  # pyproj.CRS of the coordinates (None: lon/lat degrees)
    crs_name: str = "OGC:CRS84"
    crs_declared: str | None = None
    model_id: str | None = None
    emb: EmbInfo | None = None
    dim: int | None = None
    value_type: str = "float32"
    scale: float | None = None
    offset: float | None = None
    default_datetime: str | None = None
    point_size: float | None = None  # metres: square footprints around point geometries

    @property
    def columns(self) -> list[str]:
        """The columns read from the file."""
        cols = [
            self.embedding,
            self.geometry,
            self.grid_cell,
            self.date,
            self.chip_id,
            self.source,
            self.item_id,
            self.utm_crs,
            *(self.lonlat or ()),
            *self.passthrough,
        ]
        return list(dict.fromkeys(c for c in cols if c))

    def describe(self) -> dict:
        """JSON-able summary (kept in the run manifest)."""
        return {
            "file": str(self.path),
            "format": self.format,
            "rows": self.rows,
            "row_groups": self.row_groups,
            "embedding_column": self.embedding,
            "dim": self.dim,
            "values": self.value_type,
            "scale": self.scale,
            "offset": self.offset,
            "geometry": self.geometry
            or ("grid cell" if self.grid_cell else ("lon/lat columns" if self.lonlat else None)),
            "crs": self.crs_name,
            "crs_declared": self.crs_declared,
            "date_column": self.date,
            "default_datetime": self.default_datetime,
            "model_id": self.model_id,
            "point_size_m": self.point_size,
        }


def expand_sources(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files from a file, a folder (its .parquet/.gpq/.geoparquet files), a glob or a list."""
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    out: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in {".parquet", ".gpq", ".geoparquet"}
            )
            if not found:
                raise SourceNotFoundError(f"folder {p} holds no .parquet/.gpq/.geoparquet files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(f) for f in globlib.glob(text, recursive=True))
            if not found:
                raise SourceNotFoundError(f"no file matches {text!r}")
            out.extend(found)
        else:
            raise SourceNotFoundError(f"embeddings file {p} does not exist")
    return list(dict.fromkeys(out))


def guess_model_id(path: Path, metadata: dict[bytes, bytes] | None) -> str | None:
    """Model id from the file's key-value metadata, else a Clay version in the file name."""
    for key in MODEL_ID_KEYS:
        if metadata and key in metadata:
            return metadata[key].decode()
    m = re.search(r"clay[-_]?v?(\d+(?:\.\d+)?)|[-_]v(\d+\.\d+)", path.stem, re.IGNORECASE)
    if m:
        return f"clay-v{m.group(1) or m.group(2)}"
    return None


def _first(names: Iterable[str], have: set[str]) -> str | None:
    return next((n for n in names if n in have), None)


def _crs_label(crs) -> str:
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def _is_lonlat(crs) -> bool:
    if crs is None:
        return True
    if not crs.is_geographic:
        return False
    try:
        from pyproj import CRS

        return crs.equals(CRS.from_epsg(4326), ignore_axis_order=True)
    except Exception:  # noqa: BLE001 - pyproj raises several types for a CRS it cannot read
        return False


def inspect_file(
    path: str | Path,
    *,
    embedding_column: str | None = None,
    crs: str | None = None,
    model_id: str | None = None,
    point_size: float | None = None,
) -> FileLayout:
    """Read a file's schema and metadata (not its rows) and map its columns to chips columns.

    ``point_size`` (metres) turns point geometries into squares of that side centred on them.
    """
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"embeddings file {p} does not exist")
    try:
        pf = pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises several types
        raise SourceReadError(f"cannot read {p} as Parquet: {e}") from e
    schema = pf.schema_arrow
    meta = schema.metadata or {}
    names = set(schema.names)
    try:
        emb = read_emb(meta)
        geo = json.loads(meta[b"geo"]) if b"geo" in meta else None
    except ValueError as e:
        raise ImportFormatError(f"{p}: unreadable 'emb' or 'geo' metadata ({e})") from e

    emb_col: str | None
    if embedding_column:
        if embedding_column not in names:
            raise ImportFormatError(
                f"{p} has no column {embedding_column!r} (--embedding-column); its columns: "
                f"{sorted(names)}"
            )
        emb_col = embedding_column
    else:
        emb_col = _first(EMBEDDING_COLUMNS, names)
    if emb_col is None:
        raise ImportFormatError(
            f"{p} has no embedding column (looked for {list(EMBEDDING_COLUMNS)}); name it with "
            f"--embedding-column; its columns: {sorted(names)}"
        )
    etype = schema.field(emb_col).type
    if not (
        pa.types.is_list(etype)
        or pa.types.is_large_list(etype)
        or pa.types.is_fixed_size_list(etype)
    ):
        raise ImportFormatError(
            f"{p}: column {emb_col!r} is {etype}, not a list of numbers; name the vector column "
            "with --embedding-column"
        )
    vtype = etype.value_type
    if not (pa.types.is_floating(vtype) or pa.types.is_integer(vtype)):
        raise ImportFormatError(f"{p}: embedding values are {vtype}; expected floats or integers")

    fmt = "plain"
    if b"clay_search.export" in meta:
        fmt = "clay-search"
    elif "grid_cell" in names and ("timestamp" in names or "product_id" in names):
        fmt = "majortom"
    elif emb is not None:
        fmt = "emb"
    elif "embeddings" in names or "source_url" in names:
        fmt = "clay"

    layout = FileLayout(
        path=p,
        format=fmt,
        embedding=emb_col,
        rows=pf.metadata.num_rows,
        row_groups=pf.metadata.num_row_groups,
        emb=emb,
    )
    layout.value_type = str(vtype)
    if pa.types.is_fixed_size_list(etype):
        layout.dim = etype.list_size
    elif emb is not None and emb.dim:
        layout.dim = emb.dim
    if emb is not None:
        layout.scale, layout.offset = emb.scale, emb.offset
        # the file's time range stands in for rows without a date (not in our own exports,
        # whose rows keep their own, possibly null, dates)
        if fmt != "clay-search":
            layout.default_datetime = emb.representative_datetime
    for key, attr in (
        (b"clay_search.embedding_scale", "scale"),
        (b"clay_search.embedding_offset", "offset"),
    ):
        if key in meta:
            setattr(layout, attr, float(meta[key]))

    # geometry: the GeoParquet primary column, else "geometry", else lon/lat, else a grid cell
    gcol = None
    declared = None
    if geo:
        gcol = geo.get("primary_column", "geometry")
        cmeta = geo.get("columns", {}).get(gcol, {})
        layout.encoding = str(cmeta.get("encoding", "WKB"))
        declared = cmeta.get("crs", "absent")
    if gcol is None or gcol not in names:
        gcol = "geometry" if "geometry" in names else None
    if gcol is not None:
        gtype = schema.field(gcol).type
        if isinstance(gtype, pa.ExtensionType):  # geoarrow.wkb / Parquet GEOMETRY
            gtype = gtype.storage_type
        if layout.encoding.upper() != "WKB" or not (
            pa.types.is_binary(gtype) or pa.types.is_large_binary(gtype)
        ):
            raise ImportFormatError(
                f"{p}: geometry column {gcol!r} is {layout.encoding} / {gtype}; only WKB "
                "geometries are read (convert with e.g. `gpq convert` or geopandas)"
            )
        layout.geometry = gcol
    else:
        layout.lonlat = next(((x, y) for x, y in LONLAT_COLUMNS if x in names and y in names), None)
        if layout.lonlat is None and "grid_cell" in names:
            layout.grid_cell = "grid_cell"

    from pyproj import CRS

    if declared not in (None, "absent"):
        try:
            dcrs = (
                CRS.from_json_dict(declared)
                if isinstance(declared, dict)
                else CRS.from_user_input(declared)
            )
        except Exception as e:
            raise ImportFormatError(f"{p}: unreadable CRS in the GeoParquet metadata ({e})") from e
        layout.crs_declared = _crs_label(dcrs)
        layout.crs, layout.crs_name = dcrs, layout.crs_declared
    if crs is not None:
        try:
            layout.crs = CRS.from_user_input(crs)
        except Exception as e:
            raise QueryError(
                f"--crs {crs!r} is not a CRS pyproj knows ({e}); use e.g. EPSG:4326"
            ) from e
        layout.crs_name = _crs_label(layout.crs)
    if _is_lonlat(layout.crs):
        layout.crs = None

    layout.date = _first(DATE_COLUMNS, names)
    layout.chip_id = _first(ID_COLUMNS, names)
    layout.source = _first(SOURCE_COLUMNS, names)
    layout.item_id = _first(ITEM_COLUMNS, names)
    layout.utm_crs = "utm_crs" if "utm_crs" in names and "crs" not in names else None
    layout.passthrough = [c for c in PASSTHROUGH if c in names]
    layout.model_id = model_id or (emb.model_id if emb else None) or guess_model_id(p, meta)
    if point_size is not None and not point_size > 0:
        raise QueryError(f"--point-size must be a positive number of metres, got {point_size}")
    layout.point_size = point_size
    return layout


# -- geometry ----------------------------------------------------------------------------------
def majortom_cell_polygons(cells: Sequence[str | None], km: float = MAJORTOM_KM) -> np.ndarray:
    """Footprints (lon/lat polygons) of Major TOM grid cells named ``<row>{U|D}_<col>{R|L}``.

    Rows are latitude lines ``km`` apart along a meridian; each row is cut into columns
    about ``km`` wide at its latitude; a cell is named by its bottom-left corner.
    Unreadable names give ``None``.
    """
    n_lat = math.ceil(math.pi * _EARTH_RADIUS_KM / km)
    dlat = 180.0 / n_lat
    out = np.empty(len(cells), dtype=object)
    pat = re.compile(r"^\s*(\d+)([UD])_(\d+)([RL])\s*$")
    for i, name in enumerate(cells):
        m = pat.match(name or "")
        if not m:
            out[i] = None
            continue
        row = int(m.group(1)) * (1 if m.group(2) == "U" else -1)
        col = int(m.group(3)) * (1 if m.group(4) == "R" else -1)
        lat = row * dlat
        n_lon = math.ceil(2 * math.pi * _EARTH_RADIUS_KM * math.cos(math.radians(lat)) / km)
        dlon = 360.0 / n_lon
        lon = col * dlon
        out[i] = shapely.box(lon, lat, min(lon + dlon, 180.0), min(lat + dlat, 90.0))
    return out


def check_crs(layout: FileLayout, bounds: np.ndarray) -> None:
    """Stop when coordinates contradict the file's CRS (:class:`CRSContradictionError`).

    ``bounds``: ``[n, 4]`` (minx, miny, maxx, maxy) in the file's CRS, NaN for empty rows.
    """
    ok = ~np.isnan(bounds).any(axis=1)
    if not ok.any():
        return
    x0, y0 = float(bounds[ok, 0].min()), float(bounds[ok, 1].min())
    x1, y1 = float(bounds[ok, 2].max()), float(bounds[ok, 3].max())
    box_text = f"x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}"
    fix = (
        "if the file's coordinates are in another CRS, pass it with --crs (e.g. --crs "
        "EPSG:4326 for lon/lat degrees); or correct the file's GeoParquet metadata"
    )
    crs = layout.crs
    if crs is None:
        if x0 < -180.5 or x1 > 360.5 or y0 < -90.5 or y1 > 90.5:
            raise CRSContradictionError(
                f"{layout.path}: coordinates ({box_text}) are not lon/lat degrees but the file "
                f"declares {layout.crs_name} (or no CRS, which means lon/lat); {fix}"
            )
        return
    units = {a.unit_name for a in crs.axis_info}
    metric = bool(units) and all(u in {"metre", "meter", "US survey foot", "foot"} for u in units)
    if (
        metric
        and x0 >= -180.5
        and x1 <= 180.5
        and y0 >= -90.5
        and y1 <= 90.5
        and (x1 - x0) < 5
        and (y1 - y0) < 5
        and (abs(x0) > 1 or abs(y0) > 1)
    ):
        raise CRSContradictionError(
            f"{layout.path}: declares {layout.crs_name} (metres) but its coordinates ({box_text}) "
            f"look like lon/lat degrees; {fix}"
        )
    aou = crs.area_of_use
    if aou is not None:
        from pyproj import Transformer

        try:
            tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
            b = tr.transform_bounds(aou.west, aou.south, aou.east, aou.north, densify_pts=21)
        except Exception:  # noqa: BLE001 - no transform to this CRS: the check is skipped
            return
        if not all(np.isfinite(b)):
            return
        wx, wy = (b[2] - b[0]) * 0.5 + 1.0, (b[3] - b[1]) * 0.5 + 1.0  # generous margin
        if x1 < b[0] - wx or x0 > b[2] + wx or y1 < b[1] - wy or y0 > b[3] + wy:
            raise CRSContradictionError(
                f"{layout.path}: coordinates ({box_text}) lie outside the valid area of the "
                f"declared {layout.crs_name} ({aou.name}: lon {aou.west}..{aou.east}, lat "
                f"{aou.south}..{aou.north}); {fix}"
            )


def _geometries(layout: FileLayout, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """Footprints in lon/lat and a mask of rows whose geometry could not be read."""
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    if layout.geometry is not None:
        col = batch.column(layout.geometry)
        if isinstance(col.type, pa.ExtensionType):
            col = col.storage
        raw = col.to_numpy(zero_copy_only=False)
        geoms = shapely.from_wkb(raw, on_invalid="ignore")
        bad = np.array([r is not None for r in raw], dtype=bool) & shapely.is_missing(geoms)
    elif layout.lonlat is not None:
        x = batch.column(layout.lonlat[0]).to_numpy(zero_copy_only=False).astype(float)
        y = batch.column(layout.lonlat[1]).to_numpy(zero_copy_only=False).astype(float)
        geoms = shapely.points(x, y)
        geoms[np.isnan(x) | np.isnan(y)] = None
    elif layout.grid_cell is not None:
        geoms = majortom_cell_polygons(batch.column(layout.grid_cell).to_pylist())
        bad = shapely.is_missing(geoms)
    else:
        return np.full(n, None, dtype=object), bad
    check_crs(layout, shapely.bounds(geoms))
    if layout.crs is not None:
        from pyproj import Transformer

        tr = Transformer.from_crs(layout.crs, "EPSG:4326", always_xy=True)
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        )
    if layout.point_size:
        pts = np.flatnonzero(shapely.get_type_id(geoms) == 0)
        if len(pts):
            x, y = shapely.get_x(geoms[pts]), shapely.get_y(geoms[pts])
            dy = layout.point_size / 2 / 111_320.0  # metres per degree of latitude
            dx = dy / np.maximum(np.cos(np.radians(y)), 1e-6)
            geoms[pts] = shapely.box(x - dx, y - dy, x + dx, y + dy)
    return geoms, bad


# -- embeddings and dates ----------------------------------------------------------------------
def embedding_values(
    column: pa.Array | pa.ChunkedArray,
    dim: int | None,
    *,
    scale: float | None = None,
    offset: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str | None], int]:
    """``(vectors [n_ok, D] float32, ok mask [n], reason per row (None if ok), D)``.

    Reads list, large-list and fixed-size-list columns of floats (16/32/64 bit) or integers
    (value * scale + offset). A row is bad when its list is null, of another length than
    ``dim`` (``None``: the most common length of this batch), holds nulls/NaN/inf, or is all
    zeros (it has no direction to compare).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    reasons: list[str | None] = [None] * n
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    null = lengths < 0
    if dim is None:
        good = lengths[~null]
        if len(good) == 0:
            return np.zeros((0, 0), np.float32), np.zeros(n, bool), ["null embedding"] * n, 0
        vals, counts = np.unique(good, return_counts=True)
        dim = int(vals[np.argmax(counts)])
    ok = (~null) & (lengths == dim)
    for i in np.flatnonzero(~ok):
        reasons[i] = "null embedding" if null[i] else f"length {lengths[i]}, expected {dim}"
    kept = column.filter(pa.array(ok))
    flat = pc.list_flatten(kept)
    scaled = scale is not None or offset is not None
    work = np.float64 if scaled or pa.types.is_float64(flat.type) else np.float32
    mat: np.ndarray = (
        np.asarray(flat.to_numpy(zero_copy_only=False), dtype=work).reshape(-1, dim)
        if dim
        else np.zeros((len(kept), 0), work)
    )
    if scaled:
        mat = mat * (1.0 if scale is None else scale) + (0.0 if offset is None else offset)
    finite = np.isfinite(mat).all(axis=1)
    nonzero = np.abs(mat).sum(axis=1) > 0
    idx = np.flatnonzero(ok)
    for j in np.flatnonzero(~finite):
        reasons[idx[j]] = "null, NaN or infinite values"
    for j in np.flatnonzero(finite & ~nonzero):
        reasons[idx[j]] = "all-zero vector"
    keep = finite & nonzero
    ok[idx[~keep]] = False
    return mat[keep].astype(np.float32), ok, reasons, dim


_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?)?")


def _parse_text_time(text: str) -> datetime | None:
    t = text.strip()
    try:
        return to_utc(t)  # the one date parser (clay_search.dates)
    except InvalidDateError:
        m = _COMPACT.match(t)  # Sentinel-style 20200615T104031
        if not m:
            return None
        year, month, day, hour, minute, second = (int(g) if g else 0 for g in m.groups())
        try:
            dt = datetime(year, month, day, hour, minute, second)
        except ValueError:
            return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_utc_timestamps(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """UTC microsecond timestamps and a mask of unreadable values (nulls stay null, not bad).

    Reads timestamp (naive = UTC), date and ISO 8601 / ``YYYYMMDDTHHMMSS`` text columns.
    """
    target = pa.timestamp("us", tz="UTC")
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    bad = np.zeros(len(arr), dtype=bool)
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return arr.cast(target, safe=False), bad  # nanoseconds truncate to microseconds
    if pa.types.is_date(arr.type):
        return arr.cast(pa.timestamp("us")).cast(target), bad
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        cache: dict[str, datetime | None] = {}
        vals: list[datetime | None] = []
        for i, v in enumerate(arr.to_pylist()):
            if v is None:
                vals.append(None)
                continue
            if v not in cache:
                cache[v] = _parse_text_time(v)
            vals.append(cache[v])
            bad[i] = cache[v] is None
        return pa.array(vals, target), bad
    raise ImportFormatError(f"cannot read a date column of type {arr.type}")


# -- rows ----------------------------------------------------------------------------------------
def _strings(batch: pa.RecordBatch, name: str | None) -> list[str | None] | None:
    if name is None:
        return None
    return batch.column(name).cast(pa.string()).to_pylist()


def chip_rows(
    layout: FileLayout,
    batch: pa.RecordBatch,
    *,
    dim: int | None,
    model_id: str,
    sensor: str | None,
) -> tuple[pa.Table, Counter, list[dict], int]:
    """Rows of one batch in the chips schema, the skip reasons, examples, and the dimension.

    This is the one place where imported rows are built (the chips schema's column order).
    """
    n = batch.num_rows
    vecs, ok, reasons, dim_found = embedding_values(
        batch.column(layout.embedding), dim, scale=layout.scale, offset=layout.offset
    )
    geoms, bad_geom = _geometries(layout, batch)
    if layout.date is not None:
        try:
            dates, bad_date = to_utc_timestamps(batch.column(layout.date))
        except ImportFormatError as e:
            raise ImportFormatError(f"{layout.path}: column {layout.date!r}: {e}") from None
    else:
        dates, bad_date = pa.nulls(n, pa.timestamp("us", tz="UTC")), np.zeros(n, bool)
    if layout.default_datetime:
        default = _parse_text_time(layout.default_datetime)
        dates = pc.fill_null(dates, pa.scalar(default, pa.timestamp("us", tz="UTC")))
    for i in np.flatnonzero(ok & bad_geom):
        reasons[i] = "unreadable geometry"
    for i in np.flatnonzero(ok & bad_date & ~bad_geom):
        reasons[i] = "unreadable date"
    ok_rows = np.flatnonzero(ok)
    keep_in_ok = ~(bad_geom[ok_rows] | bad_date[ok_rows])
    keep = ok_rows[keep_in_ok]
    vecs = vecs[keep_in_ok]
    skipped = Counter(r for r in reasons if r is not None)
    examples = [
        {"row": int(i), "reason": reasons[i]}
        for i in np.flatnonzero(~np.isin(np.arange(n), keep))[:EXAMPLES_KEPT]
    ]

    take = pa.array(keep, pa.int64())
    g = geoms[keep]
    wkb = [None if shapely.is_missing(x) else shapely.to_wkb(x) for x in g]
    bounds = shapely.bounds(g) if len(g) else np.zeros((0, 4))
    dates_k = dates.take(take)
    urls = _strings(batch, layout.source)
    urls = [urls[i] for i in keep] if urls is not None else [str(layout.path)] * len(keep)
    ids_col = _strings(batch, layout.chip_id)
    date_s = dates_k.cast(pa.string()).to_pylist()
    ids = []
    for j, i in enumerate(keep):
        cid = ids_col[i] if ids_col is not None else None
        if not cid:
            cid = hashlib.sha1(
                f"{urls[j]}|{date_s[j]}|{(wkb[j] or b'').hex()}".encode()
            ).hexdigest()[:20]
        ids.append(cid)
    m = len(keep)
    cols: dict[str, Any] = {
        "chip_id": pa.array(ids, pa.string()),
        "geometry": pa.array(wkb, pa.binary()),
        "minx": pa.array(bounds[:, 0], pa.float64()),
        "miny": pa.array(bounds[:, 1], pa.float64()),
        "maxx": pa.array(bounds[:, 2], pa.float64()),
        "maxy": pa.array(bounds[:, 3], pa.float64()),
        "datetime": dates_k,
        "source": pa.array(urls, pa.string()),
        "model_id": pa.array([model_id] * m, pa.string()),
    }
    if layout.item_id:
        cols["item_id"] = batch.column(layout.item_id).cast(pa.string()).take(take)
    if layout.utm_crs:
        cols["crs"] = batch.column(layout.utm_crs).cast(pa.string()).take(take)
    schema = chips_schema(dim_found)
    for name in layout.passthrough:
        cols[name] = batch.column(name).take(take).cast(schema.field(name).type)
    if sensor is not None:
        cols["sensor"] = pa.array([sensor] * m, pa.string())
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(
        pa.array(vecs.reshape(-1), pa.float32()), dim_found
    )
    table = pa.table({f.name: cols.get(f.name, pa.nulls(m, f.type)) for f in schema}, schema=schema)
    return table, skipped, examples, dim_found


def iter_batches(layout: FileLayout, batch_rows: int = BATCH_ROWS):
    """The file's rows in batches of the needed columns.

    No pre-buffering and a buffered stream: pages are read as the batches need them, so a
    file (or row group) larger than memory streams through in bounded memory.
    """
    pf = pq.ParquetFile(layout.path, pre_buffer=False, buffer_size=8 * 2**20)
    yield from pf.iter_batches(batch_size=batch_rows, columns=layout.columns)


# -- the import job ------------------------------------------------------------------------------
@dataclass
class FileReport:
    """What happened to one file."""

    file: str
    format: str
    rows: int = 0
    added: int = 0
    skipped_existing: int = 0
    skipped_bad: int = 0
    skipped: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    layout: dict = field(default_factory=dict)


def _check_model(layouts: list[FileLayout], model_id: str | None) -> str:
    ids = {lay.model_id for lay in layouts if lay.model_id is not None}
    if any(lay.model_id is None for lay in layouts):
        missing = [str(lay.path) for lay in layouts if lay.model_id is None]
        raise QueryError(
            f"cannot tell which model made the embeddings in {missing[0]}"
            f"{f' (and {len(missing) - 1} more files)' if len(missing) > 1 else ''}: no 'emb' "
            "metadata, model_id key or Clay version in the name; pass --model-id (e.g. clay-v1.5)"
        )
    if len(ids) > 1:
        raise QueryError(
            f"the files hold embeddings of several models {sorted(ids)}; a store holds one "
            "model: import them into separate stores"
        )
    return ids.pop()


def _validate(layout: FileLayout, dim: int | None, model_id: str) -> FileReport:
    rep = FileReport(str(layout.path), layout.format, layout=layout.describe())
    for batch in iter_batches(layout):
        rows, skipped, examples, dim_b = chip_rows(
            layout, batch, dim=dim, model_id=model_id, sensor=None
        )
        if dim is None and rows.num_rows:
            dim = dim_b
        rep.rows += batch.num_rows
        rep.skipped_bad += sum(skipped.values())
        rep.skipped = dict(Counter(rep.skipped) + skipped)
        rep.examples.extend({**e, "row": e["row"] + rep.rows - batch.num_rows} for e in examples)
    return rep


def _write_manifest(path: Path | RemotePath, data: dict) -> None:
    from clay_search.location import write_atomic

    write_atomic(path, json.dumps(data, indent=2, default=str))


def import_embeddings(
    sources: str | Path | Sequence[str | Path],
    store: str | Path,
    *,
    model_id: str | None = None,
    sensor: str | None = None,
    embedding_column: str | None = None,
    crs: str | None = None,
    point_size: float | None = None,
    strict: bool = False,
    dry_run: bool = False,
    sync: bool = True,
    batch_rows: int = BATCH_ROWS,
    commit_bytes: int = COMMIT_BYTES,
    progress: bool = False,
) -> dict:
    """Import one or more embeddings files into ``store`` (created if needed); returns a report.

    ``sources``: a file, folder, glob or list of them. ``model_id`` overrides what the files
    say (``emb`` metadata, a ``model_id`` key, a Clay version in the name). ``crs`` overrides
    the CRS the files declare. ``point_size`` (metres): point geometries (Earth Index
    centroids, lon/lat columns) become squares of that side, so that a point query finds
    them (the chip ids hash the footprint when the file has none: keep the size from one
    import to the next). ``strict``: any bad row stops the import before anything is
    written (:class:`BadRowsError`). ``dry_run``: read and check every file, report what
    would be imported (layouts, counts, skip reasons) and write nothing. Refuses a store of
    another model id or dimension (:class:`StoreMismatchError`) and coordinates that
    contradict the declared CRS (:class:`CRSContradictionError`).
    Rows whose chip id is in the store are skipped.
    """
    from clay_search.store import sync_index
    from clay_search.store.layout import (
        append_rows,
        open_chips_table,
        open_or_create_store,
        record_import,
    )
    from clay_search.store.lock import store_lock

    files = expand_sources(sources)
    layouts = [
        inspect_file(
            f, embedding_column=embedding_column, crs=crs, model_id=model_id, point_size=point_size
        )
        for f in files
    ]
    mid = _check_model(layouts, model_id)
    dims = {lay.dim for lay in layouts if lay.dim}
    if len(dims) > 1:
        raise QueryError(
            f"the files hold embeddings of several sizes {sorted(dims)}; a store holds one size"
        )
    dim = dims.pop() if dims else None
    existing_dim = _store_dim(store)
    if existing_dim and dim and existing_dim != dim:
        from clay_search.errors import StoreMismatchError

        raise StoreMismatchError(
            f"store {store} holds {existing_dim}-dimensional embeddings, "
            f"not {dim}; write to a new store"
        )
    dim = dim or existing_dim

    # first rows of each file: the CRS check stops before anything is written
    for lay in layouts:
        first = next(iter_batches(lay, batch_rows=min(batch_rows, 1024)), None)
        if first is not None:
            _geometries(lay, first)

    if dry_run:
        reports = [_validate(lay, dim, mid) for lay in layouts]
        skipped_all: Counter = Counter()
        for r in reports:
            skipped_all.update(r.skipped)
        return {
            "dry_run": True,
            "store": str(store),
            "model_id": mid,
            "dim": dim,
            "files": len(reports),
            "rows": sum(r.rows for r in reports),
            "importable": sum(r.rows - r.skipped_bad for r in reports),
            "skipped_bad": sum(r.skipped_bad for r in reports),
            "skipped": dict(skipped_all),
            "files_detail": [
                {
                    "file": r.file,
                    "rows": r.rows,
                    "skipped": r.skipped,
                    "examples": r.examples[:5],
                    "layout": r.layout,
                }
                for r in reports
            ],
        }
    if strict:
        reports = [_validate(lay, dim, mid) for lay in layouts]
        bad = [r for r in reports if r.skipped_bad]
        if bad:
            detail = "; ".join(
                f"{r.file}: {r.skipped_bad} of {r.rows} rows ({r.skipped})" for r in bad[:3]
            )
            raise BadRowsError(
                f"bad rows, nothing imported (--strict): {detail}; drop --strict to import "
                "the good rows and skip the others"
            )

    now = datetime.now(UTC)
    run_id = f"import-{now.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    info: StoreInfo | None = None
    chips = None  # the store's LanceDB chips table, opened with info
    existing = SeenIds()
    recorded: set[Path] = set()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "kind": "import",
        "status": "running",
        "started": now.isoformat(timespec="seconds"),
        "finished": None,
        "model_id": mid,
        "parameters": {
            "sources": [str(f) for f in files],
            "model_id": model_id,
            "sensor": sensor,
            "embedding_column": embedding_column,
            "crs": crs,
            "point_size": point_size,
            "strict": strict,
        },
        "files": [],
    }
    manifest_path: Path | RemotePath | None = None
    reports = []
    buf: list[pa.Table] = []
    buf_bytes = 0
    commits = 0

    def flush() -> None:
        nonlocal buf, buf_bytes, commits
        if buf:
            # rows are buffered only once the store (info, chips) is open
            assert info is not None and chips is not None
            data = pa.concat_tables(buf)
            target = chips.schema
            if data.schema.names != target.names:  # e.g. a store with patch embeddings
                data = pa.table(
                    {
                        f.name: data.column(f.name)
                        if f.name in data.schema.names
                        else pa.nulls(data.num_rows, f.type)
                        for f in target
                    },
                    schema=target,
                )
            append_rows(info, chips, data, what="an import commit")
            commits += 1
        buf, buf_bytes = [], 0

    bar = _progress(progress, sum(lay.rows for lay in layouts))
    lock = None
    try:
        for lay in layouts:
            rep = FileReport(str(lay.path), lay.format, layout=lay.describe())
            reports.append(rep)
            for batch in iter_batches(lay, batch_rows):
                rows, skipped, examples, dim_b = chip_rows(
                    lay, batch, dim=dim, model_id=mid, sensor=sensor
                )
                if info is None and rows.num_rows:
                    dim = dim_b
                    info = open_or_create_store(store, mid, dim)
                    lock = store_lock(info.path, "import").acquire()  # one writer at a time
                    chips = open_chips_table(info)
                    existing = _read_existing(chips)
                    manifest_path = info.runs_path / f"{run_id}.json"
                    info.runs_path.mkdir(parents=True, exist_ok=True)
                if info is not None and lay.path not in recorded:
                    recorded.add(lay.path)
                    prov = lay.emb.provenance() if lay.emb is not None else {}
                    record_import(info, {"model_id": mid, **prov})
                rep.examples.extend(
                    {**e, "row": e["row"] + rep.rows}
                    for e in examples
                    if len(rep.examples) < EXAMPLES_KEPT
                )
                rep.rows += batch.num_rows
                rep.skipped_bad += sum(skipped.values())
                rep.skipped = dict(Counter(rep.skipped) + skipped)
                if rows.num_rows:
                    new = np.flatnonzero(existing.add(rows.column("chip_id").to_pylist()))
                    rep.skipped_existing += rows.num_rows - len(new)
                    rep.added += len(new)
                    if len(new):
                        part = rows.take(pa.array(new, pa.int64()))
                        buf.append(part)
                        buf_bytes += part.nbytes
                        if buf_bytes >= commit_bytes:
                            flush()
                            _save(manifest_path, manifest, reports, commits)
                if bar is not None:
                    bar[0].update(bar[1], advance=batch.num_rows)
            flush()
            if manifest_path is not None:
                _save(manifest_path, manifest, reports, commits)
    except BaseException:
        flush_error = None
        try:
            flush()
        except Exception as e:  # noqa: BLE001 - keep the first error (re-raised below)
            flush_error = e
        if manifest_path is not None:
            manifest["status"] = "failed"
            manifest["error"] = str(flush_error) if flush_error else None
            _save(manifest_path, manifest, reports, commits, finished=True)
        raise
    finally:
        if bar is not None:
            bar[0].stop()
        if lock is not None:
            lock.release()
    if info is None and not sum(r.rows for r in reports):
        raise BadRowsError(
            f"{', '.join(str(f) for f in files[:3])}: the file(s) hold no rows; nothing to import"
        )
    if info is None:
        raise BadRowsError(
            f"no importable row in {', '.join(str(f) for f in files[:3])}: "
            + "; ".join(f"{r.file}: {r.skipped}" for r in reports[:3])
        )
    assert chips is not None  # opened with info
    manifest["status"] = "done"
    _save(manifest_path, manifest, reports, commits, finished=True)
    totals = {
        "files": len(reports),
        "rows": sum(r.rows for r in reports),
        "added": sum(r.added for r in reports),
        "skipped_existing": sum(r.skipped_existing for r in reports),
        "skipped_bad": sum(r.skipped_bad for r in reports),
    }
    skipped_all = Counter()
    for r in reports:
        skipped_all.update(r.skipped)
    report: dict[str, Any] = {
        "store": str(info.path),
        "model_id": mid,
        "dim": dim,
        **totals,
        "skipped": dict(skipped_all),
        "commits": commits,
        "table_version": int(chips.version),
        "manifest": str(manifest_path),
        "files_detail": [
            {k: v for k, v in asdict(r).items() if k not in ("examples", "layout")}
            | {"format": r.format}
            for r in reports
        ],
    }
    if sync:
        report["index"] = sync_index(info.path).to_dict()
    return report


def _store_dim(store: str | Path) -> int | None:
    from clay_search.location import store_location
    from clay_search.store.layout import STORE_JSON, read_store_info

    if not (store_location(store) / STORE_JSON).exists():
        return None
    return read_store_info(store).dim


class SeenIds:
    """Chip ids already in the store or met earlier in the run, 8 bytes each.

    Ids are kept as sorted arrays of their 64-bit string hashes (a few chunks of doubling
    size, merged as they fill), not as Python strings: a 10-million-row import keeps 80 MB
    here instead of about 1.5 GB. Two different ids share a hash with probability about
    n^2 / 2^65 (3e-6 for 10 million ids); such a row would be counted as already present.
    """

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def add(self, ids: Sequence[str]) -> np.ndarray:
        """Mark ``ids`` as seen; returns True where an id was new (first of repeats only)."""
        h = np.fromiter((hash(c) for c in ids), dtype=np.int64, count=len(ids))
        new = np.zeros(len(h), dtype=bool)
        _, first = np.unique(h, return_index=True)
        new[first] = True
        for c in self.chunks:
            pos = np.minimum(np.searchsorted(c, h), len(c) - 1)
            new &= c[pos] != h
        if new.any():
            self.chunks.append(np.sort(h[new]))
            while len(self.chunks) > 1 and len(self.chunks[-1]) * 2 >= len(self.chunks[-2]):
                last = self.chunks.pop()
                self.chunks[-1] = np.sort(np.concatenate([self.chunks[-1], last]))
        return new


def _read_existing(chips) -> SeenIds:
    seen = SeenIds()
    n = chips.count_rows()
    step = 262_144
    for offset in range(0, n, step):
        q = chips.search().select(["chip_id"]).offset(offset).limit(min(step, n - offset))
        seen.add(q.to_arrow().column("chip_id").to_pylist())
    return seen


def _save(
    path: Path | RemotePath | None,
    manifest: dict,
    reports: list[FileReport],
    commits: int,
    *,
    finished: bool = False,
) -> None:
    if path is None:
        return
    manifest["files"] = [asdict(r) for r in reports]
    manifest["commits"] = commits
    manifest["totals"] = {
        k: sum(getattr(r, k) for r in reports)
        for k in ("rows", "added", "skipped_existing", "skipped_bad")
    }
    if finished:
        manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_manifest(path, manifest)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task("import", total=total)
    bar.start()
    return bar, task


#: The name this function had when it lived in ``clay_search.store.importer``.
import_geoparquet = import_embeddings
