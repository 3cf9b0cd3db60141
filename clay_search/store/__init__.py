"""The store: a folder holding the LanceDB chips table, its FAISS index and run manifests.

Layers: :mod:`~clay_search.store.layout` (the folder, ``store.json``, the table) ->
:mod:`clay_search.index` (FAISS over a table; imports nothing from here) ->
:mod:`~clay_search.store.indexing` (the store's index, for writers) ->
:mod:`~clay_search.store.store` (the query side, read-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clay_search.store.layout import (
    STORE_ENV_VAR,
    WEIGHTS_ENV_VAR,
    StoreInfo,
    open_chips_table,
    open_or_create_store,
    read_store_info,
)

if TYPE_CHECKING:  # pragma: no cover
    from clay_search.index import IndexCheck, IndexReport, LoadedIndex
    from clay_search.location import RemotePath
    from clay_search.store.store import Store

__all__ = [
    "STORE_ENV_VAR",
    "WEIGHTS_ENV_VAR",
    "StoreInfo",
    "check_index",
    "connect",
    "load_index",
    "open_chips_table",
    "open_or_create_store",
    "read_store_info",
    "sync_index",
]


def connect(
    uri: str | Path,
    *,
    version: int | None = None,
    weights: str | Path | None = None,
    index: str = "auto",
) -> Store:
    """Open a store for querying, read-only (see :func:`clay_search.store.store.connect`)."""
    from clay_search.store.store import connect as _connect

    return _connect(uri, version=version, weights=weights, index=index)


def sync_index(
    store_path: str | Path | RemotePath,
    *,
    kind: str = "auto",
    rebuild: bool = False,
    seed: int = 0,
    wait: float = 60.0,
) -> IndexReport:
    """Bring the store's index up to its latest table version (writers call this after a
    commit; see :func:`clay_search.store.indexing.sync_index`). FAISS loads on first use.
    Holds the store's write lock, waiting up to ``wait`` s for another writer."""
    from clay_search.store.indexing import sync_index as _sync

    return _sync(store_path, kind=kind, rebuild=rebuild, seed=seed, wait=wait)


def check_index(store_path: str | Path, *, atol: float = 1e-5) -> IndexCheck:
    """Compare the store's index with its table row by row."""
    from clay_search.store.indexing import check_index as _check

    return _check(store_path, atol=atol)


def load_index(store_path: str | Path) -> LoadedIndex:
    """Read the store's index."""
    from clay_search.store.indexing import load_index as _load

    return _load(store_path)
