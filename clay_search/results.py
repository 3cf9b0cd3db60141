"""Search results: one Arrow table of chips with ``score`` and ``rank``, and its exports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

#: Columns never written to GeoJSON properties (binary or huge).
BINARY_COLUMNS = (
    "geometry",
    "thumbnail",
    "embedding",
    "patch_embeddings",
    "thumbnail_before",
    "thumbnail_after",
)
#: The CRS every export names (coordinates are always lon/lat).
EXPORT_CRS = "EPSG:4326"


class Results:
    """Ranked chips from one table version.

    ``table`` holds the chips columns (no embeddings) + ``score`` (higher is better) + ``rank``
    (1 = best). Thumbnails are read from the store on first use of :meth:`to_arrow`.
    """

    def __init__(
        self,
        table: pa.Table,
        *,
        version: int | None,
        meta: dict | None = None,
        fetch: Callable[[pa.Table], pa.Table] | None = None,
    ) -> None:
        self._table = table
        self._fetch = fetch
        self.version = version
        self.meta = meta or {}

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"Results({len(self)} chips, table version {self.version})"

    def head(self, n: int) -> Results:
        """The first ``n`` results (thumbnails still read on demand, for those rows only)."""
        return Results(
            self._table.slice(0, max(int(n), 0)), version=self.version, meta=dict(self.meta),
            fetch=self._fetch,
        )  # fmt: skip

    @property
    def chip_ids(self) -> list[str]:
        """Chip ids, best first."""
        return self._table.column("chip_id").to_pylist()

    @property
    def scores(self) -> np.ndarray:
        """Scores, best first."""
        return self._table.column("score").to_numpy()

    def to_arrow(self) -> pa.Table:
        """The results as an Arrow table (``score``, ``rank`` and the chips columns)."""
        if self._fetch is not None:
            self._table = self._fetch(self._table)
            self._fetch = None
        out = self._table
        meta = dict(out.schema.metadata or {})
        meta[b"clay_search.results"] = json.dumps(
            {"table_version": self.version, **self.meta}, default=str
        ).encode()
        return out.replace_schema_metadata(meta)

    def to_pandas(self):
        """A pandas DataFrame (geometry stays WKB bytes)."""
        return self.to_arrow().to_pandas()

    def to_geopandas(self, *, merge: bool = False):
        """A GeoDataFrame in EPSG:4326 (``merge=True``: touching hits unioned into polygons)."""
        import geopandas as gpd

        table = self.merged() if merge else self.to_arrow()
        df = table.drop_columns(["geometry"]).to_pandas()
        geom = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geom, crs=EXPORT_CRS))

    def merged(self) -> pa.Table:
        """Touching or overlapping footprints unioned: one row per connected group.

        Columns: ``geometry``, ``chip_ids`` (list), ``count``, ``score`` (best in the group),
        ``mean_score``, ``rank`` (by best score). Chips without a footprint are left out.
        """
        table = self.to_arrow()
        wkb = table.column("geometry").to_numpy(zero_copy_only=False)
        keep = np.array([w is not None for w in wkb], dtype=bool)
        geoms = shapely.from_wkb(np.where(keep, wkb, None))
        ids = np.array(table.column("chip_id").to_pylist(), dtype=object)
        scores = table.column("score").to_numpy()
        idx = np.flatnonzero(keep)
        parent = {int(i): int(i) for i in idx}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        tree = shapely.STRtree(geoms[idx])
        left, right = tree.query(geoms[idx], predicate="intersects")
        for a, b in zip(idx[left], idx[right], strict=True):
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[rb] = ra
        groups: dict[int, list[int]] = {}
        for i in idx:
            groups.setdefault(find(int(i)), []).append(int(i))
        rows = sorted(groups.values(), key=lambda g: -float(scores[g].max()))
        return pa.table(
            {
                "geometry": pa.array(
                    [shapely.to_wkb(shapely.union_all(geoms[g])) for g in rows], pa.binary()
                ),
                "chip_ids": pa.array([ids[g].tolist() for g in rows], pa.list_(pa.string())),
                "count": pa.array([len(g) for g in rows], pa.int32()),
                "score": pa.array([float(scores[g].max()) for g in rows], pa.float32()),
                "mean_score": pa.array([float(scores[g].mean()) for g in rows], pa.float32()),
                "rank": pa.array(np.arange(1, len(rows) + 1), pa.int32()),
            }
        )

    def to_geojson(self, path: str | Path, *, merge: bool = False) -> Path:
        """Write a GeoJSON FeatureCollection (properties without binary columns)."""
        table = self.merged() if merge else self.to_arrow()
        props = table.drop_columns([c for c in BINARY_COLUMNS if c in table.column_names])
        records = props.to_pylist()
        wkb = table.column("geometry").to_pylist()
        features = []
        for rec, g in zip(records, wkb, strict=True):
            geometry = None if g is None else shapely.geometry.mapping(shapely.from_wkb(g))
            features.append(
                {
                    "type": "Feature",
                    "geometry": geometry,
                    "properties": {k: _jsonable(v) for k, v in rec.items()},
                }
            )
        doc = {"type": "FeatureCollection", "features": features}
        out = Path(path)
        out.write_text(json.dumps(doc))
        return out

    def to_geoparquet(self, path: str | Path, *, merge: bool = False) -> Path:
        """Write GeoParquet 1.1 (WKB ``geometry`` in lon/lat, ``geo`` metadata).

        The CRS is recorded as EPSG:4326 (coordinates lon/lat, as GeoParquet requires), the CRS
        GeoPandas gives GeoJSON and :meth:`to_geopandas`: all three exports compare equal.
        """
        table = self.merged() if merge else self.to_arrow()
        geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        present = geoms[~shapely.is_missing(geoms)]
        types = sorted({g.geom_type for g in present})
        bbox = [float(v) for v in shapely.total_bounds(present)] if len(present) else None
        meta = dict(table.schema.metadata or {})
        meta[b"geo"] = json.dumps(geoparquet_metadata(types, bbox)).encode()
        out = Path(path)
        pq.write_table(table.replace_schema_metadata(meta), out)
        return out


def geoparquet_metadata(
    geometry_types: list[str], bbox: list[float] | None, *, covering: str | None = None
) -> dict:
    """GeoParquet 1.1.0 ``geo`` metadata for a WKB ``geometry`` column in lon/lat (EPSG:4326).

    ``covering``: name of a ``struct<xmin, ymin, xmax, ymax>`` bbox column (GeoParquet 1.1
    covering), which lets readers skip row groups by their column statistics.
    """
    from pyproj import CRS

    crs = CRS.from_user_input(EXPORT_CRS).to_json_dict()
    col_meta: dict[str, Any] = {"encoding": "WKB", "geometry_types": geometry_types, "crs": crs}
    if bbox is not None:
        col_meta["bbox"] = bbox
    if covering:
        col_meta["covering"] = {
            "bbox": {k: [covering, k] for k in ("xmin", "ymin", "xmax", "ymax")}
        }
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col_meta}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, float) and v != v:
        return None
    return v
