"""Which sensor a source comes from and which of its bands are which.

Order of evidence for the sensor: ``--sensor``; STAC constellation/platform or a product id in
the file name (Landsat, Sentinel-1/2, NAIP); band names (STAC eo:bands, band-file suffixes,
GeoTIFF band descriptions) that only one sensor knows; a band count only one sensor has.
For the bands, in file order: ``--bands``; names from STAC/band files/descriptions; red, green,
blue colour interpretation; the sensor's own order when the count equals its band count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clay_search.errors import BandMismatchError, UnknownSensorError
from clay_search.ingest.raster import RasterMeta
from clay_search.ingest.sources import Source
from clay_search.model.sensors import Band, Sensor, SensorRegistry

_ALIASES = {"r": "red", "g": "green", "b": "blue", "n": "nir", "nir08": "nir08"}
_NAME_HINTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"L[COTEM]0[89]_L2S", re.I), "landsat-c2l2-sr"),
    (re.compile(r"L[COTEM]0[89]_L1", re.I), "landsat-c2l1"),
    (re.compile(r"S2[A-D]_MSIL(1C|2A)", re.I), "sentinel-2-l2a"),
    (re.compile(r"S1[A-D]_\w{2}_(GRD|SLC)", re.I), "sentinel-1-rtc"),
    (re.compile(r"^m_\d{7}_[a-z]{2}_\d{2}_\d", re.I), "naip"),
]


_LANDSAT_C1 = re.compile(r"L[COTEM]0\d_L\w{3}_\d{6}_\d{8}_\d{8}_01_", re.I)


def stats_caveat(source: Source, sensor: Sensor) -> str | None:
    """Why the sensor's statistics cannot apply to this product, when its name tells."""
    if sensor.name.startswith("landsat-c2") and any(
        _LANDSAT_C1.search(p) for p in source.name_parts
    ):
        return (f"a Landsat Collection 1 product (raw DN), while the {sensor.name} statistics "
                "are for Collection 2")
    return None


@dataclass
class BandPlan:
    """A source's sensor, the bands that will be read (source indices) and notes for the user."""

    sensor: Sensor
    indices: list[int]  # 0-based source band indices to read
    bands: list[Band]  # the sensor bands they are, same order
    notes: list[str] = field(default_factory=list)
    stats_caveat: str | None = None

    @property
    def band_names(self) -> list[str]:
        """Common names of the bands read."""
        return [b.name for b in self.bands]


def _lookup(sensor: Sensor, key: str) -> Band | None:
    k = key.strip().lower()
    k = _ALIASES.get(k, k)
    try:
        return sensor.band(k)
    except BandMismatchError:
        return None


def _name_hint(source: Source) -> str | None:
    for part in source.name_parts:
        for pat, name in _NAME_HINTS:
            if pat.search(part):
                return name
    return None


def _file_keys(source: Source, meta: RasterMeta) -> list[str] | None:
    if source.band_keys and len(source.band_keys) == meta.count:
        return list(source.band_keys)
    desc = [d for d in meta.descriptions if d]
    if len(desc) == meta.count:
        return list(desc)
    return None


def detect_sensor(
    source: Source, meta: RasterMeta, registry: SensorRegistry, forced: str | None
) -> tuple[Sensor, str]:
    """The source's sensor and how it was found."""
    if forced:
        return registry.get(forced), "--sensor"
    hint = source.sensor_hint or _name_hint(source)
    if hint and hint in registry:
        return registry.get(hint), "STAC metadata" if source.sensor_hint else "file name"
    keys = _file_keys(source, meta)
    if keys:
        fits = [n for n in registry.names if all(_lookup(registry.get(n), k) for k in keys)]
        if len(fits) == 1:
            return registry.get(fits[0]), "band names"
        if len(fits) > 1:
            exact = [n for n in fits if len(registry.get(n).bands) == meta.count]
            if len(exact) == 1:
                return registry.get(exact[0]), "band names and count"
            raise UnknownSensorError(
                f"{source.display}: bands {keys} fit several sensors ({', '.join(fits)}); "
                "say which with --sensor NAME"
            )
    same_count = [n for n in registry.names if len(registry.get(n).bands) == meta.count]
    if len(same_count) == 1:
        return registry.get(same_count[0]), f"band count ({meta.count})"
    if not same_count and not keys:
        counts = ", ".join(f"{n}: {len(registry.get(n).bands)}" for n in registry.names)
        raise BandMismatchError(
            f"{source.display} has {meta.count} band(s) ({meta.dtype}), a count that fits no "
            f"known sensor ({counts}). Name the sensor with --sensor and its bands in file "
            "order with --bands (e.g. --bands red,green,blue), or register the sensor in a "
            "YAML file passed with --sensors-file."
        )
    raise UnknownSensorError(
        f"cannot tell which sensor {source.display} comes from ({meta.count} bands, "
        f"{meta.dtype}, no band names); pass --sensor NAME (known: {', '.join(registry.names)})"
        " or register one in a YAML file shaped like clay_search/model/sensors.yaml "
        "(--sensors-file)"
    )


def _band_keys_in_order(
    source: Source, meta: RasterMeta, sensor: Sensor, forced_bands: list[str] | None
) -> tuple[list[Band | None], str]:
    if forced_bands:
        if len(forced_bands) != meta.count:
            raise BandMismatchError(
                f"--bands names {len(forced_bands)} bands but {source.display} has "
                f"{meta.count}; name every band of the file in order"
            )
        return [sensor.band(k) for k in forced_bands], "--bands"
    keys = _file_keys(source, meta)
    if keys:
        found = [_lookup(sensor, k) for k in keys]
        if source.wavelengths and len(source.wavelengths) == len(found):
            for i, w in enumerate(source.wavelengths):
                if found[i] is None and w is not None:
                    try:
                        found[i] = sensor.by_wavelength(w)
                    except BandMismatchError:
                        pass
        if all(f is not None for f in found):
            return found, "band names"
        unknown = [k for k, f in zip(keys, found, strict=True) if f is None]
        if any(f is not None for f in found):
            return found, f"band names (not in {sensor.name}: {unknown})"
    ci = [c.lower() for c in meta.colorinterp]
    if ci[:3] == ["red", "green", "blue"] and all(c in ("alpha", "undefined") for c in ci[3:]):
        if meta.count == 3 or "alpha" in ci[3:]:
            rgb = [_lookup(sensor, k) for k in ("red", "green", "blue")]
            if all(rgb):
                return [*rgb, *[None] * (meta.count - 3)], "colour interpretation"
    if meta.count == len(sensor.bands):
        return list(sensor.bands), (
            f"{sensor.name} band order (assumed: the file names no bands; if its order differs, "
            "name them with --bands)"
        )
    names = ", ".join(b.name + (f" ({b.id})" if b.id else "") for b in sensor.bands)
    raise BandMismatchError(
        f"{source.display} has {meta.count} band(s) and no band names; {sensor.name} has "
        f"{len(sensor.bands)} ({names}). Name the file's bands in order with --bands, e.g. "
        f"--bands {','.join(b.id or b.name for b in sensor.bands[: meta.count])}"
    )


def plan_bands(
    source: Source,
    meta: RasterMeta,
    registry: SensorRegistry,
    *,
    sensor: str | None = None,
    bands: list[str] | None = None,
    keep_unstats: bool = False,
) -> BandPlan:
    """Map a source's bands onto a sensor. Bands without statistics are dropped with a note
    unless ``keep_unstats`` (statistics will be computed from the data)."""
    s, how = detect_sensor(source, meta, registry, sensor)
    per_band, band_how = _band_keys_in_order(source, meta, s, bands)
    notes = [f"sensor {s.name} (from {how}); bands from {band_how}"]
    indices, chosen, dropped, seen = [], [], [], set()
    for i, b in enumerate(per_band):
        if b is None or b.name in seen:
            continue
        if not b.has_stats and not keep_unstats:
            dropped.append(b.id or b.name)
            continue
        seen.add(b.name)
        indices.append(i)
        chosen.append(b)
    if dropped:
        notes.append(
            f"dropped {', '.join(dropped)}: no normalisation statistics for them in {s.name} "
            "(--stats source keeps them with statistics computed from the data)"
        )
    if not chosen:
        raise BandMismatchError(
            f"none of the bands of {source.display} can be used with {s.name}; check --bands"
        )
    return BandPlan(sensor=s, indices=indices, bands=chosen, notes=notes,
                    stats_caveat=stats_caveat(source, s))
