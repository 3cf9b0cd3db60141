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


# -- options of `finetune` and `predict` (shared with any command that reads imagery) ----------
SensorOpt = Annotated[
    str | None, typer.Option("--sensor", help="Sensor of every image (see `clay-search info`).")
]
BandsOpt = Annotated[
    str | None,
    typer.Option("--bands", help="The files' bands in order: common names or band ids, "
                 "e.g. B02,B03,B04,B08."),
]
ChipSizeOpt = Annotated[int, typer.Option("--chip-size", help="Chip size in pixels (x8).")]
StrideOpt = Annotated[
    int | None, typer.Option("--stride", help="Step between chips (default: half a chip).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
HeadOpt = Annotated[
    Path, typer.Option("--head", help="Head folder written by `clay-search finetune`.")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Chips per step / model call.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (``None`` for an empty value)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
