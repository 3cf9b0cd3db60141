"""Planning a source before any chip is read: grid, sensor and bands, windows, datetime, GSD,
and one normalisation decision per group of sources (a labelled folder shares one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from rasterio.windows import Window

from clay_search.errors import BandMismatchError, IngestOptionError, NoDataError
from clay_search.geo import footprint
from clay_search.ingest.bands import BandPlan, plan_bands
from clay_search.ingest.chips import check_chip_count, chip_windows, ground_sample_distance
from clay_search.ingest.datetimes import DateChoice, DatesFile, choose_datetime
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
    date: DateChoice = field(default_factory=lambda: DateChoice(None, None, "none"))
    stretch: tuple[np.ndarray, np.ndarray] | None = None  # thumbnail [3] low/high values

    def group_key(self, scope: str = "series") -> tuple:
        """Sources with the same key share one normaliser: a series (``scope="series"``: one
        sensor, band set and data type) or one source (a labelled folder is one source)."""
        key = (self.bands.sensor.name, tuple(self.bands.band_names), self.meta.dtype)
        return key if scope == "series" else (self.source.stats_group, *key)


def thumbnail_bands(
    names: list[str], sensor, chosen: list[str] | None
) -> tuple[list[int] | None, str]:
    """Positions of the thumbnail's bands among ``names`` (the bands read) and what they are.

    ``chosen`` (``--thumbnail-bands``) wins; else the sensor's true colour (``rgb``), else its
    first ``composites`` entry whose bands were read, else red/green/blue by name, else three
    bands by falling wavelength (a false colour), else grey from the first band.
    """

    def pos(keys) -> list[int] | None:
        out = []
        for k in keys:
            try:
                b = sensor.band(k).name
            except BandMismatchError:
                return None
            if b not in names:
                return None
            out.append(names.index(b))
        return out

    if chosen:
        got = pos(chosen)
        if got is None:
            raise IngestOptionError(
                f"--thumbnail-bands {','.join(chosen)}: not all among the bands read "
                f"({', '.join(names)})"
            )
        return (got * 3 if len(got) == 1 else got), "--thumbnail-bands " + ",".join(chosen)
    for keys in [sensor.rgb, *sensor.composites]:
        if keys and (got := pos(keys)) is not None:
            label = "true colour" if tuple(keys) == tuple(sensor.rgb) else "false colour"
            return got, f"{label} {','.join(names[i] for i in got)}"
    if {"red", "green", "blue"} <= set(names):
        return [names.index("red"), names.index("green"), names.index("blue")], "true colour"
    if len(names) >= 3:
        waves = {b.name: b.wavelength for b in sensor.bands}
        order = sorted(range(len(names)), key=lambda i: -waves.get(names[i], 0.0))
        got = [order[0], order[len(order) // 2], order[-1]]
        return got, f"false colour {','.join(names[i] for i in got)}"
    return None, f"grey ({names[0]})"


def _too_small(meta: RasterMeta, cs: int, max_nodata: float) -> str | None:
    """Why not one chip of ``cs`` px fits the image (too much of a chip would be padding)."""
    if meta.width >= cs and meta.height >= cs:
        return None
    fill = min(meta.width, cs) * min(meta.height, cs) / cs**2
    if 1.0 - fill <= max_nodata:
        return None
    fits = [c for c in (1024, 512, 256, 128, 64) if c <= min(meta.width, meta.height)]
    side = min(meta.width, meta.height)
    hint = f"--chip-size {fits[0]}" if fits else f"a chip size of at most {side // 8 * 8}"
    return (
        f"the chip ({cs}x{cs} px) is larger than the image ({meta.width}x{meta.height} "
        f"px): {1 - fill:.0%} of it would be padding (--max-nodata {max_nodata}); use "
        f"{hint}, or raise --max-nodata"
    )


def plan_source(
    source: Source,
    registry: SensorRegistry,
    params: IngestParams,
    *,
    dates: DatesFile | None = None,
) -> SourcePlan:
    """Open ``source`` (metadata only), map its bands and list its chip windows."""
    reader = SourceReader(source, nodata=params.nodata)
    try:
        meta = reader.open()
    finally:
        reader.close()
    keep = params.stats != "auto" and params.stats != "sensor"
    bplan = plan_bands(
        source, meta, registry, sensor=params.sensor, bands=params.bands, keep_unstats=keep
    )
    cs = params.chip_size
    whole = source.kind == "labelled" and max(meta.width, meta.height) <= 2 * cs
    notes = list(bplan.notes)
    if whole:
        windows = [Window(0, 0, meta.width, meta.height)]
    else:
        if why := _too_small(meta, cs, params.max_nodata):
            raise IngestOptionError(f"{source.display}: {why}")
        if meta.width < cs or meta.height < cs:
            notes.append(
                f"the image ({meta.width}x{meta.height} px) is smaller than a chip "
                f"({cs} px): padded"
            )
        check_chip_count(meta.width, meta.height, cs, params.step, source.display)
        windows = chip_windows(meta.width, meta.height, cs, params.step)
    full = Window(0, 0, meta.width, meta.height)
    centre = footprint(meta.crs, meta.transform, full, size=(meta.width, meta.height)).centre
    gsd = ground_sample_distance(
        meta.crs, meta.transform, centre[1] if centre else None, bplan.sensor.gsd
    )
    if whole:
        gsd *= max(meta.width, meta.height) / cs
    gsd = float(f"{gsd:.3g}")  # 9.9992 and 9.9966 m are one GSD: batches stay whole
    date = choose_datetime(source, meta.tags, forced=params.datetime, dates=dates)
    rgb, how = thumbnail_bands(bplan.band_names, bplan.sensor, params.thumbnail_bands)
    notes.append(f"thumbnails: {how}")
    if date.value is None:
        notes.append(
            "no acquisition time found (STAC, file name, GeoTIFF tag, --dates or --datetime)"
        )
    return SourcePlan(
        source, meta, bplan, whole, windows, date.value, float(gsd), rgb, notes=notes, date=date
    )


def _sample_windows(plans: list[SourcePlan], n: int) -> list[tuple[SourcePlan, Window]]:
    """Up to ``n`` windows spread over the plans: one per plan (its middle window) when there
    are at least ``n`` plans, else about ``n / len(plans)`` evenly spaced windows of each."""
    if len(plans) >= n:
        picks = np.unique(np.linspace(0, len(plans) - 1, n).round().astype(int))
        return [(plans[i], plans[i].windows[len(plans[i].windows) // 2]) for i in picks]
    out: list[tuple[SourcePlan, Window]] = []
    per = max(1, n // len(plans))
    for p in plans:
        idx = np.unique(np.linspace(0, len(p.windows) - 1, min(per, len(p.windows))).round())
        out.extend((p, p.windows[int(i)]) for i in idx)
    return out


def read_samples(
    plans: list[SourcePlan],
    chip_size: int,
    readers: ReaderPool,
    failed: dict[int, BaseException] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to 16 chips spread over a group's sources (or one source's windows).

    Read through the run's pool: the sources stay open, so the blocks decoded here are still
    cached when the chips are read, and the run's ``--nodata`` applies. With ``failed`` given,
    a source whose samples cannot be read is recorded there (by ``id(plan)``) and left out,
    so one broken file does not sink its series; without it the error is raised.
    """
    out = []
    picks = _sample_windows(plans, MAX_STATS_SAMPLES)
    k = 0
    while k < len(picks):  # one use of the reader per run of picks of one plan
        plan = picks[k][0]
        got = []
        try:
            with readers.use(plan.source) as r:
                while k < len(picks) and picks[k][0] is plan:
                    got.append(
                        r.read(picks[k][1], plan.bands.indices, chip_size if plan.whole else None)
                    )
                    k += 1
        except Exception as e:
            if failed is None:
                raise
            failed[id(plan)] = e
            got = []
            while k < len(picks) and picks[k][0] is plan:
                k += 1
        out.extend(got)
    return out


def thumbnail_stretch(
    plans: list[SourcePlan], chip_size: int, readers: ReaderPool, *, log: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """One 2-98 % stretch ``(low[3], high[3])`` of the thumbnail bands over a group's samples.

    Shared by every chip of the group (a series), so a dark lake stays dark instead of being
    stretched to full range like static, and dates of a series compare by eye.
    """
    rgb = plans[0].rgb or [0, 0, 0]
    vals = []
    for raw, valid in read_samples(plans, chip_size, readers):
        if valid.any():
            vals.append(raw[rgb][:, valid].astype(np.float32))
    if not vals:
        return None
    v = np.concatenate(vals, axis=1)
    if log:
        v = 10 * np.log10(np.maximum(v, np.float32(1e-10)))
    lo, hi = np.percentile(v, [2, 98], axis=1).astype(np.float32)
    return lo, np.maximum(hi, lo + np.float32(1e-6))


def decide_normaliser(
    plans: list[SourcePlan],
    stats: str,
    chip_size: int,
    readers: ReaderPool,
    failed: dict[int, BaseException] | None = None,
) -> Normaliser:
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
    samples = read_samples(plans, chip_size, readers, failed)
    if failed and not samples:
        raise next(iter(failed.values()))
    masked = [np.where(v[None], a, np.nan) for a, v in samples]
    if not any(v.any() for _, v in samples):
        raise NoDataError(
            f"{first.source.display}: the sampled chips hold only nodata; nothing to ingest"
        )
    already_db = sensor.transform == "db" and looks_like_db(masked)
    notes = (
        [
            f"{sensor.name} values are already in dB (negative backscatter): the dB "
            "conversion is skipped"
        ]
        if already_db
        else []
    )
    caveat = next((p.bands.stats_caveat for p in plans if p.bands.stats_caveat), None)
    if stats == "auto" and caveat:
        reason = f"{caveat}: normalised with statistics computed from the source itself"
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
        reason = (
            f"values do not fit the {sensor.name} statistics ({why}); normalised with "
            "statistics computed from the source itself"
        )
    else:
        reason = "normalised with statistics computed from the source itself"
    try:
        norm = source_normaliser(sensor, masked, transform=None if already_db else "sensor")
    except BandMismatchError as e:
        raise NoDataError(f"{first.source.display}: {e}") from e
    norm.notes.append("; ".join([*notes, reason]))
    return norm
