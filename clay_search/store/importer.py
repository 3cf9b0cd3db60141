"""Import embeddings published as GeoParquet (Clay's format) into a store.

Clay's files hold one row per chip with ``source_url``, ``date``, ``embeddings`` (list of floats)
and ``geometry`` (WKB, EPSG:4326). Chip ids are derived from source, date and footprint, so
importing the same file twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from clay_search.errors import QueryError, SourceNotFoundError, SourceReadError
from clay_search.schema import chips_schema

EMBEDDING_COLUMNS = ("embeddings", "embedding")
MODEL_ID_KEYS = (b"model_id", b"clay_search.model_id", b"clay_model_id")


def guess_model_id(path: Path, metadata: dict[bytes, bytes] | None) -> str | None:
    """Model id from the file's key-value metadata, else a Clay version in the file name."""
    for key in MODEL_ID_KEYS:
        if metadata and key in metadata:
            return metadata[key].decode()
    m = re.search(r"clay[-_]?v?(\d+(?:\.\d+)?)|[-_]v(\d+\.\d+)", path.stem, re.IGNORECASE)
    if m:
        return f"clay-v{m.group(1) or m.group(2)}"
    return None


def _crs_is_4326(geo: dict | None) -> bool:
    if not geo:
        return True
    col = geo.get("columns", {}).get(geo.get("primary_column", "geometry"), {})
    crs = col.get("crs", None)
    if crs is None:  # GeoParquet: absent crs means OGC:CRS84
        return True
    ident = crs.get("id", {}) if isinstance(crs, dict) else {}
    return (ident.get("authority"), str(ident.get("code"))) in {("EPSG", "4326"), ("OGC", "CRS84")}


def _to_timestamps(col: pa.ChunkedArray) -> pa.Array:
    target = pa.timestamp("us", tz="UTC")
    arr = col.combine_chunks()
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return arr.cast(target)
    if pa.types.is_date(arr.type):
        return arr.cast(pa.timestamp("us")).cast(target)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        vals = []
        for v in arr.to_pylist():
            if v is None:
                vals.append(None)
                continue
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            vals.append(dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC))
        return pa.array(vals, target)
    raise QueryError(f"cannot read the date column of type {arr.type}")


def read_clay_geoparquet(path: str | Path) -> tuple[pa.Table, dict | None]:
    """The file as Arrow and its ``geo`` metadata (``None`` when absent)."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"embeddings file {p} does not exist")
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types
        raise SourceReadError(f"cannot read {p} as Parquet: {e}") from e
    meta = table.schema.metadata or {}
    geo = json.loads(meta[b"geo"]) if b"geo" in meta else None
    return table, geo


def clay_rows(
    table: pa.Table, geo: dict | None, *, model_id: str, sensor: str | None, source: str
) -> pa.Table:
    """Rows in the chips schema from a table in Clay's embeddings format."""
    emb_col = next((c for c in EMBEDDING_COLUMNS if c in table.column_names), None)
    missing = [
        c
        for c, ok in (("embeddings", emb_col), ("geometry", "geometry" in table.column_names))
        if not ok
    ]
    if missing:
        raise QueryError(
            f"{source} lacks column(s) {missing}; expected Clay's embeddings GeoParquet "
            f"(source_url, date, embeddings, geometry); found {table.column_names}"
        )
    emb = table.column(emb_col).combine_chunks()
    if pa.types.is_fixed_size_list(emb.type):
        dim = emb.type.list_size
        values = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), np.float32)
    else:
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        if len(lengths) == 0 or emb.null_count or len(set(lengths.tolist())) != 1:
            raise QueryError(f"{source}: embeddings must all be present and of one length")
        dim = int(lengths[0])
        values = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), np.float32)
    n = table.num_rows
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    if not _crs_is_4326(geo):
        from pyproj import CRS, Transformer

        col = geo["columns"][geo.get("primary_column", "geometry")]
        tr = Transformer.from_crs(CRS.from_json_dict(col["crs"]), "EPSG:4326", always_xy=True)
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        )
    bounds = shapely.bounds(geoms)
    wkb = [None if g is None else shapely.to_wkb(g) for g in geoms]
    dates = (
        _to_timestamps(table.column("date"))
        if "date" in table.column_names
        else pa.nulls(n, pa.timestamp("us", tz="UTC"))
    )
    urls = (
        table.column("source_url").cast(pa.string()).to_pylist()
        if "source_url" in table.column_names
        else [None] * n
    )
    if "chip_id" in table.column_names:
        ids = table.column("chip_id").cast(pa.string()).to_pylist()
    else:
        date_s = dates.cast(pa.string()).to_pylist()
        ids = [
            hashlib.sha1(f"{u}|{d}|{(w or b'').hex()}".encode()).hexdigest()[:20]
            for u, d, w in zip(urls, date_s, wkb, strict=True)
        ]
    schema = chips_schema(dim)
    cols = {
        "chip_id": pa.array(ids, pa.string()),
        "geometry": pa.array(wkb, pa.binary()),
        "minx": pa.array(bounds[:, 0]),
        "miny": pa.array(bounds[:, 1]),
        "maxx": pa.array(bounds[:, 2]),
        "maxy": pa.array(bounds[:, 3]),
        "datetime": dates,
        "sensor": pa.array([sensor] * n, pa.string()),
        "source": pa.array(urls, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim),
        "model_id": pa.array([model_id] * n, pa.string()),
    }
    out = {f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema}
    return pa.table(out, schema=schema)


def import_geoparquet(
    path: str | Path,
    store: str | Path,
    *,
    model_id: str | None = None,
    sensor: str | None = None,
    sync: bool = True,
) -> dict:
    """Load a Clay embeddings GeoParquet into ``store`` (created if needed); returns a report.

    Refuses a store of another model id or dimension (:class:`StoreMismatchError`). Rows whose
    chip id is already in the store are skipped.
    """
    from clay_search.store.layout import open_or_create_store
    from clay_search.store.lock import store_lock

    p = Path(path)
    table, geo = read_clay_geoparquet(p)
    mid = model_id or guess_model_id(p, table.schema.metadata)
    if not mid:
        raise QueryError(
            f"cannot tell which model made the embeddings in {p}; pass --model-id (e.g. clay-v1.5)"
        )
    rows = clay_rows(table, geo, model_id=mid, sensor=sensor, source=str(p))
    dim = rows.schema.field("embedding").type.list_size
    info = open_or_create_store(store, mid, dim)
    lock = store_lock(info.path, "import").acquire()  # one writer at a time
    try:
        return _import_locked(info, rows, p, mid, dim, sync)
    finally:
        lock.release()


def _import_locked(info, rows: pa.Table, p: Path, mid: str, dim: int, sync: bool) -> dict:
    """The import's writes, under the store's write lock."""
    from clay_search.store import sync_index
    from clay_search.store.layout import open_chips_table

    chips = open_chips_table(info)
    from clay_search.index.vectors import read_ids

    have = read_ids(chips)
    new_mask = pc.invert(pc.is_in(rows.column("chip_id"), value_set=have))
    new = rows.filter(new_mask)
    # duplicates inside the file itself: keep the first
    _, first = np.unique(
        np.array(new.column("chip_id").to_pylist(), dtype=object), return_index=True
    )
    new = new.take(pa.array(np.sort(first)))
    if new.num_rows:
        from clay_search.store.lock import guarded_write

        with guarded_write(info.path, "the import commit", version=int(chips.version)):
            chips.add(new)
    report = {
        "file": str(p),
        "store": str(info.path),
        "model_id": mid,
        "dim": dim,
        "rows": rows.num_rows,
        "added": new.num_rows,
        "skipped_existing": rows.num_rows - new.num_rows,
        "table_version": chips.version,
    }
    if sync:
        report["index"] = sync_index(info.path).to_dict()
    return report
