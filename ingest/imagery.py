"""The shared read / normalise / embed step: how ingest turns pixels into vectors.

Ingest's pipeline embeds every batch with :func:`embed_chips`; a query image
(:func:`embed_image`, used by ``Store.search_image``) and fine-tuning read through the same
functions, so a chip is read (:class:`~clay_search.ingest.raster.SourceReader`, band mapping of
:func:`~clay_search.ingest.bands.plan_bands`), normalised
(:func:`~clay_search.ingest.plan.decide_normaliser`) and embedded exactly as ingest does. This
module does not import the ingest job (``clay_search.ingest.job``); the store may import it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from clay_search.errors import QueryError, SourceNotFoundError
from clay_search.ingest.sources import Source

if TYPE_CHECKING:
    from clay_search.ingest.plan import SourcePlan
    from clay_search.model.embedder import Embedder, EmbeddingBatch
    from clay_search.model.normalise import Normaliser

MAX_QUERY_SIZE = 256  # px: the centre square of a query image that is embedded


class _PlainSource(Source):
    """A source whose missing CRS is fine (a query array written to a temporary file)."""

    @property
    def needs_crs(self) -> bool:
        return False


def embed_chips(
    embedder: Embedder,
    plan: SourcePlan,
    raw: np.ndarray,
    valid: np.ndarray,
    *,
    datetimes: Sequence[datetime | None] | None = None,
    lonlats: Sequence[tuple[float, float] | None] | None = None,
    patches: bool = False,
    recon_error: bool = False,
) -> EmbeddingBatch:
    """Embed chips of one source plan as ingest does.

    ``raw``: ``[N, C, H, W]`` raw pixels of ``plan.bands`` (the files' type); ``valid``:
    ``[N, H, W]`` bool. The plan's normaliser, sensor, bands and GSD are used; ``datetimes``
    and ``lonlats`` (one per chip) feed the time and location encodings. Returns the
    embedder's output (``.embedding`` ``[N, D]``, ``.patches`` with ``patches=True``,
    ``.recon_error`` ``[N]`` with ``recon_error=True`` when the weights have a decoder).
    """
    return embedder.embed_raw(
        raw,
        plan.bands.sensor,
        plan.bands.bands,
        normaliser=plan.normaliser,
        valid=valid[:, None],
        gsd=plan.gsd,
        datetimes=list(datetimes) if datetimes else None,
        lonlats=list(lonlats) if lonlats else None,
        patches=patches,
        recon_error=recon_error,
    )


def read_chip(
    path: str | Path,
    embedder: Embedder,
    *,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
    size: int | None = None,
    stats: str = "auto",
    georeferenced: bool = True,
) -> tuple[SourcePlan, np.ndarray, np.ndarray, tuple[float, float] | None]:
    """Read the centre square of a raster file as ingest reads a chip.

    The square is ``size`` px (default: the image's shorter side, at most 256, a multiple of
    the patch size). The sensor and bands are found as ingest finds them (``sensor``/``bands``
    as ``--sensor``/``--bands``), the normaliser is chosen as ingest chooses it (``stats``).
    Returns the plan (sensor, bands, normaliser, GSD, date), the raw chip ``[C, s, s]``, its
    valid mask ``[s, s]`` and the centre's (lon, lat) or None. ``georeferenced=False``
    accepts a GeoTIFF without CRS (an array written to a file).
    """
    from clay_search.geo import footprints
    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.plan import decide_normaliser, plan_source
    from clay_search.ingest.raster import SourceReader
    from clay_search.ingest.readers import ReaderPool
    from clay_search.ingest.sources import _raster_source

    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"image {p} does not exist")
    source = _raster_source(p)
    if not georeferenced:
        source = _PlainSource(**vars(source))
    reader = SourceReader(source)
    meta = reader.open()
    reader.close()
    patch = embedder.patch_size
    side = min(meta.width, meta.height, size or MAX_QUERY_SIZE) // patch * patch
    if side == 0:
        raise QueryError(
            f"image {meta.width}x{meta.height} px is smaller than one {patch} px patch"
        )
    params = IngestParams.from_options(
        sensor=sensor, bands=list(bands) if bands else None, chip_size=side, stats=stats
    )
    plan = plan_source(source, embedder.sensors, params)
    win = Window((meta.width - side) // 2, (meta.height - side) // 2, side, side)
    plan.windows = [win]
    with ReaderPool(2) as readers:
        with readers.use(source) as r:
            raw, valid = r.read(win, plan.bands.indices)
        plan.normaliser = chip_normaliser(plan, raw, valid, stats) or decide_normaliser(
            [plan], stats, side, readers
        )
    ((_, _, lonlat),) = footprints(meta.crs, meta.transform, [win], size=(meta.width, meta.height))
    return plan, raw, valid, lonlat


def chip_normaliser(
    plan: SourcePlan, raw: np.ndarray, valid: np.ndarray, stats: str = "auto"
) -> Normaliser | None:
    """The ``auto`` normaliser of a single chip (a query image), or None to decide as ingest
    decides for a source (:func:`~clay_search.ingest.plan.decide_normaliser`).

    One chip is too small a sample to judge whether values fit the sensor's statistics, so
    they are used whenever every band has them and the product is not known to differ
    (``stats_caveat``), as they are for a store ingested with ``auto`` whose values fit; only
    an 8-bit rendering of a sensor whose statistics are far above 255 gets statistics from the
    chip itself, and dB backscatter of a dB sensor skips the conversion (noted).
    """
    from clay_search.model.normalise import looks_like_db, sensor_normaliser, source_normaliser

    sensor, bands = plan.bands.sensor, plan.bands.bands
    if stats != "auto" or plan.bands.stats_caveat or not all(b.has_stats for b in bands):
        return None
    norm = sensor_normaliser(sensor, bands)
    masked = np.where(valid[None], raw, np.nan).astype(np.float32)
    if sensor.transform == "db" and looks_like_db([masked]):
        norm.transform = None
        norm.notes.append(f"{sensor.name} values are already in dB: the dB conversion is skipped")
    elif valid.any() and float(np.nanmax(masked)) <= 255 and float(np.min(norm.mean)) > 255:
        norm = source_normaliser(sensor, [masked])
        norm.notes.append("8-bit image: statistics computed from the image")
    return norm


def embed_image(
    embedder: Embedder,
    image: str | Path | np.ndarray,
    *,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
    when: datetime | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The embedding (the weights' pooling, as stored) of an image file or ``[C, H, W]`` array,
    read, normalised and embedded by the ingest code; and notes on how.

    An array is written to a temporary GeoTIFF (no georeference) and read like a file.
    ``when`` (acquisition time) feeds the time encoding; else the file's own date is used.
    """
    if isinstance(image, np.ndarray):
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise QueryError(f"query image must be [C, H, W]; got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise QueryError(
                f"query image values are {arr.dtype} (complex or non-numeric); give real values "
                "(e.g. np.abs(image) for complex SAR samples)"
            )
        with tempfile.TemporaryDirectory() as tmp:
            import rasterio

            f = Path(tmp) / "query.tif"
            with rasterio.open(
                f,
                "w",
                driver="GTiff",
                width=arr.shape[2],
                height=arr.shape[1],
                count=arr.shape[0],
                dtype=arr.dtype,
            ) as dst:
                dst.write(arr)
            return _embed_file(embedder, f, sensor, bands, when, georeferenced=False)
    return _embed_file(embedder, Path(image), sensor, bands, when)


def _embed_file(
    embedder: Embedder,
    path: Path,
    sensor: str | None,
    bands: Sequence[str] | None,
    when: datetime | None,
    *,
    georeferenced: bool = True,
) -> tuple[np.ndarray, list[str]]:
    plan, raw, valid, lonlat = read_chip(
        path, embedder, sensor=sensor, bands=bands, georeferenced=georeferenced
    )
    at = when or plan.datetime
    out = embed_chips(
        embedder,
        plan,
        raw[None],
        valid[None],
        datetimes=[at] if at else None,
        lonlats=[lonlat] if lonlat else None,
    )
    notes = [n for n in plan.notes if not n.startswith("thumbnails")]
    notes.extend(plan.normaliser.notes if plan.normaliser else [])
    return out.embedding[0], notes
