"""The chips table: its Arrow schema and the columns every store holds.

One LanceDB table per store, named ``chips``. See README ("The chips table") for the meaning of
each column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

TABLE_NAME = "chips"

#: Columns other than the embeddings, in order.
BASE_FIELDS: list[pa.Field] = [
    pa.field("chip_id", pa.string(), nullable=False),
    pa.field("geometry", pa.binary()),  # WKB polygon, EPSG:4326 (lon, lat); null if unknown
    pa.field("minx", pa.float64()),
    pa.field("miny", pa.float64()),
    pa.field("maxx", pa.float64()),
    pa.field("maxy", pa.float64()),
    pa.field("datetime", pa.timestamp("us", tz="UTC")),
    pa.field("sensor", pa.string()),
    pa.field("gsd", pa.float32()),
    pa.field("source", pa.string()),
    pa.field("item_id", pa.string()),
    pa.field("crs", pa.string()),
    pa.field("window", pa.string()),  # JSON: {"col_off", "row_off", "width", "height"}
    pa.field("place_id", pa.string()),  # same grid cell on any date: clay_search/places.py
    pa.field("label", pa.string()),
    # quality score: masked reconstruction error (clay_search/model/reconstruction.py); null
    # when the weights have no decoder or ingest ran with --no-quality-score
    pa.field("recon_error", pa.float32()),
    pa.field("thumbnail", pa.binary()),  # small RGB PNG
]


def chips_schema(dim: int, *, patch_dim: int | None = None) -> pa.Schema:
    """Arrow schema of the chips table for embeddings of size ``dim``.

    ``patch_dim`` (L*D) adds the optional ``patch_embeddings`` column.
    """
    fields = [*BASE_FIELDS, pa.field("embedding", pa.list_(pa.float32(), dim))]
    if patch_dim:
        fields.append(pa.field("patch_embeddings", pa.list_(pa.float32(), patch_dim)))
    fields.append(pa.field("model_id", pa.string()))
    return pa.schema(fields, metadata={b"clay_search.schema_version": b"1"})


def _vectors(value, size: int, n: int, name: str) -> pa.Array:
    """``[N, size]`` float32 vectors (an array, a list of vectors, or a FixedSizeList array)."""
    import numpy as np

    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        arr = value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value
        return arr.cast(pa.list_(pa.float32(), size))
    if isinstance(value, np.ndarray):
        mat = value
    else:
        vals = list(value)
        if any(v is None for v in vals):  # some rows without: nulls (all or nothing per row)
            flat = [None if v is None else np.asarray(v, np.float32).ravel().tolist() for v in vals]
            return pa.array(flat, pa.list_(pa.float32(), size))
        mat = (
            np.stack([np.asarray(v, np.float32).ravel() for v in vals])
            if vals
            else np.zeros((0, size), np.float32)
        )
    mat = np.ascontiguousarray(mat, dtype=np.float32).reshape(len(mat), -1)
    if mat.shape != (n, size):
        raise ValueError(f"{name} must be [{n}, {size}]; got {list(mat.shape)}")
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.ravel()), size)


def chips_table(columns: Mapping[str, Any], schema: pa.Schema) -> pa.Table:
    """The one builder of chips-table rows: an Arrow table of ``schema`` from ``columns``.

    ``columns`` maps column names to a list, a numpy array or an Arrow array, one value per
    row (a scalar, e.g. ``model_id="..."``, is repeated). Every column of ``schema`` that is
    not given is null, so a new column (added to :data:`BASE_FIELDS`) needs no change here.
    ``embedding`` (and ``patch_embeddings``) are ``[N, D]`` float32: a 2-D array, a list of
    vectors or a FixedSizeList array; ``patch_embeddings`` entries may be None (null rows).
    Names not in ``schema`` raise ``ValueError``.
    """
    extra = sorted(set(columns) - set(schema.names))
    if extra:
        raise ValueError(f"columns {extra} are not in the chips table ({schema.names})")
    lengths = {len(v) for v in columns.values() if not _is_scalar(v)}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    arrays = []
    for f in schema:
        value = columns.get(f.name)
        if value is None:
            arrays.append(pa.nulls(n, f.type))
        elif pa.types.is_fixed_size_list(f.type):
            arrays.append(_vectors(value, f.type.list_size, n, f.name))
        elif _is_scalar(value):
            arrays.append(pa.array([value] * n, type=f.type))
        elif isinstance(value, (pa.Array, pa.ChunkedArray)):
            arrays.append(value.cast(f.type))
        else:
            arrays.append(pa.array(list(value), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_to_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list]:
    """``{name: [row[name] for row in rows]}`` for the ``names`` any row has (for
    :func:`chips_table` from row dicts)."""
    present = [n for n in names if any(n in r for r in rows)]
    return {n: [r.get(n) for r in rows] for n in present}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bytes, int, float, bool))
