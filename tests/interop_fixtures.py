"""Small embeddings files in the layouts other publishers use, written by a seeded generator.

The schemas follow the published samples (column names, types, ``geo``/``emb`` metadata):
Clay v0 (``source.coop/clay/clay-model-v0-embeddings``: ``index``, ``source_url``, ``date``,
``embeddings``, ``geometry``), Clay v1.5 (``id``, ``datetime``, ``embeddings``, ``geometry``),
Earth Index (``id``, ``embedding``, point ``geometry``, ``emb`` metadata), Planet's survey
sample (``datetime``, ``embedding`` float32, ``geometry`` declared EPSG:3857 while the
coordinates are degrees, two null embeddings), Major TOM embeddings (``unique_id``,
``embedding``, ``timestamp``, ``product_id``, ``grid_cell``, ``grid_row_u``, ``grid_col_r``,
``geometry``, ``centre_lat``/``centre_lon``, ``utm_footprint``, ``utm_crs``, ``pixel_bbox``).
Coordinates are real places (Sentinel-2 tiles over Brazil, Portugal, Germany).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS, Transformer

SEED = 19


def _geo(
    crs: str | None, types: list[str], bbox: list[float] | None = None, version: str = "1.0.0"
) -> bytes:
    col: dict = {"encoding": "WKB", "geometry_types": types}
    if crs is not None:
        col["crs"] = CRS.from_user_input(crs).to_json_dict()
    if bbox is not None:
        col["bbox"] = bbox
    return json.dumps(
        {"version": version, "primary_column": "geometry", "columns": {"geometry": col}}
    ).encode()


def _boxes(lon0: float, lat0: float, n: int, size: float = 0.01) -> list:
    return [
        shapely.box(lon0 + i * size, lat0, lon0 + (i + 1) * size, lat0 + size) for i in range(n)
    ]


def _vectors(rng, n: int, dim: int) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


def clay_v0(path: Path, n: int = 6, dim: int = 768) -> Path:
    """Clay v0: list<float> ``embeddings``, ``date`` (date32), ``source_url``, ``index``."""
    rng = np.random.default_rng(SEED)
    geoms = _boxes(-8.65, 41.15, n)  # Porto, MGRS 29TNF
    vec = _vectors(rng, n, dim)
    table = pa.table(
        {
            "index": pa.array(np.arange(n), pa.int64()),
            "source_url": [f"s3://clay-tiles-02/02/29TNF/29TNF_20220610_{i}.tif" for i in range(n)],
            "date": pa.array([date(2022, 6, 10)] * n, pa.date32()),
            "embeddings": pa.array(list(vec), pa.list_(pa.float32())),
            "geometry": pa.array([shapely.to_wkb(g) for g in geoms], pa.binary()),
        }
    )
    pq.write_table(table.replace_schema_metadata({b"geo": _geo("EPSG:4326", ["Polygon"])}), path)
    return path


def clay_v15(path: Path, n: int = 6, dim: int = 1024) -> Path:
    """Clay v1.5 (LGND): fixed-size ``embeddings``, ``datetime`` timestamp, ``id``."""
    rng = np.random.default_rng(SEED + 1)
    geoms = _boxes(13.35, 52.50, n)  # Berlin, MGRS 33UUU
    vec = _vectors(rng, n, dim)
    table = pa.table(
        {
            "id": [f"33UUU_{i:04d}" for i in range(n)],
            "datetime": pa.array(
                [datetime(2023, 5, 1, 10, 20, 31, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")
            ),
            "embeddings": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim),
            "geometry": pa.array([shapely.to_wkb(g) for g in geoms], pa.binary()),
        }
    )
    pq.write_table(
        table.replace_schema_metadata({b"geo": _geo(None, ["Polygon"], version="1.1.0")}), path
    )
    return path


EARTH_INDEX_EMB = {
    "version": "0.0.1",
    "model": {
        "id": "dinov2_vits14_softcon",
        "version": "2.0.0",
        "family": "DinoV2",
        "name": "SoftCon",
        "config": "class token of the last layer",
        "source": "https://github.com/zhu-xlab/softcon",
    },
    "providers": [{"name": "EarthGenome", "url": "https://earthgenome.org"}],
    "license": "CC-BY-4.0",
    "datetime": "2023-07-02T00:00:00Z",
    "start_datetime": "2023-01-01T00:00:00Z",
    "end_datetime": "2024-01-01T00:00:00Z",
    "datasets": [
        {
            "dataset_source": "https://stac.earthindex.dev/collections/sentinel-2-l2a-aws",
            "dataset_name": "Sentinel2 Temporal Mosaics",
        }
    ],
    "embedding_dim": 384,
    "embedding_quantization": "None",
}


def earth_index(path: Path, n: int = 8, dim: int = 384, *, int8: bool = False) -> Path:
    """Earth Index (MGRS 21MNT, Brazil): ``id``, ``embedding``, point ``geometry``, ``emb``.

    ``int8=True``: values quantised to int8 with ``scale=0.02`` named in the ``emb`` metadata.
    """
    rng = np.random.default_rng(SEED + 2)
    pts = [shapely.Point(-55.9 + 0.003 * i, -5.2 + 0.002 * i) for i in range(n)]
    vec = _vectors(rng, n, dim)
    emb = dict(EARTH_INDEX_EMB, embedding_dim=dim)
    if int8:
        q = np.clip(np.round(vec / 0.02), -127, 127).astype(np.int8)
        col = pa.array(list(q), pa.list_(pa.int8()))
        emb["embedding_quantization"] = "int8, scale=0.02"
    else:
        col = pa.array(list(vec), pa.list_(pa.float32()))
    table = pa.table(
        {
            "geometry": pa.array([shapely.to_wkb(p) for p in pts], pa.binary()),
            "id": [f"21MNT_{i}" for i in range(n)],
            "embedding": col,
        }
    )
    meta = {b"geo": _geo("EPSG:4326", ["Point"]), b"emb": json.dumps(emb).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def planet_sample(path: Path, dim: int = 256, *, crs: str = "EPSG:3857") -> Path:
    """Planet's survey sample: 5 rows, 2 null embeddings, declared EPSG:3857, degree coordinates."""
    rng = np.random.default_rng(SEED + 3)
    geoms = _boxes(-48.3292, -10.1862, 5, size=0.002)
    vec = _vectors(rng, 5, dim)
    emb = [list(vec[0]), None, list(vec[2]), None, list(vec[4])]
    b = shapely.total_bounds(np.array(geoms))
    table = pa.table(
        {
            "datetime": pa.array(
                [datetime(2024, 3, i + 1, 13, 5) for i in range(5)], pa.timestamp("ns")
            ),
            "centroid_lat": [g.centroid.y for g in geoms],
            "centroid_lon": [g.centroid.x for g in geoms],
            "geometry": pa.array([shapely.to_wkb(g) for g in geoms], pa.binary()),
            "chip_size": pa.array([224] * 5, pa.int64()),
            "cloud_percent": pa.array([0, 3, None, 10, 0], pa.int64()),
            "embedding": pa.array(emb, pa.list_(pa.float32())),
        }
    )
    meta = {b"geo": _geo(crs, ["Polygon"], bbox=[float(v) for v in b])}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def utm_file(path: Path, n: int = 4, dim: int = 64) -> Path:
    """A plain GeoParquet in EPSG:32629 (UTM 29N, Lisbon) with a float16 ``vec`` column."""
    rng = np.random.default_rng(SEED + 4)
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32629", always_xy=True)
    x0, y0 = tr.transform(-9.14, 38.72)
    geoms = [shapely.box(x0 + i * 2560, y0, x0 + (i + 1) * 2560, y0 + 2560) for i in range(n)]
    vec = _vectors(rng, n, dim).astype(np.float16)
    table = pa.table(
        {
            "tile": [f"t{i}" for i in range(n)],
            "when": [f"2021-08-1{i}" for i in range(n)],
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel(), pa.float16()), dim),
            "geometry": pa.array([shapely.to_wkb(g) for g in geoms], pa.binary()),
        }
    )
    pq.write_table(table.replace_schema_metadata({b"geo": _geo("EPSG:32629", ["Polygon"])}), path)
    return path


def majortom(path: Path, dim: int = 128, *, with_geometry: bool = True) -> Path:
    """Major TOM embeddings (Core-S2L2A style): one fragment per grid cell (Italy, Spain)."""
    from clay_search.ingest.importer import majortom_cell_polygons

    rng = np.random.default_rng(SEED + 5)
    cells = ["458U_115R", "458U_116R", "459U_115R", "436U_1L"]
    polys = majortom_cell_polygons(cells)
    vec = _vectors(rng, len(cells), dim)
    cols = {
        "unique_id": [f"{c}-2020" for c in cells],
        "embedding": pa.array(list(vec), pa.list_(pa.float32())),
        "timestamp": ["20200615T104031"] * len(cells),
        "product_id": [
            f"S2A_MSIL2A_20200615T104031_N0214_R008_T32UNE_{i}" for i in range(len(cells))
        ],
        "grid_cell": cells,
        "grid_row_u": pa.array([int(c.split("U")[0]) for c in cells], pa.int16()),
        "grid_col_r": pa.array([115, 116, 115, -1], pa.int16()),
        "centre_lat": pa.array([p.centroid.y for p in polys], pa.float32()),
        "centre_lon": pa.array([p.centroid.x for p in polys], pa.float32()),
        "utm_footprint": [p.wkt for p in polys],
        "utm_crs": ["EPSG:32632"] * len(cells),
        "pixel_bbox": pa.array([[0, 0, 224, 224]] * len(cells), pa.list_(pa.int64())),
    }
    meta = {}
    if with_geometry:
        cols["geometry"] = pa.array([shapely.to_wkb(p) for p in polys], pa.binary())
        meta[b"geo"] = _geo("EPSG:4326", ["Polygon"])
    else:
        del cols["centre_lat"], cols["centre_lon"]
    pq.write_table(pa.table(cols).replace_schema_metadata(meta or None), path)
    return path


def big_file(path: Path, *, rows: int, dim: int = 256, row_group: int = 8192) -> Path:
    """A large emb-convention file written row group by row group (bounded memory)."""
    rng = np.random.default_rng(SEED + 6)
    emb = dict(
        EARTH_INDEX_EMB, embedding_dim=dim, model={"id": "big-test-model", "source": "local"}
    )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("geometry", pa.binary()),
        ],
        metadata={b"geo": _geo("EPSG:4326", ["Point"]), b"emb": json.dumps(emb).encode()},
    )
    with pq.ParquetWriter(path, schema, compression="none") as w:
        for start in range(0, rows, row_group):
            m = min(row_group, rows - start)
            lon = rng.uniform(-10, 30, m)
            lat = rng.uniform(35, 60, m)
            vec = rng.standard_normal((m, dim), dtype=np.float32)
            w.write_table(
                pa.table(
                    {
                        "id": [f"r{start + i}" for i in range(m)],
                        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim),
                        "geometry": pa.array(shapely.to_wkb(shapely.points(lon, lat)), pa.binary()),
                    },
                    schema=schema,
                )
            )
    return path
