"""``clay-search ingest``: imagery in, embeddings with footprints out (see docs/ingest.md).

The options are the fields of :class:`clay_search.ingest.params.IngestParams` (name, type,
default, help, validation defined once there); this module only adds the sources, ``--store``,
``--quiet`` and ``--verbose`` and prints the summary.
"""

from __future__ import annotations

import inspect
import sys
from collections import defaultdict
from typing import Annotated, Any

import typer

from clay_search.cli.options import QuietOpt, StoreOpt, VerboseOpt, derived_command, keyword
from clay_search.ingest.params import IngestParams

MAX_DATE_LINES = 20  # per-source date lines on screen; more are summarised (all in the manifest)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("ingest")(ingest)


def _ingest(
    sources: list[str], store, quiet: bool = False, verbose: bool = False, **options: Any
) -> None:
    """Embed imagery (GeoTIFF/COG, band files, STAC, labelled folders) into a store."""
    import logging

    from rich.console import Console

    from clay_search.ingest import ingest as run_ingest

    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR)
    console = Console(stderr=True)
    report = run_ingest(sources, store, progress=not quiet, **options)
    print_summary(report, console)
    if not report.ok:
        sys.exit(1)


ingest = derived_command(
    _ingest,
    IngestParams,
    head=[
        inspect.Parameter(
            "sources",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                list[str], typer.Argument(help="Files, folders, STAC JSON (path or URL).")
            ],
        ),
        keyword("store", StoreOpt),
    ],
    tail=[keyword("quiet", QuietOpt, False), keyword("verbose", VerboseOpt, False)],
)


def _group_notes(report) -> list[tuple[str, list[str]]]:
    """Per-source notes, each text once with the sources that have it."""
    by_note: dict[str, list[str]] = defaultdict(list)
    for s in report.sources_detail:
        for n in s.notes:
            # "sensor X (from Y)" and true-colour thumbnails are the usual case: manifest only
            if not n.startswith(("sensor ", "thumbnails: true colour")):
                by_note[n].append(s.source)
    return list(by_note.items())


def print_summary(report, console) -> None:
    """The end-of-run summary: files, chips written, skipped and why, dates, failures, time."""
    from rich.table import Table

    t = Table(title=f"ingest into {report.store}", show_header=False)
    t.add_row("sources", f"{report.sources} ({len(report.failed)} failed)")
    t.add_row("chips written", str(report.chips_written))
    t.add_row("skipped: already in store", str(report.chips_existing))
    t.add_row("skipped: too much nodata", str(report.chips_nodata))
    t.add_row(
        "time",
        f"{report.seconds:.1f} s ({report.chips_per_second:.1f} chips/s, "
        f"{report.embed_seconds:.1f} s in the model, {report.workers} reader threads)",
    )
    t.add_row("model", report.model_id)
    for key, norm in report.normalisers.items():
        shared = norm.get("shared") or key
        t.add_row("normalised", f"{norm.get('stats_source')} statistics, {shared}")
    if report.index:
        t.add_row("index", f"{report.index.get('action')} ({report.index.get('count')} vectors)")
    t.add_row("manifest", str(report.manifest or "none (nothing was written)"))
    console.print(t)
    ok = [s for s in report.sources_detail if s.status == "ok"]
    if ok and len(ok) <= MAX_DATE_LINES:
        for s in ok:
            console.print(f"[cyan]date:[/] {s.source}: {_date_text(s)}")
    elif ok:
        counts: dict[str, int] = defaultdict(int)
        for s in ok:
            counts[s.datetime_from or "none"] += 1
        console.print(
            "[cyan]dates:[/] "
            + ", ".join(f"{n} from {k}" for k, n in sorted(counts.items()))
            + " (per source: manifest)"
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    for note, names in _group_notes(report):
        who = names[0] if len(names) == 1 else f"{len(names)} sources (e.g. {names[0]})"
        console.print(f"[yellow]note:[/] {who}: {note}")
    for s in report.failed:
        console.print(f"[red]failed:[/] {s.source}: {s.error}")


def _date_text(s) -> str:
    from datetime import datetime

    from clay_search.ingest.datetimes import DateChoice

    value = datetime.fromisoformat(s.datetime) if s.datetime else None
    return DateChoice(value, s.datetime_precision, s.datetime_from or "none").describe()
