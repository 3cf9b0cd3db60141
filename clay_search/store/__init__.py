"""The store: a folder holding the LanceDB chips table, its FAISS index and run manifests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clay_search.store.layout import (
    StoreInfo,
    open_chips_table,
    open_or_create_store,
    read_store_info,
)

if TYPE_CHECKING:  # pragma: no cover
    from clay_search.store.store import Store

__all__ = ["StoreInfo", "connect", "open_chips_table", "open_or_create_store", "read_store_info"]


def connect(uri: str, **kwargs: Any) -> Store:
    """Open a store for querying (see :class:`clay_search.store.store.Store`)."""
    from clay_search.store.store import connect as _connect

    return _connect(uri, **kwargs)
