"""Ingest: imagery in (GeoTIFF/COG, band files, STAC, labelled folders), embeddings with
footprints out, written to a store's chips table. Imported as ``clay_search.ingest``.

``ingest(sources, store, **options)`` (also named ``run``) is the entry point; its module is
``clay_search.ingest.job``. ``clay_search.ingest.imagery`` is the shared read/normalise/embed
step that query images and fine-tuning use too; importing it does not import the job (the
names below are loaded on first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["IngestReport", "SourceReport", "ingest", "run"]


def __getattr__(name: str) -> Any:
    if name in ("ingest", "run"):
        from clay_search.ingest.job import ingest

        return ingest
    if name in ("IngestReport", "SourceReport"):
        from clay_search.ingest import report

        return getattr(report, name)
    raise AttributeError(f"module 'clay_search.ingest' has no attribute {name!r}")
