"""A store's chips out as GeoParquet 1.1 with ``emb`` metadata, for others to read.

Each file holds ``chip_id``, ``geometry`` (WKB, lon/lat), ``bbox`` (struct covering column),
``datetime``, ``sensor``, ``gsd``, ``source``, ``item_id``, ``crs``, ``window``, ``label`` and
``embedding`` (fixed-size list of float32, as stored), plus ``centre_lon``/``centre_lat``.
Rows are ordered along a Z-order curve of their centres, so each row group covers a compact
area and its ``bbox`` statistics let DuckDB, GDAL or pyarrow skip the others; row groups are
sized for HTTP range reads (``row_group_mb``). ``partition_by="year"|"region"`` writes
Hive-style folders (``year=2020/``, ``region=n40e010/``: 10-degree cells) of such files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clay_search.emb import EMB_KEY, build_emb
from clay_search.errors import QueryError
from clay_search.filters import Filters
from clay_search.results import geoparquet_metadata

PARTITIONS = ("year", "region")
#: Chips columns written (besides geometry, bbox, centres and embedding), in order.
COLUMNS = ("chip_id", "datetime", "sensor", "gsd", "source", "item_id", "crs", "window", "label")
ROW_GROUP_MB = 32.0
REGION_DEGREES = 10
_MODEL_ID = re.compile(
    r"^(?P<base>.*?(?P<hash>[0-9a-f]{12}))(?:-(?P<pool>[a-z][a-z+_]*))?(?:-z(?P<z>[0-9a-f]{8}))?$"
)


def describe_model_id(model_id: str) -> dict:
    """Weights hash, pooling and standardisation read from a clay-search model id.

    ``clay-nano-p8-d8dc6e9ed8f5-mean+std-z1a2b3c4d`` -> weights ``d8dc6e9ed8f5``, pooling
    ``mean+std``, vectors z-scored with statistics hashed ``1a2b3c4d``. Ids of other shapes
    (imported models) give ``{}``.
    """
    m = _MODEL_ID.match(model_id)
    if not m:
        return {}
    return {
        "weights_sha256_prefix": m.group("hash"),
        "pooling": m.group("pool") or "cls",
        "normalisation": (
            f"z-scored with the weights' embedding statistics (hash {m.group('z')})"
            if m.group("z")
            else "none (raw pooled vectors)"
        ),
    }


def _morton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Z-order keys of lon/lat points (16 bits per axis)."""
    xi = np.clip((x + 180.0) / 360.0 * 65535, 0, 65535).astype(np.uint64)
    yi = np.clip((y + 90.0) / 180.0 * 65535, 0, 65535).astype(np.uint64)

    def spread(v: np.ndarray) -> np.ndarray:
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    return spread(xi) | (spread(yi) << np.uint64(1))


def region_name(lon: float, lat: float) -> str:
    """The 10-degree cell of a point, by its south-west corner: ``n40e010``, ``s20w060``."""
    if math.isnan(lon) or math.isnan(lat):
        return "none"
    la = int(math.floor(lat / REGION_DEGREES) * REGION_DEGREES)
    lo = int(math.floor(lon / REGION_DEGREES) * REGION_DEGREES)
    return f"{'n' if la >= 0 else 's'}{abs(la):02d}{'e' if lo >= 0 else 'w'}{abs(lo):03d}"


def _partition_keys(
    attrs: pa.Table, rows: np.ndarray, by: str | None, cx: np.ndarray, cy: np.ndarray
) -> list[str]:
    if by is None:
        return [""] * len(rows)
    if by == "year":
        years = pc.year(attrs.column("datetime").take(pa.array(rows))).to_pylist()
        return [f"year={y}" if y is not None else "year=unknown" for y in years]
    return [f"region={region_name(float(x), float(y))}" for x, y in zip(cx, cy, strict=True)]


def export_geoparquet(
    store: Any,
    out: str | Path,
    *,
    filters: Filters | None = None,
    partition_by: str | None = None,
    license: str | None = None,
    providers: Sequence[str] = (),
    datasets: Sequence[str] = (),
    row_group_mb: float = ROW_GROUP_MB,
    compression: str = "zstd",
) -> dict:
    """Write the chips of ``store`` (a :class:`~clay_search.store.store.Store` or a path).

    ``out``: a ``.parquet`` file, or a folder (``part-0.parquet`` inside, or one folder per
    partition). ``filters`` selects chips. ``license`` (SPDX id), ``providers`` (names) and
    ``datasets`` (ids or URLs) fill the ``emb`` metadata beside what the store knows (model id,
    weights hash, pooling, normalisation, time range, sensors, provenance of imported chips).
    Returns a report (files, rows, metadata written).
    """
    import shapely

    import clay_search

    st = store if hasattr(store, "attrs") else clay_search.connect(store, index="exact")
    if partition_by is not None and partition_by not in PARTITIONS:
        raise QueryError(f"--partition-by must be one of {PARTITIONS}, got {partition_by!r}")
    out = Path(out)
    single = out.suffix.lower() in {".parquet", ".geoparquet", ".gpq"}
    if single and partition_by:
        raise QueryError(f"--partition-by writes a folder of files; give a folder, not {out}")
    attrs = st.attrs
    rows = (
        st.engine.rows(filters)
        if filters is not None and not filters.empty
        else np.arange(attrs.num_rows)
    )
    if len(rows) == 0:
        raise QueryError(f"no chip in {st.path} matches the filters; nothing to export")
    eng = st.engine
    cx = (eng.minx[rows] + eng.maxx[rows]) / 2
    cy = (eng.miny[rows] + eng.maxy[rows]) / 2
    keys = np.array(_partition_keys(attrs, rows, partition_by, cx, cy), dtype=object)
    has_geom = ~np.isnan(cx)
    z = np.where(has_geom, _morton(np.nan_to_num(cx), np.nan_to_num(cy)), np.iinfo(np.uint64).max)
    order = np.lexsort((rows, z, keys))
    rows, cx, cy, keys = rows[order], cx[order], cy[order], keys[order]

    dim = st.dim
    bytes_per_row = dim * 4 + 256
    group_rows = int(max(1024, min(131_072, row_group_mb * 2**20 / bytes_per_row)))
    emb = _emb_metadata(st, attrs, rows, license=license, providers=providers, datasets=datasets)
    fields = [
        pa.field("chip_id", pa.string(), nullable=False),
        pa.field("geometry", pa.binary()),
        pa.field("bbox", pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])),
        pa.field("centre_lon", pa.float64()),
        pa.field("centre_lat", pa.float64()),
    ]
    fields += [attrs.schema.field(c) for c in COLUMNS if c != "chip_id"]
    fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    files: list[dict] = []
    for key in dict.fromkeys(keys.tolist()):
        sel = np.flatnonzero(keys == key)
        if single:
            path = out
        else:
            folder = out / key if key else out
            path = folder / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part_rows = rows[sel]
        geoms_present = attrs.column("geometry").take(pa.array(part_rows)).drop_null()
        gs = shapely.from_wkb(geoms_present.to_numpy(zero_copy_only=False))
        types = sorted({g.geom_type for g in gs})
        bbox = [float(v) for v in shapely.total_bounds(gs)] if len(gs) else None
        meta = {
            b"geo": json.dumps(geoparquet_metadata(types, bbox, covering="bbox")).encode(),
            EMB_KEY: json.dumps(emb).encode(),
            b"clay_search.export": json.dumps(
                {
                    "store": str(st.path),
                    "table_version": st.version,
                    "filters": filters.to_dict() if filters is not None else None,
                    "partition": key or None,
                }
            ).encode(),
        }
        schema = pa.schema(fields, metadata=meta)
        with pq.ParquetWriter(path, schema, compression=compression, write_statistics=True) as w:
            for start in range(0, len(sel), group_rows):
                idx = sel[start : start + group_rows]
                w.write_table(
                    _group(st, attrs, rows[idx], cx[idx], cy[idx], schema, dim),
                    row_group_size=len(idx),
                )
        files.append({"path": str(path), "rows": int(len(sel)), "partition": key or None})
    return {
        "store": str(st.path),
        "table_version": st.version,
        "rows": int(len(rows)),
        "files": files,
        "row_group_rows": group_rows,
        "emb": emb,
    }


def _group(
    st,
    attrs: pa.Table,
    rows: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    schema: pa.Schema,
    dim: int,
) -> pa.Table:
    """One row group: attributes from ``attrs``, vectors read by offset from the table."""
    sorted_rows = np.sort(rows)
    data = st.table.take_offsets(sorted_rows.tolist()).select(["chip_id", "embedding"]).to_arrow()
    got = data.column("chip_id").combine_chunks()
    want = attrs.column("chip_id").take(pa.array(sorted_rows))
    if not got.equals(want.combine_chunks() if isinstance(want, pa.ChunkedArray) else want):
        raise QueryError(f"store {st.path} changed while exporting; run the export again")
    back = np.searchsorted(sorted_rows, rows)
    emb = data.column("embedding").combine_chunks().take(pa.array(back))
    a = attrs.take(pa.array(rows))
    cols: dict[str, Any] = {
        "chip_id": a.column("chip_id"),
        "geometry": a.column("geometry"),
        "bbox": pa.StructArray.from_arrays(
            [a.column(c).combine_chunks() for c in ("minx", "miny", "maxx", "maxy")],
            names=["xmin", "ymin", "xmax", "ymax"],
        ),
        "centre_lon": pa.array(cx, pa.float64(), from_pandas=True),
        "centre_lat": pa.array(cy, pa.float64(), from_pandas=True),
        "embedding": emb.cast(pa.list_(pa.float32(), dim)),
    }
    for c in COLUMNS:
        cols.setdefault(c, a.column(c))
    return pa.table([cols[f.name] for f in schema], schema=schema)


def _emb_metadata(
    st,
    attrs: pa.Table,
    rows: np.ndarray,
    *,
    license: str | None,
    providers: Sequence[str],
    datasets: Sequence[str],
) -> dict:
    imported = getattr(st.info, "imported", None) or {}
    times = attrs.column("datetime").take(pa.array(rows)).drop_null()
    start = end = None
    if len(times):
        mm = pc.min_max(times)
        start = mm["min"].as_py().isoformat().replace("+00:00", "Z")
        end = mm["max"].as_py().isoformat().replace("+00:00", "Z")
    sensors = sorted(
        s for s in pc.unique(attrs.column("sensor").take(pa.array(rows))).to_pylist() if s
    )
    ds = [dict(d) for d in imported.get("datasets", [])]
    ds += [
        {"dataset_id": s, "dataset_source": s}
        for s in sensors
        if not any(d.get("dataset_id") == s for d in ds)
    ]
    ds += [{"dataset_id": d, "dataset_source": d} for d in datasets]
    prov = [dict(p) for p in imported.get("providers", [])]
    prov += [{"name": p, "roles": ["processor"]} for p in providers]
    model = dict(imported.get("model") or {})
    model.pop("id", None)
    desc = describe_model_id(st.model_id)
    if desc:
        model.setdefault("name", st.model_id)
        model.setdefault(
            "config",
            f"chip vector: {desc['pooling']} pooling of the encoder's "
            f"tokens; {desc['normalisation']}",
        )
    return build_emb(
        model_id=st.model_id,
        dim=st.dim,
        model=model,
        providers=prov,
        license=license or imported.get("license"),
        start=start,
        end=end,
        datasets=ds,
        clay_search={
            "model_id": st.model_id,
            **desc,
            "store_version": st.version,
            "chips": int(len(rows)),
            "imported": bool(imported),
        },
    )
