"""``clay_search.ingest.run``: the Python entry point of ``clay-search ingest``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from clay_search.ingest.datetimes import parse_datetime
from clay_search.ingest.params import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHIP_SIZE,
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    IngestParams,
)
from clay_search.ingest.report import IngestReport


def run(
    sources: Sequence[str | Path] | str | Path,
    store: str | Path,
    *,
    sensor: str | None = None,
    chip_size: int = DEFAULT_CHIP_SIZE,
    stride: int | None = None,
    bands: Sequence[str] | str | None = None,
    weights: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    datetime: str | datetime | None = None,  # noqa: A002 - mirrors --datetime
    patch_embeddings: bool = False,
    max_nodata: float = 0.5,
    nodata: float | None = None,
    stats: str = "auto",
    assets: Sequence[str] | None = None,
    sensors_file: str | Path | None = None,
    precision: str = "auto",
    device: str = "cpu",
    fail_fast: bool = False,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
    flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    progress: bool = False,
    embedder=None,
    stac_api: dict | None = None,
) -> IngestReport:
    """Ingest imagery into the store at ``store`` and return what was done.

    ``sources``: GeoTIFF/COG files or folders (recursive; band files and labelled
    ``<Class>/*.tif|jpg`` folders are recognised), STAC Item/Catalog/Collection JSON files or
    URLs. ``weights=None`` uses the weights shipped with clay-search; ``embedder`` passes a
    ready :class:`~clay_search.model.Embedder` instead. ``stac_api`` (``{"url", "collections",
    "bbox", "datetime", "max_items"}``) adds the items of a STAC API search (online only).
    ``nodata`` overrides the files' nodata value (every band), e.g. ``0`` for black collars
    in files that declare none. Rows are committed every ``flush_rows`` rows or
    ``flush_seconds`` seconds, whichever comes first: a killed run loses at most that much
    work. Sources that fail are reported in the result (``report.failed``) and the others
    continue; ``fail_fast`` raises the first error instead.
    """
    from clay_search.ingest.pipeline import execute
    from clay_search.ingest.sources import discover
    from clay_search.model import Embedder, SensorRegistry

    if isinstance(sources, (str, Path)):
        sources = [sources]
    if isinstance(bands, str):
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    params = IngestParams(
        chip_size=int(chip_size),
        stride=stride,
        sensor=sensor,
        bands=list(bands) if bands else None,
        datetime=parse_datetime(datetime),
        patch_embeddings=patch_embeddings,
        max_nodata=float(max_nodata),
        nodata=None if nodata is None else float(nodata),
        stats=str(stats),
        assets=list(assets) if assets else None,
        batch_size=int(batch_size),
        workers=None if workers is None else int(workers),
        flush_rows=int(flush_rows),
        flush_seconds=float(flush_seconds),
        fail_fast=fail_fast,
    )
    registry = (
        SensorRegistry.from_yaml(sensors_file) if sensors_file else SensorRegistry.default()
    )
    if sensor:
        registry.get(sensor)  # unknown sensor: a clear error before any work
    if embedder is None:
        embedder = Embedder.from_weights(weights, sensors=registry, precision=precision,
                                         device=device)
    params.check(embedder.patch_size)
    found = discover([str(s) for s in sources], params.assets)
    if stac_api:
        from clay_search.ingest.sources import SourceFailure
        from clay_search.ingest.stac import stac_search_sources

        try:
            found.extend(stac_search_sources(
                stac_api["url"], collections=list(stac_api.get("collections") or []),
                bbox=stac_api.get("bbox"), datetime=stac_api.get("datetime"),
                max_items=int(stac_api.get("max_items", 100)), assets=params.assets))
        except Exception as e:  # noqa: BLE001 - reported like any other source
            found.append(SourceFailure(stac_api["url"], e))
    return execute(found, store, embedder, registry, params, progress=progress)
