"""Downloads: the current results as GeoJSON or GeoParquet bytes, via the Results API."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

FORMATS = {
    "GeoJSON": ("geojson", "application/geo+json"),
    "GeoParquet": ("parquet", "application/vnd.apache.parquet"),
}


def results_bytes(results: Any, fmt: str) -> bytes:
    """Write ``results`` in ``fmt`` ("GeoJSON" or "GeoParquet") and return the file's bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    suffix, _ = FORMATS[fmt]
    with tempfile.TemporaryDirectory(prefix="clay-export-") as tmp:
        path = Path(tmp) / f"results.{suffix}"
        if fmt == "GeoJSON":
            results.to_geojson(path)
        else:
            results.to_geoparquet(path)
        return path.read_bytes()


def file_name(fmt: str, stem: str = "clay-search-results") -> str:
    """Download file name for ``fmt``."""
    return f"{stem}.{FORMATS[fmt][0]}"


def mime(fmt: str) -> str:
    """MIME type for ``fmt``."""
    return FORMATS[fmt][1]
