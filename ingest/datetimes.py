"""Acquisition times from product-id file names (Landsat, Sentinel-1/2, NAIP) and user input."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # LC08_L1TP_224077_20200518_20200518_01_RT: the first date is the acquisition date
    ("landsat", re.compile(r"L[COTEM]0\d_L\w{3}_\d{6}_(\d{8})_")),
    # S2A_MSIL2A_20200518T101031 (BigEarthNet shortens some times: T93020)
    ("sentinel-2", re.compile(r"S2[A-D]_MSIL\w{2}_(\d{8})T(\d{4,6})")),
    # S1A_IW_GRDH_1SDV_20170613T165043
    ("sentinel-1", re.compile(r"S1[A-D]_\w{2}_\w{4}_\w{4}_(\d{8})T(\d{6})")),
    # NAIP: m_4709963_se_14_1_20090818 (quarter quad, zone, resolution, date)
    ("naip", re.compile(r"m_\d{7}_[a-z]{2}_\d{2}_\d{1,3}_(\d{8})", re.IGNORECASE)),
]


def _to_datetime(day: str, clock: str | None) -> datetime | None:
    try:
        dt = datetime.strptime(day, "%Y%m%d")
    except ValueError:
        return None
    if clock and len(clock) == 6:
        try:
            t = datetime.strptime(clock, "%H%M%S")
            dt = dt.replace(hour=t.hour, minute=t.minute, second=t.second)
        except ValueError:
            pass
    return dt.replace(tzinfo=UTC)


def datetime_from_name(name: str) -> datetime | None:
    """Acquisition time (UTC) read from a product-id style name, or None."""
    for _, pat in _PATTERNS:
        m = pat.search(name)
        if m:
            groups = m.groups()
            dt = _to_datetime(groups[0], groups[1] if len(groups) > 1 else None)
            if dt is not None:
                return dt
    return None


def datetime_from_names(names: Iterable[str]) -> datetime | None:
    """The first acquisition time found in ``names`` (file name first, then parent folders)."""
    for n in names:
        dt = datetime_from_name(n)
        if dt is not None:
            return dt
    return None


def parse_datetime(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 date or date-time as an aware UTC datetime (naive input is taken as UTC)."""
    if value is None or isinstance(value, datetime):
        dt = value
    else:
        text = value.strip().replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            from clay_search.errors import IngestOptionError

            raise IngestOptionError(
                f"--datetime {value!r} is not an ISO 8601 date or time; use e.g. 2020-05-18 "
                "or 2020-05-18T10:30:00Z"
            ) from None
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
