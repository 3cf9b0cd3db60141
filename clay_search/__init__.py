"""clay-search: Earth-observation embeddings and similarity search.

Heavy modules (torch, lancedb, faiss) load lazily, so ``import clay_search`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clay_search.errors import ClaySearchError

__version__ = "0.1.0"

__all__ = ["ClaySearchError", "__version__", "connect"]

if TYPE_CHECKING:  # pragma: no cover
    from clay_search.store import Store


def connect(
    uri: str | Path,
    *,
    version: int | None = None,
    weights: str | Path | None = None,
    index: str = "auto",
) -> Store:
    """Open a store for querying, read-only (see :func:`clay_search.store.store.connect`)."""
    from clay_search.store import connect as _connect

    return _connect(uri, version=version, weights=weights, index=index)
