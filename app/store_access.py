"""Where the store is (command line or environment) and opening it through the Python API."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from clay_search.store.layout import STORE_ENV_VAR as ENV_VAR
from clay_search.store.layout import WEIGHTS_ENV_VAR


def _arg(argv: Sequence[str], name: str) -> str | None:
    args = list(argv)
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def store_uri(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """The store: ``--store PATH`` / ``--store=PATH`` (after ``--``), else $CLAY_SEARCH_STORE."""
    value = _arg(argv, "--store") or environ.get(ENV_VAR, "").strip()
    return value or None


def weights_path(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """Weights to embed uploads: ``--weights`` or $CLAY_SEARCH_WEIGHTS (default: bundled)."""
    value = _arg(argv, "--weights") or environ.get(WEIGHTS_ENV_VAR, "").strip()
    return value or None


@dataclass
class Opened:
    """The outcome of opening a store: the Store, or a message saying why not."""

    store: Any = None
    error: str | None = None
    kind: str = "ok"  # "ok", "missing" (no store there), "error" (could not open)


def open_store(uri: str, weights: str | None = None) -> Opened:
    """Open ``uri`` with :func:`clay_search.connect`; never raises for a bad path."""
    import clay_search
    from clay_search.errors import ClaySearchError, StoreNotFoundError

    try:
        kwargs: dict[str, Any] = {"weights": weights} if weights else {}
        return Opened(store=clay_search.connect(uri, **kwargs))
    except StoreNotFoundError as e:
        return Opened(error=str(e), kind="missing")
    except (ClaySearchError, OSError, ValueError) as e:
        return Opened(error=f"could not open the store at {uri}: {e}", kind="error")


def warm_up(store: Any) -> threading.Thread:
    """Read the store's index (or, without one, its embedding matrix) in the background so
    the first Search is fast (:meth:`clay_search.store.Store.load`).

    At 1,000,000 chips the index is 4 GB; reading it while the person looks at the first page
    hides that. The Store locks its lazy state, so a Search that comes earlier simply waits.
    """

    def _load() -> None:
        # the query that needs the index will report a problem with it
        with contextlib.suppress(Exception):
            store.load()

    thread = threading.Thread(target=_load, name="clay-search-warm-up", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_open(uri: str, weights: str | None, token: int) -> Opened:
    """Open a store once per (path, weights, reload token), shared by sessions (and by the
    server's start-up, :mod:`clay_search.app.serve`), and start its warm-up."""
    opened = open_store(uri, weights)
    if opened.store is not None:
        warm_up(opened.store)
    return opened


@st.cache_resource(show_spinner="Building the overview images from the chip thumbnails...")
def cached_overviews(uri: str, version: Any, _store: Any) -> Any:
    """Per-source overview images of this store version (built once, kept in memory)."""
    from clay_search.overviews import build_overviews

    return build_overviews(_store)


def overview(store: Any) -> dict[str, Any]:
    """``store.overview()`` plus the basics from the Store itself, whatever overview holds."""
    try:
        info = dict(store.overview())
    except Exception as e:  # noqa: BLE001 - shown on the page, not fatal
        info = {"overview_error": str(e)}
    info.setdefault("chips", len(store))
    info.setdefault("model_id", getattr(store, "model_id", None))
    info.setdefault("version", getattr(store, "version", None))
    return info
