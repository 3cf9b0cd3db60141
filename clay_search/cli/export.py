"""``clay-search export``: a store's embeddings as GeoParquet, or the model as ONNX.

``--store S --out DIR|FILE.parquet [filters] [--partition-by region|year]`` publishes chips
(GeoParquet 1.1 with ``emb`` metadata); ``--weights W --onnx encoder.onnx [--head DIR]``
exports the encoder (and a fine-tuned head). Exactly one of ``--store`` and ``--onnx``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import (
    NO_FILTERS,
    FilterOptions,
    VerboseOpt,
    VersionOpt,
    WeightsOpt,
    filter_options,
    handle_errors,
)
from clay_search.errors import QueryError


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("export")(export)


@handle_errors
@filter_options(
    "bbox", "geometry", "start", "end", "sensor", "label", "undated", "pred_label", "min_pred_score"
)
def export(
    store: Annotated[
        Path | None, typer.Option("--store", "-s", help="Store to export (with --out).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="FILE.parquet, or a folder (needed for --partition-by).")
    ] = None,
    where: FilterOptions = NO_FILTERS,
    version: VersionOpt = None,
    partition_by: Annotated[
        str | None, typer.Option(help="Write one folder per 'year' or 'region' (10 deg cell).")
    ] = None,
    license: Annotated[
        str | None, typer.Option(help="Licence of the published embeddings (SPDX id).")
    ] = None,
    provider: Annotated[
        list[str] | None, typer.Option(help="Organisation publishing them (repeatable).")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="Source dataset id or URL (repeatable).")
    ] = None,
    row_group_mb: Annotated[
        float, typer.Option(help="Target row group size in MB (HTTP range reads).")
    ] = 32.0,
    weights: WeightsOpt = None,
    onnx: Annotated[
        Path | None, typer.Option(help="Write the encoder as ONNX to this file.")
    ] = None,
    head: Annotated[
        Path | None, typer.Option(help="Fine-tuned head folder to export with --onnx.")
    ] = None,
    chip_size: Annotated[
        int | None, typer.Option(help="Input chip size of the ONNX graph (pixels).")
    ] = None,
    bands: Annotated[
        str | None, typer.Option(help="Bands of the ONNX input, comma-separated.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Publish a store's chips as GeoParquet (--store/--out) or the model as ONNX (--onnx)."""
    if (store is None) == (onnx is None):
        raise QueryError(
            "give exactly one of --store (export embeddings, with --out) and --onnx "
            "(export the model)"
        )
    if onnx is not None:
        try:
            from clay_search.model.export import export_onnx
        except ModuleNotFoundError as e:
            raise QueryError(
                f"ONNX export is not part of this installation ({e.name} is missing)"
            ) from e
        band_list = [b.strip() for b in bands.split(",")] if bands else None
        path = export_onnx(onnx, weights=weights, head=head, chip_size=chip_size, bands=band_list)
        typer.echo(json.dumps({"onnx": str(path or onnx)}, default=str))
        return
    if out is None:
        raise QueryError("--store needs --out FILE.parquet or --out FOLDER")
    import clay_search
    from clay_search.export import export_geoparquet

    filters = where.filters()
    assert store is not None  # exactly one of --store and --onnx (checked above)
    st = clay_search.connect(store, version=version, index="exact")
    report = export_geoparquet(
        st,
        out,
        filters=filters,
        partition_by=partition_by,
        license=license,
        providers=provider or (),
        datasets=dataset or (),
        row_group_mb=row_group_mb,
    )
    typer.echo(json.dumps(report, indent=2, default=str))
