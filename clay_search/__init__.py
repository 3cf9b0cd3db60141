"""clay-search: Earth-observation embeddings and similarity search.

Heavy modules (torch, lancedb, faiss) load lazily, so ``import clay_search`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clay_search.errors import ClaySearchError

__version__ = "0.1.0"

__all__ = ["ClaySearchError", "__version__", "connect"]

if TYPE_CHECKING:  # pragma: no cover
    from clay_search.store import Store


def connect(uri: str, **kwargs: Any) -> Store:
    """Open a store (see :func:`clay_search.store.connect`)."""
    from clay_search.store import connect as _connect

    return _connect(uri, **kwargs)
