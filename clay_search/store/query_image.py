"""Embedding an image given at query time (a file or an array) with the store's model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from clay_search.errors import BandMismatchError, SourceReadError

DEFAULT_SENSOR = "sentinel-2-l2a"


def embed_image(
    embedder,
    image: str | Path | np.ndarray,
    *,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
    when: datetime | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The embedding of ``image`` (the weights' pooling, as ingest stores it) and notes.

    Read, normalised and embedded by ingest's own step (:mod:`clay_search.ingest.imagery`):
    the centre square (at most 256 px, a multiple of the patch size). The sensor and bands are
    found as ingest finds them; when nothing tells, ``sentinel-2-l2a`` and, for 3 or 4 bands,
    red, green, blue (and nir) are assumed (noted). ``when`` feeds the time encoding.
    """
    from clay_search.errors import UnknownSensorError
    from clay_search.ingest.imagery import embed_image as ingest_embed

    notes: list[str] = []
    try:
        vec, more = ingest_embed(embedder, image, sensor=sensor, bands=bands, when=when)
    except (UnknownSensorError, BandMismatchError) as e:
        if sensor is not None and bands is not None:
            raise
        s = embedder.sensors.get(sensor or DEFAULT_SENSOR)
        count = _band_count(image)
        if bands is None and count not in (3, 4):
            raise BandMismatchError(
                f"query image has {count} bands; name them with bands=[...] "
                f"(band names or ids of {s.name})"
            ) from e
        if bands is None:
            rgb = [b.name for b in s.rgb_bands][:3]
            bands = rgb if count == 3 else [*rgb, "nir"]
            notes.append(f"bands assumed {list(bands)}")
        if sensor is None:
            notes.append(f"sensor assumed {s.name}")
        vec, more = ingest_embed(embedder, image, sensor=s.name, bands=bands, when=when)
    return vec, notes + more


def _band_count(image: str | Path | np.ndarray) -> int:
    if isinstance(image, np.ndarray):
        return 1 if image.ndim == 2 else int(image.shape[0])
    import rasterio

    try:
        with rasterio.open(image) as src:
            return int(src.count)
    except Exception as e:
        raise SourceReadError(f"cannot read query image {image}: {e}") from e
