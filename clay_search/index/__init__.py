"""The FAISS vector index of a store, kept in step with the chips table.

``sync_index(store_path)`` is what writers call after a commit.
"""

from __future__ import annotations

from clay_search.index.faiss_index import EXACT_THRESHOLD, KINDS, choose_kind
from clay_search.index.sync import (
    IndexCheck,
    IndexReport,
    LoadedIndex,
    check_index,
    load_index,
    read_index_meta,
    sync_index,
)

__all__ = [
    "EXACT_THRESHOLD",
    "KINDS",
    "IndexCheck",
    "IndexReport",
    "LoadedIndex",
    "check_index",
    "choose_kind",
    "load_index",
    "read_index_meta",
    "sync_index",
]
