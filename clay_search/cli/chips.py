"""``clay-search chips``: list the chips of a store (full ids), optionally filtered."""

from __future__ import annotations

from typing import Annotated

import typer

from clay_search.cli.options import (
    NO_FILTERS,
    FilterOptions,
    OutOpt,
    StoreOpt,
    VerboseOpt,
    VersionOpt,
    check_out,
    filter_options,
    handle_errors,
    write_results,
)
from clay_search.cli.table import explain_filters, print_chips


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("chips")(chips)


@handle_errors
@filter_options()
def chips(
    store: StoreOpt,
    where: FilterOptions = NO_FILTERS,
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
    filters = where.filters()
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
