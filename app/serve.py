"""The app's server: Streamlit's own command line, with the store opened while it starts.

``clay-search app`` runs ``python -m clay_search.app.serve run SCRIPT [flags] -- --store PATH``:
the arguments are Streamlit's (``streamlit run ...``), unchanged. Before handing them to
Streamlit it starts one background thread that imports the store's libraries (LanceDB, FAISS:
seconds on a loaded machine), opens the store, reads its attributes and overview and builds the
overview images, through the same cached functions the page calls
(:func:`clay_search.app.store_access.cached_open`, ``cached_overviews``). So the first person
to open the page finds them ready instead of waiting for them; one who comes sooner waits for
the same computation (Streamlit computes a cached value once), never for a second one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence


def script_args(argv: Sequence[str]) -> list[str]:
    """The script's own arguments: what follows ``--`` in a ``streamlit run`` command line."""
    args = list(argv)
    return args[args.index("--") + 1 :] if "--" in args else []


def prewarm(
    argv: Sequence[str], environ: Mapping[str, str] = os.environ
) -> threading.Thread | None:
    """Start opening the store named in ``argv`` (after ``--``) in a daemon thread; None when
    no store is named. Errors are left for the page to show (it opens the store the same way)."""
    from clay_search.app.store_access import store_uri, weights_path

    args = script_args(argv)
    uri = store_uri(args, environ)
    if uri is None:
        return None
    weights = weights_path(args, environ)

    def _run() -> None:
        # cached functions called outside a page run: Streamlit logs that it has no page context
        logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(
            logging.ERROR
        )
        with contextlib.suppress(Exception):
            from clay_search.app.store_access import cached_open, cached_overviews

            opened = cached_open(uri, weights, 0)  # token 0: the page's first open
            store = opened.store
            if store is not None and len(store):
                store.overview()
                cached_overviews(uri, store.version, store)

    thread = threading.Thread(target=_run, name="clay-search-prewarm", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """``python -m clay_search.app.serve run SCRIPT ...``: prewarm, then Streamlit's CLI."""
    prewarm(sys.argv[1:])
    from streamlit.web import cli

    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
