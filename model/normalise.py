"""Per-band normalisation of raw sensor values, including sensor-specific steps (Sentinel-1 dB).

The model only ever sees normalised pixels; all value handling lives here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    samples: Sequence[np.ndarray],
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
