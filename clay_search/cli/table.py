"""The chips table the query subcommands print (full chip ids; empty cells for missing values)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from clay_search.cli.options import cell

#: Rows printed; --out writes them all.
SHOWN = 20


def print_chips(results, title: str, *, ranked: bool, shown: int = SHOWN) -> None:
    """Print up to ``shown`` rows of ``results``: chip ids are never cut (other columns give)."""
    cols = ["rank", "score"] if ranked else []
    cols += ["chip_id", "datetime", "sensor", "label", "source"]
    df = results.head(shown).to_pandas()
    if "recon_error" in df.columns and df["recon_error"].notna().any():
        cols.insert(cols.index("source"), "recon_error")  # the quality score, when stored
    ids = [str(c) for c in df["chip_id"]] if len(df) else []
    t = Table(title=title)
    for col in cols:
        if col == "chip_id":
            t.add_column(col, no_wrap=True, min_width=max([len(c) for c in ids] or [7]))
        elif col == "source":
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col)
    for _, row in df.iterrows():
        vals = []
        for col in cols:
            v = row.get(col)
            fmt = col in ("score", "recon_error") and cell(v)
            vals.append(f"{v:.4f}" if fmt else cell(v))
        t.add_row(*vals)
    console = Console()
    console.print(t)
    if len(results) > shown:
        console.print(f"({len(results) - shown} more; write them all with --out FILE)")


def explain_filters(store, filters) -> None:
    """Say how many chips each part of ``filters`` removed, and the undated ones (if any)."""
    if filters.empty:
        return
    report = store.count(filters)
    parts = [f"{name}: {n}" for name, n in report["removed"].items() if n]
    if parts:
        typer.echo(f"{report['matched']} of {report['total']} chips pass the filters; removed by "
                   + ", ".join(parts))  # fmt: skip
    if report["undated"]:
        typer.echo(
            f"{report['undated']} chips have no date and were removed by the date range; "
            "keep them with --undated"
        )
    if report.get("unscored"):
        typer.echo(
            f"{report['unscored']} chips have no quality score (recon_error) and were kept by "
            "--max-recon-error"
        )
