"""``clay-search weights list|fetch``: known checkpoints and their download into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from clay_search.cli.options import handle_errors

weights_app = typer.Typer(
    help="Known checkpoints (`list`) and their download into the cache (`fetch`).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the command group to ``app``."""
    app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@handle_errors
def list_weights() -> None:
    """Known checkpoints, their size and whether they are in the cache."""
    from clay_search.model.registry import known_weights, weights_cache_dir

    table = Table(title=f"known weights (cache: {weights_cache_dir()})")
    for col in ("name", "size", "dim", "cached", "description"):
        table.add_column(col)
    for entry in known_weights().values():
        path = entry.cached_path()
        size = f"{entry.size / 1e9:.2f} GB" if entry.size else "?"
        table.add_row(
            entry.name,
            size,
            str(entry.dim or "?"),
            str(path) if path.is_file() else "no",
            entry.description,
        )
    Console().print(table)


@weights_app.command("fetch")
@handle_errors
def fetch(
    name: Annotated[
        str, typer.Argument(help="A known checkpoint (see `clay-search weights list`).")
    ],
    to: Annotated[
        Path | None, typer.Option("--to", help="Folder to put the file in (default: the cache).")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="A mirror of the same file (still verified).")
    ] = None,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified", help="Accept a file no SHA-256 is known for (not recommended)."
        ),
    ] = False,
) -> None:
    """Download a known checkpoint (resumable, SHA-256 verified); needs the network."""
    from clay_search.hub import fetch_weights

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"fetching {name}", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        result = fetch_weights(
            name, to=to, url=url, allow_unverified=allow_unverified, progress=update
        )
    if result.verified_against == "cached":
        typer.echo(f"{name}: already in place at {result.path} (SHA-256 {result.sha256})")
    else:
        resumed = f", resumed after {result.resumed_from:,} bytes" if result.resumed_from else ""
        typer.echo(
            f"{name}: {result.size:,} bytes at {result.path}{resumed}; SHA-256 {result.sha256} "
            f"({result.verified_against})"
        )
    typer.echo(f"use it with --weights {name}")
