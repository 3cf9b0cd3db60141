"""Which sensor a source comes from and which of its bands are which.

Order of evidence for the sensor: ``--sensor``; STAC constellation/platform or a product id in
the file name (Landsat, Sentinel-1/2, NAIP); band names (STAC eo:bands, band-file suffixes,
GeoTIFF band descriptions) that only one sensor knows; a band count only one sensor has.
For the bands, in file order: ``--bands``; names from STAC/band files/descriptions; red, green,
blue colour interpretation; the sensor's own order when the count equals its band count.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from clay_search.errors import BandMismatchError, UnknownSensorError
from clay_search.ingest.raster import RasterMeta
from clay_search.ingest.sources import Source
from clay_search.model.sensors import Band, Sensor, SensorRegistry

_ALIASES = {"r": "red", "g": "green", "b": "blue", "n": "nir", "nir08": "nir08"}
_PARTS = re.compile(r"[\s_:/-]+")
#: GeoTIFF tags that may name the sensor or platform (searched with the sensors' stac hints).
SENSOR_TAGS = ("SENSOR", "SATELLITE", "PLATFORM", "SPACECRAFT_ID", "SPACECRAFT", "MISSION")


_LANDSAT_C1 = re.compile(r"L[COTEM]0\d_L\w{3}_\d{6}_\d{8}_\d{8}_01_", re.I)


def stats_caveat(source: Source, sensor: Sensor) -> str | None:
    """Why the sensor's statistics cannot apply to this product, when its name tells."""
    if sensor.name.startswith("landsat-c2") and any(
        _LANDSAT_C1.search(p) for p in source.name_parts
    ):
        return (
            f"a Landsat Collection 1 product (raw DN), while the {sensor.name} statistics "
            "are for Collection 2"
        )
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
    """The band ``key`` names: a common name, a band id, or a description made of both
    (``B1_blue``) when its parts agree; None otherwise."""
    k = key.strip().lower()
    k = _ALIASES.get(k, k)
    if sensor.has_band(k):
        return sensor.band(k)
    found = {
        sensor.band(_ALIASES.get(p, p))
        for p in _PARTS.split(k)
        if p and sensor.has_band(_ALIASES.get(p, p))
    }
    return found.pop() if len(found) == 1 else None


def _tag_text(meta: RasterMeta) -> str | None:
    tags = {str(k).upper(): str(v) for k, v in (meta.tags or {}).items()}
    parts = [tags[t] for t in SENSOR_TAGS if tags.get(t)]
    return " ".join(parts) or None


def _evidence(
    source: Source, meta: RasterMeta, registry: SensorRegistry
) -> tuple[Sensor, str] | None:
    """The sensor that the source's own metadata names: STAC, a product id, a GeoTIFF tag."""
    if source.stac_text and (hit := registry.from_hints("stac", [source.stac_text])):
        return hit[0], "STAC metadata"
    if source.sensor_hint and source.sensor_hint in registry:
        return registry.get(source.sensor_hint), "STAC metadata"
    if hit := registry.from_hints("product", source.name_parts):
        return hit[0], "file name"
    if (text := _tag_text(meta)) and (hit := registry.from_hints("stac", [text])):
        return hit[0], f"GeoTIFF tag ({text!r})"
    return None


def _id_meanings(s: Sensor, other: Sensor, ids: list[str] | None = None) -> str:
    """``B1 is coastal on landsat-c2l1, blue on landsat-etm-c2l1; ...`` for ids both have."""
    keys = ids or [b.id for b in s.bands if b.id]
    out = [
        f"{k.upper()} is {s.band(k).name} on {s.name}, {other.band(k).name} on {other.name}"
        for k in keys
        if s.has_band(k) and other.has_band(k) and s.band(k).name != other.band(k).name
    ]
    return "; ".join(out[:3]) or "none in common"


def _reflective_ids(s: Sensor) -> set[str]:
    return {b.id.upper() for b in s.bands if b.id and b.wavelength < 3.0 and b.name != "pan"}


def check_band_ids(
    source: Source, meta: RasterMeta, sensor: Sensor, registry: SensorRegistry, forced: list[str]
) -> list[str]:
    """Notes (and errors) for ``--bands`` given as band ids of a sensor whose family numbers
    bands differently (Landsat 8/9 B2 is Landsat 4-7 B1): the ids are read as ``sensor``'s,
    said on screen; a set of ids that is another family member's own band set, or a file whose
    band descriptions contradict them, is an error."""
    family = registry.family(sensor)
    ids = [
        k
        for k in forced
        if sensor.band(_ALIASES.get(k.strip().lower(), k)).name != k.strip().lower()
        and k.strip().lower() not in _ALIASES
    ]
    if not family or not ids:
        return []
    differ = [o for o in family if _id_meanings(sensor, o, ids) != "none in common"]
    if not differ:
        return []
    given = {k.strip().upper() for k in ids}
    for o in differ:
        own = _reflective_ids(o)
        if given == own and given != _reflective_ids(sensor):
            raise BandMismatchError(
                f"{source.display}: --bands {','.join(forced)} are the {o.name} band ids "
                f"({o.description.split('(')[0].strip()}), not {sensor.name}'s: "
                f"{_id_meanings(sensor, o, ids)}. Use --sensor {o.name}; if this really is "
                f"{sensor.name}, name the bands by common name (--bands "
                f"{','.join(sensor.band(k).name for k in forced)})"
            )
    for i, k in enumerate(forced):
        d = meta.descriptions[i] if i < len(meta.descriptions) else None
        if not d:
            continue
        meant = _lookup(sensor, d)
        parts = {p for p in _PARTS.split(d.lower()) if p}
        named = {b.name for b in sensor.bands if b.name in parts}
        if (
            (meant is None or meant.name != sensor.band(k).name)
            and named
            and sensor.band(k).name not in named
        ):
            raise BandMismatchError(
                f"{source.display}: --bands reads band {i + 1} as {k} = {sensor.band(k).name} "
                f"on {sensor.name}, but the file describes it as {d!r}. Band ids are per "
                f"sensor ({_id_meanings(sensor, differ[0], ids)}): check --sensor, or name the "
                "bands by common name"
            )
    return [
        f"--bands ids read as {sensor.name}'s ({_id_meanings(sensor, differ[0], ids)}); "
        f"for another Landsat use its --sensor ({', '.join(o.name for o in differ)}) or "
        "common names"
    ]


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
    evidence = _evidence(source, meta, registry)
    if forced:
        s = registry.get(forced)
        if evidence and evidence[0].name != s.name and evidence[0] in registry.family(s):
            other, how = evidence
            raise UnknownSensorError(
                f"{source.display}: --sensor {s.name} ({s.description.split('(')[0].strip()}) "
                f"but its {how} says {other.name} ({other.description.split('(')[0].strip()}); "
                f"their band ids differ ({_id_meanings(s, other)}). Use --sensor {other.name}, "
                "or name the bands by common name (--bands blue,green,...)"
            )
        return s, "--sensor"
    if evidence:
        return evidence
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
        chosen = [sensor.band(_ALIASES.get(k.strip().lower(), k)) for k in forced_bands]
        names = [b.name for b in chosen]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise BandMismatchError(
                f"--bands {','.join(forced_bands)} names {', '.join(dup)} more than once on "
                f"{sensor.name}; name each band of the file once, in file order"
            )
        return chosen, "--bands"
    keys = _file_keys(source, meta)
    if keys:
        found = [_lookup(sensor, k) for k in keys]
        if source.wavelengths and len(source.wavelengths) == len(found):
            for i, w in enumerate(source.wavelengths):
                if found[i] is None and w is not None:
                    with contextlib.suppress(BandMismatchError):
                        found[i] = sensor.by_wavelength(w)
        if all(f is not None for f in found):
            return found, "band names"
        unknown = [k for k, f in zip(keys, found, strict=True) if f is None]
        if any(f is not None for f in found):
            return found, f"band names (not in {sensor.name}: {unknown})"
    ci = [c.lower() for c in meta.colorinterp]
    rgb_first = ci[:3] == ["red", "green", "blue"]
    if (
        rgb_first
        and all(c in ("alpha", "undefined") for c in ci[3:])
        and (meta.count == 3 or "alpha" in ci[3:])
    ):
        rgb = [_lookup(sensor, k) for k in ("red", "green", "blue")]
        if all(rgb):
            return [*rgb, *[None] * (meta.count - 3)], "colour interpretation"
    if meta.count == len(sensor.bands):
        return list(sensor.bands), (
            f"{sensor.name} band order (assumed: the file names no bands; if its order differs, "
            "name them with --bands)"
        )
    listed = ", ".join(b.name + (f" ({b.id})" if b.id else "") for b in sensor.bands)
    raise BandMismatchError(
        f"{source.display} has {meta.count} band(s) and no band names; {sensor.name} has "
        f"{len(sensor.bands)} ({listed}). Name the file's bands in order with --bands, e.g. "
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
    if bands:
        notes.extend(check_band_ids(source, meta, s, registry, bands))
    if not any(b is not None and b.has_stats for b in per_band):
        keep_unstats = True  # no statistics at all (Landsat TM/ETM+): computed from the data
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
    return BandPlan(
        sensor=s, indices=indices, bands=chosen, notes=notes, stats_caveat=stats_caveat(source, s)
    )
