"""Helpers that build real test stores: real chips, real embeddings, real footprints.

Plain functions; the fixtures that use them are in conftest.py.

Chips are EuroSAT MS GeoTIFFs (Sentinel-2, 13 bands, UTM); embeddings come from a Clay nano
encoder with seeded random weights (or any weights folder given); footprints are the GeoTIFF
bounds reprojected to EPSG:4326. EuroSAT has no acquisition dates, so each chip gets a seeded
date in 2018-2021 (said so in ``source`` metadata of the rows: ``item_id`` is ``eurosat``).
Rows are written with the chips schema straight into LanceDB, the way the ingest writer does.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

from clay_search.ingest.datasets import EUROSAT_MS_BANDS

# EuroSAT MS band order (B8A last) -> the bands that have normalisation statistics
EUROSAT_BANDS = list(EUROSAT_MS_BANDS)
USE_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def nano_weights(folder: Path) -> Path:
    """A Clay nano encoder with seeded random weights saved in ``folder`` (the conftest
    ``nano_weights`` fixture; tests that need a second weights folder call this)."""
    import torch

    from clay_search.model.checkpoints import save_weights
    from clay_search.model.clay import ClayEncoder, get_config

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    cfg = get_config("nano")
    save_weights(ClayEncoder.from_config(cfg), cfg, folder)
    return folder


def eurosat_files(data_dir: Path, per_class: int | None = None) -> list[Path]:
    """EuroSAT MS GeoTIFFs, sorted, at most ``per_class`` per class."""
    files: list[Path] = []
    for cls_dir in sorted(p for p in (data_dir / "eurosat_ms").iterdir() if p.is_dir()):
        tifs = sorted(cls_dir.glob("*.tif"))
        files.extend(tifs[:per_class] if per_class else tifs)
    return files


def _thumbnail(rgb: np.ndarray) -> bytes:
    from PIL import Image

    x = rgb.astype(np.float32)
    lo, hi = np.percentile(x, 2), np.percentile(x, 98)
    img = np.clip((x - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.transpose(img, (1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


def read_chips(files: list[Path], seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Raw ``[N, 10, 64, 64]`` pixels of the usable bands and one row dict per chip."""
    import rasterio
    from rasterio.windows import Window

    from clay_search.geo import footprint

    rng = np.random.default_rng(seed)
    idx = [EUROSAT_BANDS.index(b) for b in USE_BANDS]
    raws, rows = [], []
    base = datetime(2018, 1, 1, tzinfo=UTC)
    for f in files:
        with rasterio.open(f) as src:
            raw = src.read()
            full = Window(0, 0, src.width, src.height)
            fp = shapely.from_wkb(
                footprint(src.crs, src.transform, full, size=(src.width, src.height)).wkb
            )
            crs = src.crs.to_string()
            h, w = src.height, src.width
        raws.append(raw[idx])
        minx, miny, maxx, maxy = fp.bounds
        rows.append(
            {
                "chip_id": hashlib.sha1(f"{f.parent.name}/{f.name}".encode()).hexdigest()[:16],
                "geometry": shapely.to_wkb(fp),
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                "datetime": base + timedelta(days=int(rng.integers(0, 4 * 365))),
                "sensor": "sentinel-2-l2a",
                "gsd": 10.0,
                "source": str(f),
                "item_id": "eurosat",
                "crs": crs,
                "window": json.dumps({"col_off": 0, "row_off": 0, "width": w, "height": h}),
                "label": f.parent.name,
                "thumbnail": _thumbnail(raw[[3, 2, 1]]),
            }
        )
    return np.stack(raws), rows


def embed_chips(raw: np.ndarray, rows: list[dict], weights: Path, batch: int = 64) -> np.ndarray:
    """Chip embeddings (the weights' pooling) of the chips with the weights in ``weights``."""
    from clay_search.model.embedder import Embedder

    emb = Embedder.from_weights(weights, precision="fp32")
    out = []
    for s in range(0, len(raw), batch):
        part = rows[s : s + batch]
        lonlats = [((r["minx"] + r["maxx"]) / 2, (r["miny"] + r["maxy"]) / 2) for r in part]
        out.append(
            emb.embed_raw(
                raw[s : s + batch].astype(np.float32),
                "sentinel-2-l2a",
                USE_BANDS,
                datetimes=[r["datetime"] for r in part],
                lonlats=lonlats,
            ).embedding
        )
    return np.vstack(out).astype(np.float32)


def rows_table(rows: list[dict], vectors: np.ndarray, model_id: str) -> pa.Table:
    """An Arrow table in the chips schema (built by the store's one row builder)."""
    from clay_search.schema import chips_schema, chips_table, rows_to_columns

    schema = chips_schema(vectors.shape[1])
    cols: dict = rows_to_columns(rows, schema.names)
    cols["embedding"] = vectors
    cols["model_id"] = model_id
    return chips_table(cols, schema)


def build_store(
    store: Path,
    data_dir: Path,
    weights: Path,
    *,
    per_class: int | None = None,
    batches: int = 1,
    sync: bool = True,
) -> Path:
    """A store of EuroSAT MS chips in ``store`` (written in ``batches`` commits)."""
    from clay_search.model.checkpoints import load_encoder
    from clay_search.store import open_chips_table, open_or_create_store, sync_index

    files = eurosat_files(data_dir, per_class)
    raw, rows = read_chips(files)
    vectors = embed_chips(raw, rows, weights)
    _, info = load_encoder(weights)
    store_info = open_or_create_store(store, info.model_id, vectors.shape[1])
    table = open_chips_table(store_info)
    bounds = np.linspace(0, len(rows), batches + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        table.add(rows_table(rows[a:b], vectors[a:b], info.model_id))
    if sync:
        sync_index(store)
    return store
