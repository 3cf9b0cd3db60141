"""``clay-search import``: load Clay's published embeddings GeoParquet into a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import StoreOpt, handle_errors


def register(app: typer.Typer) -> None:
    """Add the command to ``app`` (named ``import``)."""
    app.command("import")(import_file)


@handle_errors
def import_file(
    file: Annotated[
        Path, typer.Argument(help="GeoParquet with source_url, date, embeddings, geometry.")
    ],
    store: StoreOpt,
    model_id: Annotated[
        str | None,
        typer.Option(
            help="Model that made the embeddings (default: from the file's metadata or name)."
        ),
    ] = None,
    sensor: Annotated[
        str | None, typer.Option(help="Sensor of the chips, e.g. sentinel-2-l2a.")
    ] = None,
) -> None:
    """Import embeddings; refuses a store of another model id."""
    from clay_search.store.importer import import_geoparquet

    report = import_geoparquet(file, store, model_id=model_id, sensor=sensor)
    typer.echo(json.dumps(report, indent=2, default=str))
