"""Time and location encodings follow Clay's formulas."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import torch

from clay_search.model import encode_latlon, encode_time


def test_time_encoding_week_and_hour():
    dt = datetime(2020, 5, 18, 13, 30, tzinfo=UTC)  # ISO week 21
    t = encode_time([dt, None])
    week, hour = 21 * 2 * math.pi / 52, 13 * 2 * math.pi / 24
    expected = [math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)]
    torch.testing.assert_close(t[0], torch.tensor(expected))
    assert torch.equal(t[1], torch.zeros(4))


def test_latlon_encoding_order_is_lat_then_lon():
    ll = encode_latlon([(-54.6, -25.4), None])  # (lon, lat): Foz do Iguacu
    lat, lon = math.radians(-25.4), math.radians(-54.6)
    expected = [math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)]
    torch.testing.assert_close(ll[0], torch.tensor(expected))
    assert torch.equal(ll[1], torch.zeros(4))
