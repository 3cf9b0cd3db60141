"""``clay-search ingest``: imagery in, embeddings with footprints out (see docs/ingest.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import StoreOpt, VerboseOpt, WeightsOpt, handle_errors


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("ingest")(ingest)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@handle_errors
def ingest(
    sources: Annotated[list[str], typer.Argument(help="Files, folders, STAC JSON (path or URL).")],
    store: StoreOpt,
    sensor: Annotated[str | None, typer.Option(help="Sensor of every source (see `info`).")] = None,
    chip_size: Annotated[int, typer.Option(help="Chip size in pixels (multiple of 8).")] = 64,
    stride: Annotated[int | None, typer.Option(help="Step between chips (default: chip size).")]
    = None,
    bands: Annotated[str | None, typer.Option(
        help="The file's bands in order: common names or band ids, e.g. B02,B03,B04,B08.")] = None,
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Chips per model call.")] = 32,
    workers: Annotated[int | None, typer.Option(
        help="Reader threads (0: read in the main thread). Default: 2 with a GPU; on the CPU "
             "only the logical CPUs torch leaves free.")] = None,
    datetime: Annotated[str | None, typer.Option(
        help="Acquisition time (ISO 8601) for every chip, overriding STAC/file names.")] = None,
    patch_embeddings: Annotated[bool, typer.Option(
        "--patch-embeddings", help="Also store the patch-embedding grid.")] = False,
    max_nodata: Annotated[float, typer.Option(
        help="Skip chips with more than this fraction of nodata.")] = 0.5,
    nodata: Annotated[float | None, typer.Option(
        help="Treat this value as nodata in every band, overriding the files' own (e.g. 0 for "
             "black collars in files that declare no nodata).")] = None,
    stats: Annotated[str, typer.Option(
        help="Normalisation: auto, sensor, source, or a JSON file of band mean/std.")] = "auto",
    assets: Annotated[str | None, typer.Option(help="STAC asset keys to read, e.g. analytic.")]
    = None,
    sensors_file: Annotated[Path | None, typer.Option(
        help="YAML of extra sensors (shaped like clay_search/model/sensors.yaml).")] = None,
    precision: Annotated[str, typer.Option(
        help="auto (measured on this machine, cached), fp32, bf16, fp16, tf32 (CUDA) or "
        "int8 (CPU, opt-in).")] = "auto",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first bad source.")]
    = False,
    stac_api: Annotated[str | None, typer.Option(
        help="STAC API URL to search (online; needs the stac-api extra).")] = None,
    collection: Annotated[str | None, typer.Option(help="STAC API collection(s), comma-separated.")]
    = None,
    bbox: Annotated[str | None, typer.Option(help="STAC API bbox: minx,miny,maxx,maxy.")] = None,
    search_datetime: Annotated[str | None, typer.Option(help="STAC API datetime range.")] = None,
    max_items: Annotated[int, typer.Option(help="STAC API item limit.")] = 100,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Embed imagery (GeoTIFF/COG, band files, STAC, labelled folders) into a store."""
    import logging

    from rich.console import Console

    from clay_search.ingest import run

    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR)
    api = None
    if stac_api:
        api = {"url": stac_api, "collections": _split(collection), "datetime": search_datetime,
               "bbox": [float(v) for v in _split(bbox)] if bbox else None,
               "max_items": max_items}
    console = Console(stderr=True)
    report = run(
        sources, store, sensor=sensor, chip_size=chip_size, stride=stride, bands=_split(bands),
        weights=weights, batch_size=batch_size, workers=workers, datetime=datetime,
        patch_embeddings=patch_embeddings, max_nodata=max_nodata, nodata=nodata, stats=stats,
        assets=_split(assets), sensors_file=sensors_file, precision=precision, device=device,
        fail_fast=fail_fast, progress=not quiet, stac_api=api,
    )
    print_summary(report, console)
    if not report.ok:
        sys.exit(1)


def print_summary(report, console) -> None:
    """The end-of-run summary: files, chips written, skipped and why, failures, time."""
    from rich.table import Table

    t = Table(title=f"ingest into {report.store}", show_header=False)
    t.add_row("sources", f"{report.sources} ({len(report.failed)} failed)")
    t.add_row("chips written", str(report.chips_written))
    t.add_row("skipped: already in store", str(report.chips_existing))
    t.add_row("skipped: too much nodata", str(report.chips_nodata))
    t.add_row("time", f"{report.seconds:.1f} s ({report.chips_per_second:.1f} chips/s, "
              f"{report.embed_seconds:.1f} s in the model, {report.workers} reader threads)")
    t.add_row("model", report.model_id)
    if report.index:
        t.add_row("index", f"{report.index.get('action')} ({report.index.get('count')} vectors)")
    t.add_row("manifest", str(report.manifest))
    console.print(t)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    for s in report.failed:
        console.print(f"[red]failed:[/] {s.source}: {s.error}")
