"""Helpers shared by the ingest tests (no tests here; fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np

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
