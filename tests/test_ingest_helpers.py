"""Helpers shared by the ingest tests (no tests here; fixtures are in conftest.py)."""

from __future__ import annotations

import io
from pathlib import Path

import lancedb
import numpy as np
from PIL import Image

EUROSAT_ORDER = "B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A"


def read_chips(store: Path):
    """The store's chips table as a pandas frame sorted by chip id."""
    t = lancedb.connect(str(store / "lancedb")).open_table("chips")
    return t.to_pandas().sort_values("chip_id").reset_index(drop=True)


def table_version(store: Path) -> int:
    """The chips table's LanceDB version."""
    return int(lancedb.connect(str(store / "lancedb")).open_table("chips").version)


def embeddings(df) -> np.ndarray:
    """The embedding column as a [N, D] float32 matrix."""
    return np.stack(df["embedding"].to_numpy()).astype(np.float32)


def thumbnail_pixels(df) -> np.ndarray:
    """The thumbnail column decoded: ``[N, h, w, 3]`` uint8.

    Compare thumbnails by these pixels, not by their PNG bytes: a deflate stream is not
    canonical (ISA-L, used when installed, picks its matches by the CPU's code path), so two
    processes can encode the same picture to different bytes.
    """
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in df["thumbnail"]])
