"""``clay-search import``: embeddings published elsewhere (Clay, Earth Index, Major TOM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import StoreOpt, VerboseOpt, handle_errors


def register(app: typer.Typer) -> None:
    """Add the command to ``app`` (named ``import``)."""
    app.command("import")(import_file)


@handle_errors
def import_file(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="GeoParquet/Parquet files, folders or globs (Clay, emb/Earth Index, Major TOM, "
            "or any file with a vector column)."
        ),
    ],
    store: StoreOpt,
    model_id: Annotated[
        str | None,
        typer.Option(
            help="Model that made the embeddings (default: the file's 'emb' metadata, "
            "model_id key or a Clay version in its name)."
        ),
    ] = None,
    sensor: Annotated[
        str | None, typer.Option(help="Sensor of the chips, e.g. sentinel-2-l2a.")
    ] = None,
    embedding_column: Annotated[
        str | None, typer.Option(help="Name of the vector column (default: embedding(s)).")
    ] = None,
    crs: Annotated[
        str | None,
        typer.Option(help="CRS of the coordinates, overriding what the files declare."),
    ] = None,
    point_size: Annotated[
        float | None,
        typer.Option(help="Metres: square footprints around point geometries (Earth Index: 320)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Import nothing if any row has a bad embedding.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Check the files and report what would be imported; write nothing.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Import embeddings; refuses a store of another model id. Prints the report as JSON."""
    from clay_search.ingest.importer import import_embeddings

    report = import_embeddings(
        [str(f) for f in files],
        store,
        model_id=model_id,
        sensor=sensor,
        embedding_column=embedding_column,
        crs=crs,
        point_size=point_size,
        strict=strict,
        dry_run=dry_run,
        progress=progress,
    )
    typer.echo(json.dumps(report, indent=2, default=str))
