"""The store's FAISS index (``<store>/index/``): what writers call after a commit.

Writers (ingest, import, predict) call :func:`sync_index` after they commit; queries only read
the index (a :class:`~clay_search.store.store.Store` never syncs on its own: ``store.sync()`` or
``clay-search index --sync`` do it on request).
"""

from __future__ import annotations

from pathlib import Path

from clay_search.errors import StoreNotFoundError
from clay_search.index.sync import (
    IndexCheck,
    IndexReport,
    LoadedIndex,
    check_table_index,
    sync_table_index,
)
from clay_search.index.sync import load_index as _load_folder
from clay_search.location import RemotePath
from clay_search.store.layout import open_chips_table, read_store_info


def sync_index(
    store_path: str | Path | RemotePath,
    *,
    kind: str = "auto",
    rebuild: bool = False,
    seed: int = 0,
    wait: float = 60.0,
) -> IndexReport:
    """Bring ``<store>/index/`` up to the store's latest table version (see
    :func:`clay_search.index.sync_table_index`), holding the store's write lock
    (:mod:`clay_search.store.lock`): another writer is waited for up to ``wait`` seconds, then
    :class:`~clay_search.errors.StoreBusyError`."""
    from clay_search.store.lock import store_lock

    info = read_store_info(store_path)
    with store_lock(info.path, "index sync", wait=wait):
        return _sync_locked(info, kind=kind, rebuild=rebuild, seed=seed)


def _sync_locked(info, *, kind: str, rebuild: bool, seed: int) -> IndexReport:
    try:
        table = open_chips_table(info, create=False)
    except StoreNotFoundError:
        table = open_chips_table(info, create=True)
    return sync_table_index(
        table,
        info.index_path,
        model_id=info.model_id,
        dim=info.dim,
        kind=kind,
        rebuild=rebuild,
        seed=seed,
    )


def check_index(store_path: str | Path, *, atol: float = 1e-5) -> IndexCheck:
    """Compare the store's index with its latest table version row by row."""
    info = read_store_info(store_path)
    table = open_chips_table(info, create=False)
    return check_table_index(table, info.index_path, dim=info.dim, atol=atol)


def load_index(store_path: str | Path) -> LoadedIndex:
    """Read the store's index (:class:`~clay_search.errors.IndexStaleError` if missing)."""
    return _load_folder(read_store_info(store_path).index_path)
