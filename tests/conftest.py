"""Shared pytest fixtures: where the repository and the real data are, weights, test stores.

Core search/filter/refine tests use ``sample_store`` (built from the repository's ``sample/``);
``shared_store`` (from ``../shared/data``) is for the extra tests and skips where it is absent.
Store-building helpers are plain functions in ``store_fixtures.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``../shared/data`` next to the checkout, or the folder $CLAY_SEARCH_SHARED_DATA names.
SHARED_DATA = Path(
    os.environ.get("CLAY_SEARCH_SHARED_DATA") or (REPO_ROOT / ".." / "shared" / "data")
).resolve()
SAMPLE_DIR = REPO_ROOT / "sample"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real open imagery; or $CLAY_SEARCH_SHARED_DATA); tests using it skip
    where it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only in the team's checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small real-imagery sample shipped in the repository (``sample/``)."""
    if not SAMPLE_DIR.exists():
        pytest.fail("sample/ is missing from the repository")
    return SAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Point clay-search's cache folder (precision calibrations, ...) at a session temp folder.

    Tests never write into the user's ``~/.cache``; CLI subprocesses inherit the variable.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAY_SEARCH_HOME", str(tmp_path_factory.mktemp("clay-search-home")))
        yield


@pytest.fixture(scope="session")
def nano_weights(tmp_path_factory) -> Path:
    """A Clay nano encoder with seeded random weights (seed 0), saved as clay-search weights."""
    from store_fixtures import nano_weights as save_nano

    return save_nano(tmp_path_factory.getbasetemp() / "nano_weights")


@pytest.fixture(scope="session")
def nano_embedder(nano_weights):
    """An fp32 Embedder of the nano weights, deterministic on CPU (one torch thread while the
    session uses it; the thread count is restored afterwards)."""
    import torch

    from clay_search.model import Embedder

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Embedder.from_weights(nano_weights, precision="fp32")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sample_store(sample_dir, nano_weights, tmp_path_factory) -> Path:
    """A store of the 30 sample EuroSAT chips written in 3 commits (3 fragments), indexed.
    Read-only: copy it before writing."""
    from store_fixtures import build_store

    root = tmp_path_factory.mktemp("sample_store")
    return build_store(root / "store", sample_dir, nano_weights, batches=3)


@pytest.fixture(scope="session")
def shared_store(shared_data, nano_weights, tmp_path_factory) -> Path:
    """A store of every EuroSAT MS chip in ``../shared/data`` (one commit), indexed. Read-only."""
    from store_fixtures import build_store

    root = tmp_path_factory.mktemp("shared_store")
    return build_store(root / "store", shared_data, nano_weights)
