"""Ingest: imagery in (GeoTIFF/COG, band files, STAC, labelled folders), embeddings with
footprints out, written to a store's chips table. Imported as ``clay_search.ingest``.

``ingest(sources, store, **options)`` (also named ``run``) is the entry point; its module is
``clay_search.ingest.job``. ``clay_search.ingest.imagery`` is the shared read/normalise/embed
step that query images and fine-tuning use too.
"""

from clay_search.ingest.job import ingest
from clay_search.ingest.report import IngestReport, SourceReport

run = ingest  # the name the CLI and the first releases used

__all__ = ["IngestReport", "SourceReport", "ingest", "run"]
