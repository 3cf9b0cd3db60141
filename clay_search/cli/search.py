"""``clay-search search``: similar chips by example ids, a point, an image or a vector file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import (
    NO_FILTERS,
    FilterOptions,
    OutOpt,
    StoreOpt,
    VerboseOpt,
    VersionOpt,
    WeightsOpt,
    check_out,
    filter_options,
    handle_errors,
    parse_floats,
    write_results,
)
from clay_search.cli.table import explain_filters, print_chips

__all__ = ["register", "search", "write_results"]


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("search")(search)


@handle_errors
@filter_options()
def search(
    store: StoreOpt,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive",
            "-p",
            help="Chip id (or unique id prefix) of an example to find more of (repeatable).",
        ),
    ] = None,
    negative: Annotated[
        list[str] | None,
        typer.Option("--negative", "-n", help="Chip id (or prefix) of a counter-example."),
    ] = None,
    point: Annotated[str | None, typer.Option(help="lon,lat: use the chip under it.")] = None,
    image: Annotated[Path | None, typer.Option(help="GeoTIFF/PNG to embed as the query.")] = None,
    image_sensor: Annotated[
        str | None,
        typer.Option(
            "--image-sensor", help="Sensor of --image (default sentinel-2-l2a); not a filter."
        ),
    ] = None,
    bands: Annotated[
        str | None, typer.Option(help="Band names of --image, comma-separated.")
    ] = None,
    where: FilterOptions = NO_FILTERS,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 50,
    out: OutOpt = None,
    merge: Annotated[
        bool, typer.Option(help="Merge touching hits into polygons in --out.")
    ] = False,
    version: VersionOpt = None,
    weights: WeightsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Find chips like the positives and unlike the negatives, within the filters."""
    import clay_search

    check_out(out)  # before any work
    filters = where.filters()
    if image_sensor and not image:
        raise typer.BadParameter("--image-sensor names the sensor of --image; give --image")
    st = clay_search.connect(store, version=version, weights=weights)
    if point:
        lon, lat = parse_floats(point, 2, "--point")
        res = st.search_point(lon, lat, k=k, filters=filters)
    elif image:
        band_list = [b.strip() for b in bands.split(",")] if bands else None
        res = st.search_image(
            image, k=k, image_sensor=image_sensor, bands=band_list, filters=filters
        )
    else:
        res = st.search(positive or [], negative or [], k=k, filters=filters)
    title = f"{len(res)} results (table version {res.version}, {res.meta.get('index')})"
    print_chips(res, title, ranked=True)
    if len(res) < k:
        explain_filters(st, filters)
    if out:
        path = write_results(res, out, merge=merge)
        typer.echo(f"wrote {path}")
