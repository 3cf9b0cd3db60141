"""Fixtures and helpers shared by the ingest tests (no tests here)."""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np
import pytest
import torch

from clay_search.model import ClayEncoder, get_config, save_weights

EUROSAT_ORDER = "B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A"


@pytest.fixture(scope="session", name="nano_weights")
def nano_weights_fixture(tmp_path_factory) -> Path:
    """A small random-weight nano encoder saved as clay-search weights (seeded)."""
    torch.manual_seed(0)
    cfg = get_config("nano")
    out = tmp_path_factory.mktemp("weights") / "nano"
    save_weights(ClayEncoder.from_config(cfg), cfg, out)
    return out


@pytest.fixture(scope="session", name="nano_embedder")
def nano_embedder_fixture(nano_weights):
    """An fp32 Embedder of the nano weights (deterministic on CPU)."""
    from clay_search.model import Embedder

    torch.set_num_threads(1)
    return Embedder.from_weights(nano_weights, precision="fp32")


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
