"""The chips table: its Arrow schema and the columns every store holds.

One LanceDB table per store, named ``chips``. See README ("The chips table") for the meaning of
each column.
"""

from __future__ import annotations

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
