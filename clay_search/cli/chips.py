"""``clay-search chips``: list the chips of a store (full ids), optionally filtered."""

from __future__ import annotations

from typing import Annotated

import typer

from clay_search.cli.options import (
    BboxOpt,
    EndOpt,
    GeometryOpt,
    LabelOpt,
    MaxReconErrorOpt,
    MinPredScoreOpt,
    OutOpt,
    PredLabelOpt,
    SensorOpt,
    StartOpt,
    StoreOpt,
    UndatedOpt,
    VerboseOpt,
    VersionOpt,
    check_out,
    filters_from_options,
    handle_errors,
    write_results,
)
from clay_search.cli.table import explain_filters, print_chips


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("chips")(chips)


@handle_errors
def chips(
    store: StoreOpt,
    sensor: SensorOpt = None,
    label: LabelOpt = None,
    bbox: BboxOpt = None,
    geometry: GeometryOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    undated: UndatedOpt = False,
    pred_label: PredLabelOpt = None,
    min_pred_score: MinPredScoreOpt = None,
    max_recon_error: MaxReconErrorOpt = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="Order by this column instead of table order: recon_error (worst first).",
        ),
    ] = None,
    ascending: Annotated[
        bool, typer.Option("--ascending", help="With --sort: lowest first.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=0, help="At most this many chips (default: all).")
    ] = None,
    out: OutOpt = None,
    version: VersionOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """List chips (full ids, date, sensor, label, source) in table order, within the filters.

    --sort recon_error lists the chips the model reconstructs worst first (cloudy, broken or
    unusual chips); --max-recon-error drops them.

    Prints the first 20 and how many the filters removed and why; --out writes them all.
    """
    import clay_search

    check_out(out)
    filters = filters_from_options(
        bbox=bbox,
        geometry=geometry,
        start=start,
        end=end,
        sensor=sensor,
        label=label,
        undated=undated,
        pred_label=pred_label,
        min_pred_score=min_pred_score,
        max_recon_error=max_recon_error,
    )
    st = clay_search.connect(store, version=version)
    res = st.chips(filters, limit=limit, sort=sort, ascending=ascending)
    matched, total = res.meta["matched"], res.meta["total"]
    title = f"{matched} of {total} chips match (table version {res.version})"
    if limit is not None and matched > limit:
        title += f"; first {len(res)} (--limit)"
    print_chips(res, title, ranked=False)
    explain_filters(st, filters)
    if out:
        path = write_results(res, out)
        typer.echo(f"wrote {len(res)} chips to {path}")
