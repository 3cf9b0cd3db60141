"""Ingest: imagery in (GeoTIFF/COG, band files, STAC, labelled folders), embeddings with
footprints out, written to a store's chips table. Imported as ``clay_search.ingest``."""

from clay_search.ingest.report import IngestReport, SourceReport
from clay_search.ingest.run import run

__all__ = ["IngestReport", "SourceReport", "run"]
