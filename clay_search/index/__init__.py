"""FAISS vector indexes over a chips table, kept in step with it.

This layer knows a LanceDB table and an index folder only; the store-level entry points that
writers call after a commit (``sync_index(store_path)``, ``check_index``, ``load_index``) are in
:mod:`clay_search.store`.
"""

from clay_search.index.faiss_index import EXACT_THRESHOLD, KINDS, choose_kind
from clay_search.index.sync import (
    IndexCheck,
    IndexReport,
    LoadedIndex,
    check_table_index,
    covers_version,
    load_index,
    read_index_meta,
    sync_table_index,
)

__all__ = [
    "EXACT_THRESHOLD",
    "KINDS",
    "IndexCheck",
    "IndexReport",
    "LoadedIndex",
    "check_table_index",
    "choose_kind",
    "covers_version",
    "load_index",
    "read_index_meta",
    "sync_table_index",
]
