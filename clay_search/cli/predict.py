"""``clay-search predict``: apply a head to images (a table or class rasters), to a store, or
(a change head) to a before/after pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import (
    BandsOpt,
    BatchSizeOpt,
    DeviceOpt,
    HeadOpt,
    VerboseOpt,
    WeightsOpt,
    handle_errors,
    resolve_device,
    split_list,
)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("predict")(predict)


@handle_errors
def predict(
    head: HeadOpt,
    sources: Annotated[list[str] | None, typer.Argument(help="Images or folders.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Chip heads: a .parquet/.geoparquet/.csv table; dense heads: a "
            "folder of GeoTIFFs (one per image); change heads: one change-probability .tif.",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", "-s", help="Predict every chip of this store into pred_* columns."),
    ] = None,
    before: Annotated[
        Path | None,
        typer.Option("--before", help="Change heads: the first date's image."),
    ] = None,
    after: Annotated[
        Path | None,
        typer.Option("--after", help="Change heads: the second date's image (same grid)."),
    ] = None,
    bands: BandsOpt = None,
    overlap: Annotated[
        float,
        typer.Option("--overlap", help="Dense heads: overlap of neighbouring windows (0-0.9)."),
    ] = 0.5,
    features: Annotated[
        str,
        typer.Option(
            "--features",
            help="--store: auto (the stored embeddings when they are the head's features, "
            "else re-read pixels), embeddings (refuse otherwise) or pixels.",
        ),
    ] = "auto",
    weights: WeightsOpt = None,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Predict with a head folder: chips -> table, scenes -> class rasters, store -> columns,
    --before/--after -> a change-probability raster."""
    from rich.console import Console

    from clay_search.errors import HeadError
    from clay_search.model.headfile import read_head_spec
    from clay_search.predict import predict_chips, predict_rasters, predict_store

    console = Console(stderr=True)
    dev = resolve_device(device)
    if before is not None or after is not None:
        from clay_search.change_task import predict_change

        if before is None or after is None or out is None or sources or store is not None:
            raise HeadError("a change head takes --before A.tif --after B.tif --out change.tif")
        rep = predict_change(
            head,
            before,
            after,
            out,
            weights=weights,
            device=dev,
            overlap=overlap,
            batch_size=batch_size,
            bands=split_list(bands),
        )
        console.print(f"wrote the change probability of {before} -> {after} to {out}")
    elif store is not None:
        if sources:
            raise HeadError("give images with --out, or --store alone, not both")
        rep = predict_store(
            head, store, weights=weights, batch_size=batch_size, device=dev, features=features
        )
        console.print(
            f"predicted {rep.chips} chips into {store} from {rep.features_note} (table version "
            f"{rep.table_version}; index {(rep.index or {}).get('action')})"
        )
    else:
        if not sources or out is None:
            raise HeadError("give images (files or folders) and --out, or --store S")
        spec = read_head_spec(head)
        if spec.task == "change":
            raise HeadError(
                f"{head} is a change head: give the two dates with --before A.tif --after B.tif"
            )
        if spec.dense:
            rep = predict_rasters(
                head,
                sources,
                out,
                weights=weights,
                device=dev,
                overlap=overlap,
                bands=split_list(bands),
            )
            console.print(f"wrote {len(rep.written)} raster(s) into {out}")
        else:
            rep = predict_chips(
                head,
                sources,
                out,
                weights=weights,
                batch_size=batch_size,
                device=dev,
                bands=split_list(bands),
            )
            console.print(f"wrote {rep.chips} chip predictions to {out}")
    for src, why in rep.skipped:
        console.print(f"[yellow]skipped:[/] {src}: {why}")
