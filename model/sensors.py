"""Sensor metadata as data: bands, band ids, central wavelengths, normalisation statistics, GSD.

The facts live in ``sensors.yaml`` (shipped with the package); this module only reads them.
Custom sensors are registered on a :class:`SensorRegistry` (never globally) or loaded from a YAML
file of the same shape.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from clay_search.errors import BandMismatchError, SourceNotFoundError, UnknownSensorError


@dataclass(frozen=True)
class Band:
    """One band: common name, mission band id, central wavelength (um), statistics."""

    name: str
    wavelength: float
    id: str | None = None
    mean: float | None = None
    std: float | None = None

    @property
    def has_stats(self) -> bool:
        """Whether normalisation statistics are known for this band."""
        return self.mean is not None and self.std is not None


@dataclass(frozen=True)
class Sensor:
    """A sensor's bands (in the model's order), GSD and normalisation facts."""

    name: str
    gsd: float
    bands: tuple[Band, ...]
    rgb: tuple[str, ...] = ()
    transform: str | None = None
    description: str = ""
    composites: tuple[tuple[str, ...], ...] = ()  # other thumbnails, by preference
    family: str | None = None  # sensors whose band ids overlap with other meanings
    hints: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    #: band orders of known products whose files name no bands: (name regex, band ids), used
    #: when a file's name (or folder) matches and its band count equals the order's
    file_orders: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), compare=False)
    _lookup: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = {}
        for b in self.bands:
            lookup[b.name.lower()] = b
            if b.id:
                lookup.setdefault(b.id.lower(), b)
        object.__setattr__(self, "_lookup", lookup)

    @property
    def band_names(self) -> list[str]:
        """Common names of all bands, in order."""
        return [b.name for b in self.bands]

    def band(self, key: str) -> Band:
        """A band by common name or band id (``red``, ``B04``, ``b8a``; case-insensitive)."""
        try:
            return self._lookup[key.strip().lower()]
        except KeyError:
            names = ", ".join(f"{b.name}" + (f" ({b.id})" if b.id else "") for b in self.bands)
            raise BandMismatchError(
                f"sensor {self.name!r} has no band {key!r}; its bands are: {names}. "
                "Name bands with --bands using these names or ids."
            ) from None

    def select(self, keys: Iterable[str]) -> list[Band]:
        """Bands for ``keys`` in the given order (names or ids)."""
        return [self.band(k) for k in keys]

    def by_wavelength(self, wavelength: float, *, tolerance: float = 0.02) -> Band:
        """The band whose central wavelength is nearest to ``wavelength`` (um), within tolerance."""
        best = min(self.bands, key=lambda b: abs(b.wavelength - wavelength))
        if abs(best.wavelength - wavelength) > tolerance:
            raise BandMismatchError(
                f"sensor {self.name!r} has no band near {wavelength} um "
                f"(nearest: {best.name} at {best.wavelength} um)"
            )
        return best

    def has_band(self, key: str) -> bool:
        """Whether ``key`` names one of the bands (common name or band id)."""
        return key.strip().lower() in self._lookup

    def matches(self, kind: str, text: str) -> str | None:
        """The first of this sensor's ``kind`` hints (``product`` or ``stac`` regexes, see
        sensors.yaml) found in ``text``, or None."""
        import re

        for pat in self.hints.get(kind, ()):
            if re.search(pat, text, re.IGNORECASE):
                return pat
        return None

    @property
    def rgb_bands(self) -> list[Band]:
        """The bands used for RGB thumbnails."""
        return [self.band(k) for k in self.rgb]

    def with_stats(self, stats: Mapping[str, tuple[float, float]]) -> Sensor:
        """A copy with (mean, std) replaced for the named bands."""
        new = []
        for b in self.bands:
            if b.name in stats:
                m, s = stats[b.name]
                new.append(replace(b, mean=float(m), std=float(s)))
            else:
                new.append(b)
        return replace(self, bands=tuple(new))


def _sensor_from_dict(name: str, d: Mapping) -> Sensor:
    try:
        bands = tuple(
            Band(
                name=bname,
                wavelength=float(b["wavelength"]),
                id=b.get("id"),
                mean=None if b.get("mean") is None else float(b["mean"]),
                std=None if b.get("std") is None else float(b["std"]),
            )
            for bname, b in d["bands"].items()
        )
        return Sensor(
            name=name,
            gsd=float(d["gsd"]),
            bands=bands,
            rgb=tuple(d.get("rgb") or ()),
            transform=d.get("transform"),
            description=d.get("description", ""),
            composites=tuple(tuple(c) for c in d.get("composites") or ()),
            family=d.get("family"),
            hints={k: tuple(v) for k, v in (d.get("hints") or {}).items()},
            file_orders=tuple(
                (str(o["match"]), tuple(o["bands"])) for o in d.get("file_orders") or ()
            ),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UnknownSensorError(
            f"sensor {name!r} is malformed ({e!r}); each sensor needs gsd and bands with "
            "wavelength (and optionally id, mean, std)"
        ) from e


@functools.lru_cache(maxsize=1)
def _packaged_yaml() -> dict:
    text = resources.files("clay_search.model").joinpath("sensors.yaml").read_text()
    return yaml.safe_load(text)


def packaged_sensors_text() -> str:
    """The text of the shipped ``sensors.yaml`` (part of the model id)."""
    return resources.files("clay_search.model").joinpath("sensors.yaml").read_text()


class SensorRegistry:
    """A set of sensors by name. ``SensorRegistry.default()`` holds every sensor Clay ships."""

    def __init__(self, sensors: Mapping[str, Sensor] | None = None) -> None:
        self._sensors: dict[str, Sensor] = dict(sensors or {})

    @classmethod
    def default(cls) -> SensorRegistry:
        """A fresh registry of the shipped sensors (changing it changes nothing global)."""
        data = copy.deepcopy(_packaged_yaml())
        return cls({k: _sensor_from_dict(k, v) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, *, include_default: bool = True) -> SensorRegistry:
        """Sensors from a YAML file shaped like ``sensors.yaml`` (added to the defaults)."""
        path = Path(path)
        if not path.exists():
            raise SourceNotFoundError(f"sensor file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        reg = cls.default() if include_default else cls()
        for k, v in data.items():
            reg.add(_sensor_from_dict(k, v))
        return reg

    def __contains__(self, name: str) -> bool:
        return name in self._sensors

    def __iter__(self):
        return iter(self._sensors)

    def __len__(self) -> int:
        return len(self._sensors)

    @property
    def names(self) -> list[str]:
        """Sorted sensor names."""
        return sorted(self._sensors)

    def get(self, name: str) -> Sensor:
        """The sensor called ``name``; a clear error listing the known ones otherwise."""
        try:
            return self._sensors[name]
        except KeyError:
            raise UnknownSensorError(
                f"unknown sensor {name!r}. Known sensors: {', '.join(self.names)}. "
                "Register one with SensorRegistry.register(name, bands=..., wavelengths=..., "
                "gsd=...) or pass a YAML file shaped like clay_search/model/sensors.yaml "
                "(--sensors-file)."
            ) from None

    def from_hints(self, kind: str, texts: Iterable[str]) -> tuple[Sensor, str] | None:
        """The first sensor (this registry's order: sensors.yaml's, then added ones) whose
        ``kind`` hint (``product``: file/folder names; ``stac``: STAC or tag text) is found in
        the first of ``texts`` that names one; with the text that matched."""
        for text in texts:
            if not text:
                continue
            for sensor in self._sensors.values():
                if sensor.matches(kind, str(text)):
                    return sensor, str(text)
        return None

    def family(self, sensor: Sensor) -> list[Sensor]:
        """The other sensors of ``sensor``'s family (band ids that mean other bands)."""
        if not sensor.family:
            return []
        return [
            s for s in self._sensors.values() if s.family == sensor.family and s.name != sensor.name
        ]

    def add(self, sensor: Sensor) -> Sensor:
        """Add (or replace) a sensor."""
        self._sensors[sensor.name] = sensor
        return sensor

    def register(
        self,
        name: str,
        *,
        bands: Sequence[str],
        wavelengths: Sequence[float],
        gsd: float,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        band_ids: Sequence[str] | None = None,
        rgb: Sequence[str] = (),
        transform: str | None = None,
    ) -> Sensor:
        """Register a custom sensor from band names and central wavelengths (um).

        Statistics may be given, or computed later from imagery (:func:`compute_band_stats`).
        """
        n = len(bands)
        for label, seq in (
            ("wavelengths", wavelengths),
            ("mean", mean),
            ("std", std),
            ("band_ids", band_ids),
        ):
            if seq is not None and len(seq) != n:
                raise BandMismatchError(f"{n} bands but {len(seq)} {label}")
        if any(not (0.2 <= w <= 100_000) for w in wavelengths):
            raise BandMismatchError(
                "wavelengths must be central wavelengths in micrometres (e.g. 0.665 for red)"
            )
        sensor = Sensor(
            name=name,
            gsd=float(gsd),
            bands=tuple(
                Band(
                    name=b,
                    wavelength=float(wavelengths[i]),
                    id=band_ids[i] if band_ids else None,
                    mean=float(mean[i]) if mean is not None else None,
                    std=float(std[i]) if std is not None else None,
                )
                for i, b in enumerate(bands)
            ),
            rgb=tuple(rgb),
            transform=transform,
        )
        return self.add(sensor)


def compute_band_stats(
    arrays: Iterable[np.ndarray], *, nodata: float | None = None, transform: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over chips or scenes ``[C, H, W]`` (streaming, float64).

    Pixels equal to ``nodata`` and non-finite pixels are ignored; ``transform='db'`` applies the
    same dB conversion normalisation applies.
    """
    total: np.ndarray | None = None
    sq: np.ndarray | None = None
    count: np.ndarray | None = None
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 2:
            a = a[None]
        flat = a.reshape(a.shape[0], -1)
        valid = np.isfinite(flat)
        if nodata is not None:
            valid &= flat != nodata
        if transform == "db":
            valid &= flat > 0
            flat = 10 * np.log10(np.where(valid, flat, 1.0))
        flat = np.where(valid, flat, 0.0)
        if total is None:
            total = np.zeros(flat.shape[0])
            sq = np.zeros(flat.shape[0])
            count = np.zeros(flat.shape[0])
        total += flat.sum(1)
        sq += (flat**2).sum(1)
        count += valid.sum(1)
    # total, sq and count are set together on the first array
    if total is None or sq is None or count is None or (count == 0).any():
        raise BandMismatchError("no valid pixels to compute band statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    return mean, np.maximum(std, 1e-6)
