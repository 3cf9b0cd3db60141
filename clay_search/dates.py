"""The one date parser: ISO 8601 dates and times, years and year-months, to UTC periods.

Every place that reads a date from a user or a file (ingest's ``--datetime`` and ``--dates``,
filter bounds, imported GeoParquet columns, GeoTIFF tags, file names) goes through
:func:`parse_period` or :func:`to_utc`, so they accept the same texts and raise the same error,
:class:`~clay_search.errors.InvalidDateError`.

A text names a period at some precision: ``1985`` (a year), ``1985-07`` (a month),
``1985-07-14`` (a day) or a time (``1985-07-14T10:30Z``, an instant). Naive times are UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from clay_search.errors import InvalidDateError

__all__ = ["PRECISIONS", "DatePeriod", "parse_period", "to_utc"]

#: Precisions from coarsest to finest.
PRECISIONS = ("year", "month", "day", "time")

_YEAR = re.compile(r"^(\d{4})$")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_COMPACT_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_EXIF = re.compile(r"^(\d{4}):(\d{2}):(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2}))?$")  # TIFF tags
_EXAMPLES = "e.g. 2020, 2020-05, 2020-05-18 or 2020-05-18T10:30:00Z"


@dataclass(frozen=True)
class DatePeriod:
    """A period ``[start, end]`` (inclusive, UTC) and the precision it was given at.

    An instant (``precision == "time"``) has ``start == end``.
    """

    start: datetime
    end: datetime
    precision: str

    @property
    def midpoint(self) -> datetime:
        """The middle of the period: what a year or a month is stored as (a day: its start)."""
        if self.precision in ("day", "time"):
            return self.start
        return self.start + (self.end - self.start + timedelta(microseconds=1)) / 2


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _day(d: date) -> DatePeriod:
    start = datetime.combine(d, time.min, tzinfo=UTC)
    return DatePeriod(start, start + timedelta(days=1) - timedelta(microseconds=1), "day")


def _month(year: int, month: int) -> DatePeriod:
    start = datetime(year, month, 1, tzinfo=UTC)
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return DatePeriod(start, nxt - timedelta(microseconds=1), "month")


def _year(year: int) -> DatePeriod:
    start = datetime(year, 1, 1, tzinfo=UTC)
    return DatePeriod(
        start, datetime(year + 1, 1, 1, tzinfo=UTC) - timedelta(microseconds=1), "year"
    )


def _bad(value: Any, what: str) -> InvalidDateError:
    return InvalidDateError(
        f"{what} {value!r} is not an ISO 8601 date or time; use {_EXAMPLES} (UTC unless a "
        "zone is given)"
    )


def parse_period(value: str | date | datetime | Any, *, what: str = "date") -> DatePeriod:
    """The period ``value`` names: a ``datetime`` (an instant), a ``date`` (a day), or a text:
    ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY:MM:DD[ HH:MM:SS]`` (TIFF tags)
    or an ISO 8601 date-time. pandas/numpy timestamps are taken as datetimes.

    ``what`` names the value in the error message (``--datetime``, ``start``...).
    Raises :class:`~clay_search.errors.InvalidDateError`.
    """
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        dt = _utc(value)
        return DatePeriod(dt, dt, "time")
    if isinstance(value, date):
        return _day(value)
    if not isinstance(value, str):
        raise InvalidDateError(
            f"{what} must be a date, a datetime or an ISO 8601 text ({_EXAMPLES}); got {value!r}"
        )
    text = value.strip()
    try:
        if m := _YEAR.match(text):
            return _year(int(m.group(1)))
        if m := _YEAR_MONTH.match(text):
            return _month(int(m.group(1)), int(m.group(2)))
        if m := _COMPACT_DAY.match(text):
            return _day(date(int(m.group(1)), int(m.group(2)), int(m.group(3))))
        if m := _EXIF.match(text):
            y, mo, d, hh, mm, ss = m.groups()
            if hh is None:
                return _day(date(int(y), int(mo), int(d)))
            dt = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), tzinfo=UTC)
            return DatePeriod(dt, dt, "time")
        if len(text) == 10 and text[4] == "-" and text[7] == "-":
            return _day(date.fromisoformat(text))
        dt = _utc(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        raise _bad(value, what) from None
    return DatePeriod(dt, dt, "time")


def to_utc(
    value: str | date | datetime | Any, *, end: bool = False, what: str = "date"
) -> datetime:
    """``value`` as one aware UTC datetime: the start of the period it names, or its last
    microsecond with ``end=True`` (``2020`` as an end bound is the whole of 2020)."""
    p = parse_period(value, what=what)
    return p.end if end else p.start
