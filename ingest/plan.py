"""Planning a source before any chip is read: grid, sensor and bands, windows, datetime, GSD,
and one normalisation decision per group of sources (a labelled folder shares one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from rasterio.windows import Window

from clay_search.errors import BandMismatchError, NoDataError
from clay_search.geo import footprint
from clay_search.ingest.bands import BandPlan, plan_bands
from clay_search.ingest.chips import check_chip_count, chip_windows, ground_sample_distance
from clay_search.ingest.datetimes import datetime_from_names
from clay_search.ingest.params import IngestParams
from clay_search.ingest.raster import RasterMeta, SourceReader
from clay_search.ingest.readers import ReaderPool
from clay_search.ingest.sources import Source
from clay_search.model.normalise import (
    Normaliser,
    file_normaliser,
    fits_sensor_stats,
    looks_like_db,
    sensor_normaliser,
    source_normaliser,
)
from clay_search.model.sensors import SensorRegistry

MAX_STATS_SAMPLES = 16


@dataclass
class SourcePlan:
    """Everything needed to read and embed a source's chips."""

    source: Source
    meta: RasterMeta
    bands: BandPlan
    whole: bool  # one chip per file (labelled chips), resampled to the chip size
    windows: list[Window]
    datetime: datetime | None
    gsd: float
    rgb: list[int] | None  # positions of the thumbnail bands among the bands read
    normaliser: Normaliser | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def group_key(self) -> tuple:
        """Sources with the same key share one normaliser."""
        return (self.source.stats_group, self.bands.sensor.name, tuple(self.bands.band_names))


def plan_source(source: Source, registry: SensorRegistry, params: IngestParams) -> SourcePlan:
    """Open ``source`` (metadata only), map its bands and list its chip windows."""
    reader = SourceReader(source, nodata=params.nodata)
    try:
        meta = reader.open()
    finally:
        reader.close()
    keep = params.stats != "auto" and params.stats != "sensor"
    bplan = plan_bands(source, meta, registry, sensor=params.sensor, bands=params.bands,
                       keep_unstats=keep)
    cs = params.chip_size
    whole = source.kind == "labelled" and max(meta.width, meta.height) <= 2 * cs
    if whole:
        windows = [Window(0, 0, meta.width, meta.height)]
    else:
        check_chip_count(meta.width, meta.height, cs, params.step, source.display)
        windows = chip_windows(meta.width, meta.height, cs, params.step)
    full = Window(0, 0, meta.width, meta.height)
    centre = footprint(meta.crs, meta.transform, full, size=(meta.width, meta.height)).centre
    gsd = ground_sample_distance(meta.crs, meta.transform, centre[1] if centre else None,
                                 bplan.sensor.gsd)
    if whole:
        gsd *= max(meta.width, meta.height) / cs
    gsd = float(f"{gsd:.3g}")  # 9.9992 and 9.9966 m are one GSD: batches stay whole
    dt = params.datetime or source.datetime or datetime_from_names(source.name_parts)
    names = bplan.band_names
    rgb_names = list(bplan.sensor.rgb)
    rgb = [names.index(n) for n in rgb_names] if all(n in names for n in rgb_names) else None
    notes = list(bplan.notes)
    if rgb is None and len(names) >= 3 and {"red", "green", "blue"} <= set(names):
        rgb = [names.index("red"), names.index("green"), names.index("blue")]
    if dt is None:
        notes.append("no acquisition time found (STAC, file name or --datetime)")
    return SourcePlan(source, meta, bplan, whole, windows, dt, float(gsd), rgb, notes=notes)


def _sample_windows(plans: list[SourcePlan], n: int) -> list[tuple[SourcePlan, Window]]:
    if len(plans) > 1:
        picks = np.unique(np.linspace(0, len(plans) - 1, min(n, len(plans))).round().astype(int))
        return [(plans[i], plans[i].windows[0]) for i in picks]
    p = plans[0]
    picks = np.unique(np.linspace(0, len(p.windows) - 1, min(n, len(p.windows))).round())
    return [(p, p.windows[int(i)]) for i in picks]


def read_samples(plans: list[SourcePlan], chip_size: int,
                 readers: ReaderPool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to 16 chips spread over a group's sources (or one source's windows).

    Read through the run's pool: the sources stay open, so the blocks decoded here are still
    cached when the chips are read, and the run's ``--nodata`` applies.
    """
    out = []
    picks = _sample_windows(plans, MAX_STATS_SAMPLES)
    k = 0
    while k < len(picks):  # one use of the reader per run of picks of one plan
        plan = picks[k][0]
        with readers.use(plan.source) as r:
            while k < len(picks) and picks[k][0] is plan:
                out.append(r.read(picks[k][1], plan.bands.indices,
                                  chip_size if plan.whole else None))
                k += 1
    return out


def decide_normaliser(plans: list[SourcePlan], stats: str, chip_size: int,
                      readers: ReaderPool) -> Normaliser:
    """One normaliser for a group: the sensor's statistics when the values fit them (``auto``),
    else statistics computed from the group's own pixels; or as ``stats`` says.

    Backscatter of a dB sensor (Sentinel-1, linear power expected) that is already in dB is
    normalised without the conversion (the sensor statistics are in dB), with a note.
    """
    first = plans[0]
    sensor, bands = first.bands.sensor, first.bands.bands
    if stats not in ("auto", "sensor", "source"):
        return file_normaliser(stats, bands, sensor)
    if stats == "sensor":
        return sensor_normaliser(sensor, bands)
    samples = read_samples(plans, chip_size, readers)
    masked = [np.where(v[None], a, np.nan) for a, v in samples]
    if not any(v.any() for _, v in samples):
        raise NoDataError(
            f"{first.source.display}: the sampled chips hold only nodata; nothing to ingest"
        )
    already_db = sensor.transform == "db" and looks_like_db(masked)
    notes = [f"{sensor.name} values are already in dB (negative backscatter): the dB "
             "conversion is skipped"] if already_db else []
    caveat = next((p.bands.stats_caveat for p in plans if p.bands.stats_caveat), None)
    if stats == "auto" and caveat:
        reason = (f"{caveat}: normalised with statistics computed from the source itself")
    elif stats == "auto" and all(b.has_stats for b in bands):
        norm = sensor_normaliser(sensor, bands)
        if already_db:
            norm.transform = None  # the sensor statistics are in dB already
        big = np.concatenate([a for a, _ in samples], axis=2)
        valid = np.concatenate([v for _, v in samples], axis=1)
        ok, why = fits_sensor_stats(big, norm, valid=valid[None])
        if ok:
            norm.notes.extend(notes)
            return norm
        reason = (f"values do not fit the {sensor.name} statistics ({why}); normalised with "
                  "statistics computed from the source itself")
    else:
        reason = "normalised with statistics computed from the source itself"
    try:
        norm = source_normaliser(sensor, masked,
                                 transform=None if already_db else "sensor")
    except BandMismatchError as e:
        raise NoDataError(f"{first.source.display}: {e}") from e
    norm.notes.append("; ".join([*notes, reason]))
    return norm
