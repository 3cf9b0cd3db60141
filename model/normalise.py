"""Per-band normalisation of raw sensor values, including sensor-specific steps (Sentinel-1 dB).

The model only ever sees normalised pixels; all value handling lives here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clay_search.errors import BandMismatchError, SourceNotFoundError
from clay_search.model.sensors import Band, Sensor, compute_band_stats


@dataclass
class Normaliser:
    """``(x - mean) / std`` per band after an optional transform; nodata -> 0 (the mean).

    ``stats_source`` records where the statistics came from: ``sensor`` (the sensor metadata),
    ``source`` (computed from the imagery itself) or a file path (``--stats FILE``).
    """

    mean: np.ndarray
    std: np.ndarray
    transform: str | None = None
    stats_source: str = "sensor"
    notes: list[str] = field(default_factory=list)

    def __call__(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Normalise ``[..., C, H, W]`` raw values to float32. ``valid`` masks nodata pixels."""
        mean = self.mean.astype(np.float32)[:, None, None]
        std = self.std.astype(np.float32)[:, None, None]
        x = np.asarray(pixels)
        if self.transform == "db":
            x = 10 * np.log10(np.maximum(x.astype(np.float32, copy=False), np.float32(1e-10)))
            x -= mean
        else:  # one new float32 array from any input type, then in place
            x = np.subtract(x, mean, dtype=np.float32)
        x /= std
        if valid is not None:
            np.copyto(x, np.float32(0.0), where=~np.asarray(valid, dtype=bool))
        if not np.isfinite(x).all():
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def to_dict(self) -> dict:
        """JSON-able description (stored in run manifests)."""
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "transform": self.transform,
            "stats_source": self.stats_source,
        }


def sensor_normaliser(sensor: Sensor, bands: Sequence[Band]) -> Normaliser:
    """Normaliser from the sensor metadata for ``bands`` (all must have statistics)."""
    missing = [b.name for b in bands if not b.has_stats]
    if missing:
        raise BandMismatchError(
            f"sensor {sensor.name!r} has no normalisation statistics for {missing}; drop those "
            "bands or compute statistics from the data (--stats source)"
        )
    return Normaliser(
        mean=np.array([b.mean for b in bands], dtype=np.float64),
        std=np.array([b.std for b in bands], dtype=np.float64),
        transform=sensor.transform,
        stats_source="sensor",
    )


def source_normaliser(
    sensor: Sensor,
    samples: Iterable[np.ndarray],
    *,
    nodata: float | None = None,
    transform: str | None = "sensor",
) -> Normaliser:
    """Normaliser with statistics computed from the imagery itself (samples ``[C, H, W]``).

    ``transform`` defaults to the sensor's (e.g. ``db``); ``None`` skips it.
    """
    tf = sensor.transform if transform == "sensor" else transform
    mean, std = compute_band_stats(samples, nodata=nodata, transform=tf)
    return Normaliser(mean=mean, std=std, transform=tf, stats_source="source")


def looks_like_db(samples: Sequence[np.ndarray]) -> bool:
    """Whether backscatter samples are already in dB: linear power is never negative, dB of
    land and water mostly is. True when over 5 % of the finite values are below zero."""
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in samples])
    vals = vals[np.isfinite(vals) & (vals != 0)]
    return vals.size > 0 and float((vals < 0).mean()) > 0.05


def file_normaliser(path: str | Path, bands: Sequence[Band], sensor: Sensor) -> Normaliser:
    """Normaliser from a JSON file ``{"band name": {"mean": m, "std": s}, ...}``."""
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError(f"statistics file {path} does not exist")
    data = json.loads(path.read_text())
    try:
        mean = [float(data[b.name]["mean"]) for b in bands]
        std = [float(data[b.name]["std"]) for b in bands]
    except (KeyError, TypeError, ValueError) as e:
        raise BandMismatchError(
            f"statistics file {path} must map each band name ({[b.name for b in bands]}) to "
            f'{{"mean": ..., "std": ...}}: {e!r}'
        ) from e
    return Normaliser(
        mean=np.array(mean), std=np.array(std), transform=sensor.transform, stats_source=str(path)
    )


def fits_sensor_stats(
    sample: np.ndarray, normaliser: Normaliser, *, valid: np.ndarray | None = None
) -> tuple[bool, str]:
    """Whether raw values ``[C, H, W]`` look like the sensor statistics expect.

    A source fits when each band's median lies within 3 std of the sensor mean and its spread is
    not under a tenth of the sensor std (an 8-bit rendering of a 16-bit sensor fails both).
    Returns (fits, reason).
    """
    x = np.asarray(sample, dtype=np.float64)
    if normaliser.transform == "db":
        x = 10 * np.log10(np.maximum(x, 1e-10))
    flat = x.reshape(x.shape[0], -1)
    if valid is not None:
        v = np.broadcast_to(valid, x.shape).reshape(x.shape[0], -1)
    else:
        v = np.isfinite(flat)
    problems = []
    for i in range(flat.shape[0]):
        vals = flat[i][v[i]]
        if vals.size == 0:
            continue
        med, spread = float(np.median(vals)), float(np.std(vals))
        m, s = float(normaliser.mean[i]), float(normaliser.std[i])
        if abs(med - m) > 3 * s or spread < 0.1 * s:
            problems.append(
                f"band {i}: median {med:.1f}, std {spread:.1f} vs sensor {m:.0f}+-{s:.0f}"
            )
    if problems:
        return False, "; ".join(problems)
    return True, ""


# -- the normalisation the weights were trained with, and the one decision -----------------------
RECORD_VERSION = 2


@dataclass(frozen=True)
class SeriesStats:
    """How one training set (a series: one sensor, band set and data type) was normalised.

    ``bands`` are the sensor's common names, in the order of ``mean``/``std``.
    """

    name: str
    sensor: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: str | None = None
    dtype: str | None = None
    stats_source: str = "source"

    def to_dict(self) -> dict:
        """JSON-able form (one entry of the weights' ``normalisation`` record)."""
        return {
            "sensor": self.sensor,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "transform": self.transform,
            "dtype": self.dtype,
            "stats_source": self.stats_source,
        }

    def normaliser(self, bands: Sequence[Band]) -> Normaliser:
        """The normaliser of ``bands`` (all among :attr:`bands`) with this series' statistics."""
        pos = [self.bands.index(b.name) for b in bands]
        return Normaliser(
            mean=np.array([self.mean[i] for i in pos], dtype=np.float64),
            std=np.array([self.std[i] for i in pos], dtype=np.float64),
            transform=self.transform,
            stats_source="weights",
        )


@dataclass
class NormalisationRecord:
    """The weights' record of how their training data was normalised (``config.json``'s
    ``normalisation``: ``{"version": 2, "series": {name: SeriesStats}}``).

    Ingest applies it to a source of the same sensor whose bands the record knows and whose
    values fit it (:func:`decide`); weights without one (older clay-search weights, official
    Clay checkpoints, which were trained with Clay's sensor table) fall back to the table.
    """

    series: list[SeriesStats] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: dict | None) -> NormalisationRecord | None:
        """The record in a weights config (its ``normalisation`` section), or None when the
        config has none or only the older layout (``{set: {band: {mean, std}}}``, no sensor)."""
        rec = (cfg or {}).get("normalisation")
        if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
            return None
        out = []
        for name, s in (rec.get("series") or {}).items():
            out.append(
                SeriesStats(
                    name=name,
                    sensor=s["sensor"],
                    bands=tuple(s["bands"]),
                    mean=tuple(float(v) for v in s["mean"]),
                    std=tuple(float(v) for v in s["std"]),
                    transform=s.get("transform"),
                    dtype=s.get("dtype"),
                    stats_source=s.get("stats_source", "source"),
                )
            )
        return cls(out)

    def to_config(self) -> dict:
        """The ``normalisation`` section of a weights config."""
        return {"version": RECORD_VERSION, "series": {s.name: s.to_dict() for s in self.series}}

    def digest(self) -> str:
        """A short SHA-256 of the record (its identity in a store's or a head's policy)."""
        text = json.dumps(self.to_config(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def known_bands(self, sensor: str) -> set[str]:
        """Names of ``sensor``'s bands some series of the record normalised."""
        return {b for s in self.series if s.sensor == sensor for b in s.bands}

    def candidates(
        self, sensor: str, bands: Sequence[Band], dtype: str | None
    ) -> list[SeriesStats]:
        """Series of ``sensor`` that hold every one of ``bands`` (same data type first)."""
        names = {b.name for b in bands}
        hits = [s for s in self.series if s.sensor == sensor and names <= set(s.bands)]
        return sorted(hits, key=lambda s: (s.dtype is not None and s.dtype != dtype, s.name))


#: Version of :func:`decide`'s rules: bumped when it would choose otherwise for the same files,
#: weights and ``stats`` (so vectors made before and after do not mix in one store).
DECISION_VERSION = 1


def normalisation_policy(stats: str, record: NormalisationRecord | None) -> dict:
    """What decides a run's normalisers: the ``stats`` mode (``auto``, ``sensor``, ``source``,
    or ``file`` with the statistics file's SHA-256), the weights' record (its
    :meth:`~NormalisationRecord.digest`, None without one; only ``auto`` reads it) and the
    rules' :data:`DECISION_VERSION`. Runs with equal policies normalise the same files alike;
    a store and a head keep theirs (``store.json`` / ``head.json`` ``normalisation``)."""
    out: dict = {"stats": stats, "decision": DECISION_VERSION}
    if stats not in ("auto", "sensor", "source"):
        path = Path(stats)
        out["stats"] = "file"
        out["stats_file"] = path.name
        out["stats_file_sha256"] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        )
    out["record"] = record.digest() if record is not None and stats == "auto" else None
    return out


def describe_policy(policy: dict | None) -> str:
    """One phrase for a policy (messages): ``--stats auto with the weights' record 1a2b...``."""
    if not policy:
        return "an unrecorded normalisation (made before stores kept it)"
    stats = policy.get("stats")
    what = f"--stats {policy.get('stats_file')}" if stats == "file" else f"--stats {stats}"
    if stats == "auto":
        rec = policy.get("record")
        what += f" with the weights' normalisation record {rec}" if rec else " (no weights' record)"
    return f"{what}, decision rules v{policy.get('decision')}"


def _fit_score(sample: np.ndarray, valid: np.ndarray, norm: Normaliser) -> float:
    """Mean over bands of |median - mean| / std: how far the values sit from ``norm``."""
    x = np.asarray(sample, dtype=np.float64)
    if norm.transform == "db":
        x = 10 * np.log10(np.maximum(x, 1e-10))
    flat = x.reshape(x.shape[0], -1)
    v = np.broadcast_to(valid, x.shape).reshape(x.shape[0], -1)
    meds = [
        float(np.median(flat[i][v[i]])) if v[i].any() else norm.mean[i] for i in range(len(flat))
    ]
    return float(np.mean(np.abs(np.array(meds) - norm.mean) / norm.std))


def decide(
    sensor: Sensor,
    bands: Sequence[Band],
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    stats: str = "auto",
    record: NormalisationRecord | None = None,
    dtype: str | None = None,
    caveat: str | None = None,
    name: str = "the source",
) -> Normaliser:
    """The one normalisation decision, shared by training and ingest.

    ``samples``: raw chips ``[C, H, W]`` of ``bands`` with valid masks ``[H, W]`` (a group's
    sample at ingest, a training set's chips in training). ``stats``:

    - ``auto`` (ingest's default): the statistics the weights were trained with (``record``)
      when a series of this sensor holds every band, and the values fit it; else the sensor
      table's when every band has statistics there and the values fit them (and the product is
      not known to differ: ``caveat``); else statistics computed from the samples;
    - ``sensor``: the table's; ``source`` (training's): computed from the samples; another
      value is a JSON file of band statistics (:func:`file_normaliser`).

    Backscatter of a dB sensor that is already in dB skips the conversion (noted). The
    result's ``stats_source`` says which was used (``weights``, ``sensor``, ``source``, a file)
    and its ``notes`` why.
    """
    if stats not in ("auto", "sensor", "source"):
        return file_normaliser(stats, bands, sensor)
    if stats == "sensor":
        return sensor_normaliser(sensor, bands)

    def masked():  # one chip at a time: training passes thousands
        return (np.where(v[None], a, np.nan) for a, v in samples)

    if not any(v.any() for _, v in samples):
        from clay_search.errors import NoDataError

        raise NoDataError(f"{name}: the sampled chips hold only nodata; nothing to ingest")
    already_db = sensor.transform == "db" and looks_like_db(list(masked()))
    notes = (
        [
            f"{sensor.name} values are already in dB (negative backscatter): the dB "
            "conversion is skipped"
        ]
        if already_db
        else []
    )
    reasons: list[str] = []
    if stats == "auto":
        big = np.concatenate([a for a, _ in samples], axis=2)
        valid = np.concatenate([v for _, v in samples], axis=1)[None]
        fitting = []
        for s in record.candidates(sensor.name, bands, dtype) if record else []:
            norm = s.normaliser(bands)
            if already_db:
                norm.transform = None
            ok, why = fits_sensor_stats(big, norm, valid=valid)
            if ok:
                other_type = s.dtype is not None and s.dtype != dtype
                fitting.append((other_type, _fit_score(big, valid, norm), s, norm))
            else:
                reasons.append(f"the weights' {s.name} statistics do not fit ({why})")
        if fitting:
            _, _, s, norm = min(fitting, key=lambda t: t[:2])
            norm.notes.extend(
                [*notes, f"the statistics these weights were trained with (series {s.name})"]
            )
            return norm
        if record is not None and not reasons:
            reasons.append(
                f"the weights' record has no {sensor.name} series with bands "
                f"{','.join(b.name for b in bands)}"
            )
        if caveat:
            reasons.append(caveat)
        elif all(b.has_stats for b in bands):
            norm = sensor_normaliser(sensor, bands)
            if already_db:
                norm.transform = None  # the sensor statistics are in dB already
            ok, why = fits_sensor_stats(big, norm, valid=valid)
            if ok:
                if reasons:
                    notes.append("; ".join([*reasons, "normalised with the sensor table's"]))
                norm.notes.extend(notes)
                return norm
            reasons.append(f"values do not fit the {sensor.name} statistics ({why})")
        else:
            missing = [b.name for b in bands if not b.has_stats]
            reasons.append(f"the {sensor.name} table has no statistics for {','.join(missing)}")
    try:
        norm = source_normaliser(sensor, masked(), transform=None if already_db else "sensor")
    except BandMismatchError as e:
        from clay_search.errors import NoDataError

        raise NoDataError(f"{name}: {e}") from e
    norm.notes.append(
        "; ".join([*notes, *reasons, "normalised with statistics computed from the source itself"])
    )
    return norm
