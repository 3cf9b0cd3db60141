"""Embedding an image given at query time (a file or an array) with the store's model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from clay_search.errors import BandMismatchError, QueryError, SourceNotFoundError, SourceReadError

DEFAULT_SENSOR = "sentinel-2-l2a"
MAX_SIZE = 256


def _read(path: Path, patch: int) -> tuple[np.ndarray, tuple[float, float] | None,
                                          datetime | None]:
    """The centre square of ``path`` that :func:`_crop` keeps (read alone: memory stays bounded
    by ``MAX_SIZE`` whatever the file declares), its centre in lon/lat, and no datetime."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    if not path.exists():
        raise SourceNotFoundError(f"query image {path} does not exist")
    try:
        with rasterio.open(path) as src:
            from clay_search.ingest.raster import check_readable

            check_readable(src, str(path))
            h, w = src.height, src.width
            size = min(h, w, MAX_SIZE) // patch * patch
            if size == 0:
                raise QueryError(f"query image {h}x{w} px is smaller than one {patch}px patch")
            raw = src.read(window=Window((w - size) // 2, (h - size) // 2, size, size))
            lonlat = None
            if src.crs is not None:
                from clay_search.geo import footprint

                lonlat = footprint(src.crs, src.transform, Window(0, 0, src.width, src.height),
                                   size=(src.width, src.height)).centre
    except RasterioError as e:
        raise SourceReadError(
            f"cannot read query image {path} ({e}); give a GeoTIFF, PNG or JPEG"
        ) from e
    return raw, lonlat, None


def _crop(raw: np.ndarray, patch: int) -> np.ndarray:
    _, h, w = raw.shape
    size = min(h, w, MAX_SIZE) // patch * patch
    if size == 0:
        raise QueryError(f"query image {h}x{w} px is smaller than one {patch}px patch")
    top, left = (h - size) // 2, (w - size) // 2
    return raw[:, top : top + size, left : left + size]


def embed_image(
    embedder,
    image: str | Path | np.ndarray,
    *,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
    when: datetime | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The CLS embedding of ``image`` and notes on how it was read and normalised.

    The centre square (at most 256 px, a multiple of the patch size) is embedded. Statistics come
    from the sensor metadata when the values fit them, else from the image itself (noted).
    ``when`` (acquisition time) feeds the time encoding.
    """
    from clay_search.model.normalise import sensor_normaliser, source_normaliser

    notes: list[str] = []
    lonlat = None
    if isinstance(image, np.ndarray):
        raw = image
    else:
        raw, lonlat, _ = _read(Path(image), embedder.patch_size)
    raw = np.asarray(raw)
    if raw.ndim == 2:
        raw = raw[None]
    if raw.ndim != 3:
        raise QueryError(f"query image must be [C, H, W]; got shape {raw.shape}")
    if raw.dtype.kind not in "biuf":
        raise QueryError(
            f"query image values are {raw.dtype} (complex or non-numeric); give real values "
            "(e.g. np.abs(image) for complex SAR samples)"
        )
    s = embedder.sensors.get(sensor or DEFAULT_SENSOR)
    if bands is None:
        if raw.shape[0] not in (3, 4):
            raise BandMismatchError(
                f"query image has {raw.shape[0]} bands; name them with bands=[...] "
                f"(band names or ids of {s.name})"
            )
        rgb = [b.name for b in s.rgb_bands][:3]
        bands = rgb if raw.shape[0] == 3 else [*rgb, "nir"]
        notes.append(f"bands assumed {bands}")
    if len(bands) != raw.shape[0]:
        raise BandMismatchError(f"{len(bands)} band names for a {raw.shape[0]}-band image")
    blist = [s.band(b) for b in bands]
    keep = [i for i, b in enumerate(blist) if b.has_stats]
    if len(keep) < len(blist):
        dropped = [b.name for i, b in enumerate(blist) if i not in keep]
        notes.append(f"dropped bands without statistics: {dropped}")
    raw = _crop(raw[keep].astype(np.float32), embedder.patch_size)
    blist = [blist[i] for i in keep]
    norm = sensor_normaliser(s, blist)
    # one chip is too small a sample to judge spread: only an 8-bit rendering of a sensor whose
    # statistics are far above 255 gets statistics computed from the image itself
    if float(np.nanmax(raw)) <= 255 and float(np.min(norm.mean)) > 255:
        norm = source_normaliser(s, [raw])
        notes.append("8-bit image: statistics computed from the image")
    emb = embedder.embed_raw(
        raw[None],
        s,
        blist,
        normaliser=norm,
        lonlats=[lonlat] if lonlat else None,
        datetimes=[when] if when else None,
    )
    return emb.embedding[0], notes
