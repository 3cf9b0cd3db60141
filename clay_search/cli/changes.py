"""``clay-search changes``: places ranked by change between two periods, as a table and a map."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clay_search.cli.options import (
    NO_FILTERS,
    FilterOptions,
    StoreOpt,
    VerboseOpt,
    VersionOpt,
    check_out,
    filter_options,
    handle_errors,
    write_results,
)
from clay_search.errors import QueryError


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("changes")(changes)


@handle_errors
@filter_options("bbox", "geometry", "sensor", "label")
def changes(
    store: StoreOpt,
    before: Annotated[str, typer.Option(help="Before period START/END: 2015-01-01/2016-12-31.")],
    after: Annotated[str, typer.Option(help="After period START/END, e.g. 2017-01-01/2018-12-31.")],
    where: FilterOptions = NO_FILTERS,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Top N places (default all).")] = None,
    method: Annotated[
        str, typer.Option(help="cosine, patch (needs --patch-embeddings) or normalised.")
    ] = "cosine",
    pairing: Annotated[
        str, typer.Option(help="auto, grid (same place_id) or overlap (footprint IoU).")
    ] = "auto",
    min_iou: Annotated[
        float, typer.Option(help="Footprint IoU to pair chips of different grids.")
    ] = 0.5,
    like: Annotated[
        list[str] | None,
        typer.Option("--like", help="Place/chip id of a change to find more like (repeatable)."),
    ] = None,
    unlike: Annotated[
        list[str] | None,
        typer.Option("--unlike", help="Place/chip id of a change that is not wanted (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the pairs (.geojson, .parquet, .csv).")
    ] = None,
    raster: Annotated[
        Path | None, typer.Option(help="Write a change map GeoTIFF (one pixel per chip cell).")
    ] = None,
    version: VersionOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank places by how much they changed between --before and --after.

    With --like, rank them by how much their change resembles the given places' change instead.
    """
    import clay_search
    from clay_search.change import write_change_raster

    if out is None and raster is None:
        raise QueryError("give --out FILE (.geojson, .parquet, .csv) and/or --raster FILE.tif")
    check_out(out)  # before any work
    if raster is not None and not raster.parent.exists():
        raise QueryError(f"folder {raster.parent} for --raster does not exist; create it first")
    filters = {
        "filters": where.filters(),
        "pairing": pairing,
        "min_iou": min_iou,
    }
    st = clay_search.connect(store, version=version)
    if like:
        res = st.change_search(like, unlike or [], before=before, after=after, k=k, **filters)
    else:
        if unlike:
            raise QueryError("--unlike needs at least one --like")
        res = st.changes(before, after, k=k, method=method, **filters)
    console = Console()
    if len(res) == 0:
        console.print(f"no changes: {res.meta.get('reason', 'no pairs')}")
    else:
        score = "similarity" if like else "change"
        t = Table(
            title=f"{len(res)} places ({res.meta.get('pairs')} paired; "
            f"{res.meta.get('method', 'change search')}, table version {res.version})"
        )
        for c in ("rank", score, "place_id", "chip_id_before", "chip_id_after", "dates"):
            t.add_column(c)
        for _, r in res.to_pandas().head(20).iterrows():
            t.add_row(
                str(r["rank"]),
                f"{r['score']:.4f}",
                str(r["place_id"]),
                str(r["chip_id_before"]),
                str(r["chip_id_after"]),
                f"{r['datetime_before']:%Y-%m-%d} -> {r['datetime_after']:%Y-%m-%d}",
            )
        console.print(t)
    if out is not None:
        console.print(f"wrote {write_results(res, out)}")
    if raster is not None:
        full = res
        if k is not None:  # the map covers every paired place, not only the top k
            full = (
                st.change_search(like, unlike or [], before=before, after=after, **filters)
                if like
                else st.changes(before, after, method=method, **filters)
            )
        info = write_change_raster(full, raster)
        console.print(
            f"wrote {info['path']} ({info['width']} x {info['height']} cells, {info['crs']})"
        )
