"""``clay_search.ingest.ingest``: the Python entry point of ``clay-search ingest``.

Its keyword options are the fields of :class:`~clay_search.ingest.params.IngestParams` (defined
once; the CLI is derived from the same fields). ``clay_search.ingest.run`` is the same function.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clay_search.errors import SourceNotFoundError
from clay_search.ingest.params import IngestParams
from clay_search.ingest.report import IngestReport
from clay_search.optionset import derive


def _stac_api_options(options: dict[str, Any]) -> None:
    """Accept ``stac_api={"url", "collections", "bbox", "datetime", "max_items"}`` (the older
    Python form) as the flat options the CLI has."""
    api = options.get("stac_api")
    if isinstance(api, dict):
        options["stac_api"] = api.get("url")
        for key, name in (
            ("collections", "collection"),
            ("bbox", "bbox"),
            ("datetime", "search_datetime"),
            ("max_items", "max_items"),
        ):
            if api.get(key) is not None:
                options.setdefault(name, api[key])


def _missing_arguments(found: list, args: list[str]) -> list[str]:
    """Local paths given as arguments that do not exist (checked before anything is created)."""
    from clay_search.ingest.sources import SourceFailure

    named = set(args)
    return [
        f.source
        for f in found
        if isinstance(f, SourceFailure)
        and f.source in named
        and isinstance(f.error, SourceNotFoundError)
        and not re.match(r"^\w+://", f.source)
    ]


def ingest(
    sources: Sequence[str | Path] | str | Path, store: str | Path, *, embedder=None, **options: Any
) -> IngestReport:
    """Ingest imagery into the store at ``store`` and return what was done.

    ``sources``: GeoTIFF/COG files or folders (recursive; band files and labelled
    ``<Class>/*.tif|jpg`` folders are recognised), STAC Item/Catalog/Collection JSON files or
    URLs. ``embedder`` passes a ready :class:`~clay_search.model.Embedder` instead of loading
    ``weights`` (None: the weights shipped with clay-search). Every argument is checked before
    anything is written: a bad option or a path that does not exist raises (and creates no
    store). Sources that fail later are reported in the result (``report.failed``) and the
    others continue; ``fail_fast`` raises the first error instead. Rows are committed every
    ``flush_rows`` rows or ``flush_seconds`` seconds: a killed run loses at most that much.

    Options (keyword-only):
    """
    from clay_search.ingest.datetimes import DatesFile
    from clay_search.ingest.pipeline import execute
    from clay_search.ingest.sources import SourceFailure, discover
    from clay_search.model import Embedder, SensorRegistry

    if isinstance(sources, (str, Path)):
        sources = [sources]
    args = [str(s) for s in sources]
    _stac_api_options(options)
    params = IngestParams.from_options(**options)
    registry = (
        SensorRegistry.from_yaml(params.sensors_file)
        if params.sensors_file
        else SensorRegistry.default()
    )
    if params.sensor:
        registry.get(params.sensor)  # unknown sensor: a clear error before any work
    dates = DatesFile(params.dates) if params.dates else None
    found = discover(args, params.assets)
    missing = _missing_arguments(found, args)
    if missing:
        raise SourceNotFoundError(
            f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist; give "
            "raster files, folders or STAC JSON files (nothing was written)"
        )
    if embedder is None:
        embedder = Embedder.from_weights(
            params.weights, sensors=registry, precision=params.precision, device=params.device
        )
    params.check(embedder.patch_size)
    api = params.stac_search()
    if api:
        from clay_search.ingest.stac import stac_search_sources

        try:
            found.extend(
                stac_search_sources(
                    api["url"],
                    collections=list(api["collections"]),
                    bbox=api["bbox"],
                    datetime=api["datetime"],
                    max_items=int(api["max_items"]),
                    assets=params.assets,
                )
            )
        except Exception as e:  # noqa: BLE001 - reported like any other source
            found.append(SourceFailure(api["url"], e))
    return execute(found, store, embedder, registry, params, dates=dates)


derive(
    ingest,
    IngestParams,
    head=[
        inspect.Parameter("sources", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ],
    tail=[inspect.Parameter("embedder", inspect.Parameter.KEYWORD_ONLY, default=None)],
    return_annotation=IngestReport,
)
