"""Options shared by several subcommands, and the one-line error handling of the CLI."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from clay_search.errors import ClaySearchError

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (LanceDB + index).")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights folder or Clay .ckpt (default: the bundled weights)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]


def handle_errors(func):
    """Print clay-search errors in one line without a traceback and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ClaySearchError as e:
            typer.secho(f"Error: {e}", fg=typer.colors.RED, err=True)
            sys.exit(2)

    return wrapper
