"""FAISS vector indexes over a chips table, kept in step with it.

This layer knows a LanceDB table and an index folder only; the store-level entry points that
writers call after a commit (``sync_index(store_path)``, ``check_index``, ``load_index``) are in
:mod:`clay_search.store`. FAISS loads on first use of a name below (so
``clay_search.index.vectors``, plain numpy, stays cheap to import).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "EXACT_THRESHOLD": "faiss_index",
    "KINDS": "faiss_index",
    "choose_kind": "faiss_index",
    "IndexCheck": "sync",
    "IndexReport": "sync",
    "LoadedIndex": "sync",
    "check_table_index": "sync",
    "covers_version": "sync",
    "load_index": "sync",
    "read_index_meta": "sync",
    "sync_table_index": "sync",
}

__all__ = sorted(_NAMES)  # noqa: PLE0605 - the lazily loaded names, kept in one place


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"clay_search.index.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'clay_search.index' has no attribute {name!r}")
