"""Time and location encodings exactly as Clay computes them.

time   ``[B, 4]`` = (sin week, cos week, sin hour, cos hour), week = ISO week * 2 pi / 52
latlon ``[B, 4]`` = (sin lat, cos lat, sin lon, cos lon), in radians
Unknown values encode as zeros (Clay zeroes both for a share of training chips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import torch


def encode_time_one(dt: datetime | None) -> list[float]:
    """The 4 time values for one datetime (zeros when ``None``)."""
    if dt is None:
        return [0.0, 0.0, 0.0, 0.0]
    week = dt.isocalendar().week * 2 * math.pi / 52
    hour = dt.hour * 2 * math.pi / 24
    return [math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)]


def encode_latlon_one(lon: float | None, lat: float | None) -> list[float]:
    """The 4 location values for one lon/lat in degrees (zeros when unknown)."""
    if lon is None or lat is None or not (math.isfinite(lon) and math.isfinite(lat)):
        return [0.0, 0.0, 0.0, 0.0]
    la, lo = lat * math.pi / 180, lon * math.pi / 180
    return [math.sin(la), math.cos(la), math.sin(lo), math.cos(lo)]


def encode_time(datetimes: Sequence[datetime | None]) -> torch.Tensor:
    """``[B, 4]`` time encoding for a batch of datetimes (``None`` -> zeros)."""
    return torch.tensor([encode_time_one(d) for d in datetimes], dtype=torch.float32).reshape(-1, 4)


def encode_latlon(lonlats: Sequence[tuple[float, float] | None]) -> torch.Tensor:
    """``[B, 4]`` location encoding for a batch of (lon, lat) centres (``None`` -> zeros)."""
    rows = [encode_latlon_one(*(ll if ll is not None else (None, None))) for ll in lonlats]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
