"""``clay-search index``: bring the FAISS index up to the table version, check or rebuild it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from clay_search.cli.options import StoreOpt, VerboseOpt, handle_errors


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("index")(index)


@handle_errors
def index(
    store: StoreOpt,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Report rows missing from or stale in the index; exit 1 if any."
        ),
    ] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild from scratch.")] = False,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync", help="Bring the index up to the latest table version (the default action)."
        ),
    ] = False,
    kind: Annotated[
        str, typer.Option(help="auto, flat, ivf, ivf-sq8 (8-bit codes, exact re-ranking) or hnsw.")
    ] = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Sync the vector index with the chips table (--sync, the default), check it, or rebuild.

    Queries never update the index; writers (ingest, import, predict) do after each commit, and
    this command does on request.
    """
    from clay_search.errors import QueryError
    from clay_search.index import KINDS
    from clay_search.store import check_index, sync_index

    if kind not in KINDS:
        raise QueryError(f"--kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if check and not (rebuild or sync):
        result = check_index(store).to_dict()
        typer.echo(json.dumps(result, indent=2))
        if not result["ok"]:
            typer.echo(
                f"index is out of date: run `clay-search index --sync --store {store}`", err=True
            )
            sys.exit(1)
        return
    report = sync_index(store, kind=kind, rebuild=rebuild)
    typer.echo(json.dumps(report.to_dict(), indent=2))
    if check:
        result = check_index(store).to_dict()
        typer.echo(json.dumps(result, indent=2))
        if not result["ok"]:
            sys.exit(1)
