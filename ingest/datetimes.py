"""Acquisition times of sources: options, per-file date lists, STAC, file names, GeoTIFF tags.

Every text is read by the one date parser, :mod:`clay_search.dates`. Evidence, first found wins
(:func:`choose_datetime`): ``--datetime``; ``--dates FILE``; the STAC item's datetime; a product
id in the file or folder name (Landsat, Sentinel-1/2, NAIP); a date in the file name
(``2017-10-15``, ``2017_10_15``, ``20171015``, ``2017-10``) or a name that is only a year
(``1985.tif``, a folder ``1985/``); a GeoTIFF tag (``ACQUISITIONDATE``, ``DATE_ACQUIRED``,
``DATE``, ``TIFFTAG_DATETIME``). A year or a month is stored as the period's midpoint and its
precision is recorded (run manifest, per source).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clay_search.dates import DatePeriod, parse_period
from clay_search.errors import IngestOptionError, InvalidDateError

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

#: Dates in free-form names, most precise first. Digits must not touch other digits, so tile
#: numbers (``4709963``) and chip numbers (``Forest_2001``: no separator pattern) do not match.
_NAME_DATES: list[re.Pattern[str]] = [
    re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.]([01]\d)[-_.]([0-3]\d)(?!\d)"),  # 2017-10-15
    re.compile(r"(?<!\d)((?:19|20)\d{2})([01]\d)([0-3]\d)(?!\d)"),  # 20171015
    re.compile(r"(?<![\d-])((?:19|20)\d{2})-([01]\d)(?![\d-])"),  # 2017-10
]
_ONLY_YEAR = re.compile(r"^((?:19|20)\d{2})$")  # 1985.tif, a folder 1985/

#: GeoTIFF metadata tags that hold a date, most trusted first (TIFFTAG_DATETIME is often the
#: file's creation time, so it comes last).
DATE_TAGS = (
    "ACQUISITIONDATE",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "ACQUISITION_DATETIME",
    "DATE",
    "TIFFTAG_DATETIME",
)


@dataclass(frozen=True)
class DateChoice:
    """The acquisition time used for a source, its precision and where it came from."""

    value: datetime | None
    precision: str | None  # year | month | day | time, None without a date
    origin: str  # "--datetime", "--dates FILE", "STAC item", "file name", ..., "none"

    @classmethod
    def of(cls, period: DatePeriod, origin: str) -> DateChoice:
        """The midpoint of ``period``, with its precision."""
        return cls(period.midpoint, period.precision, origin)

    def describe(self) -> str:
        """One line for the screen: ``2017-10-15 (day, from file name)``."""
        if self.value is None:
            return "no date (STAC, file name, GeoTIFF tag, --dates or --datetime)"
        text = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}.get(self.precision or "")
        shown = self.value.strftime(text) if text else self.value.isoformat()
        return f"{shown} ({self.precision}, from {self.origin})"


NO_DATE = DateChoice(None, None, "none")


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


def period_from_name(name: str) -> DatePeriod | None:
    """A date written in a free-form name (``..._2017-10-15``, ``20171015``, ``2017-10``), or
    a name that is only a year (``1985``); None when there is none or it is no real date."""
    for pat in _NAME_DATES:
        for m in pat.finditer(name):
            try:
                return parse_period("-".join(m.groups()))
            except InvalidDateError:
                continue  # 20171345 is no date: look further
    year = _ONLY_YEAR.match(name)
    return parse_period(year.group(1)) if year else None


def date_from_names(names: list[str]) -> DateChoice | None:
    """A product-id date, else a free-form date, from the file name then its folders."""
    for i, n in enumerate(names):
        dt = datetime_from_name(n)
        if dt is not None:
            precision = "time" if dt.hour or dt.minute or dt.second else "day"
            where = "file name (product id)" if i == 0 else f"folder name {n!r} (product id)"
            return DateChoice(dt, precision, where)
    for i, n in enumerate(names):
        p = period_from_name(n)
        if p is not None:
            return DateChoice.of(p, "file name" if i == 0 else f"folder name {n!r}")
    return None


def date_from_tags(tags: Mapping[str, str]) -> DateChoice | None:
    """The first readable date among the GeoTIFF tags :data:`DATE_TAGS` (case-insensitive)."""
    upper = {str(k).upper(): v for k, v in tags.items()}
    for key in DATE_TAGS:
        text = upper.get(key)
        if not text:
            continue
        try:
            return DateChoice.of(parse_period(str(text)), f"GeoTIFF tag {key}")
        except InvalidDateError:
            continue
    return None


# -- --dates FILE ---------------------------------------------------------------------------------
_FILE_KEYS = ("file", "path", "source", "name", "filename")
_DATE_KEYS = ("datetime", "date", "time", "acquired")


class DatesFile:
    """Per-file acquisition dates from a CSV (columns ``file``/``path``/``name`` and
    ``date``/``datetime``) or JSON (``{"name": "2017-10-15", ...}`` or a list of
    ``{"file": ..., "date": ...}``). Keys match a source by path, file name or stem."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IngestOptionError(
                f"--dates {self.path} does not exist; give a CSV or JSON file of per-file dates"
            )
        self.entries: dict[str, DatePeriod] = {}
        for key, text in self._rows():
            self.entries[key] = parse_period(str(text), what=f"--dates {self.path.name}: {key}")
        self.used: set[str] = set()

    def _rows(self) -> list[tuple[str, str]]:
        text = self.path.read_text()
        if self.path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise IngestOptionError(f"--dates {self.path}: not valid JSON ({e})") from None
            if isinstance(data, dict):
                return [(str(k), str(v)) for k, v in data.items()]
            if isinstance(data, list) and all(isinstance(r, dict) for r in data):
                return [self._pick(r, i) for i, r in enumerate(data)]
            raise IngestOptionError(
                f"--dates {self.path}: expected an object of file -> date "
                'or a list of {"file": ..., "date": ...}'
            )
        rows = list(csv.DictReader(text.splitlines()))
        return [self._pick(r, i + 2) for i, r in enumerate(rows)]

    def _pick(self, row: dict, where: int) -> tuple[str, str]:
        low = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        f = next((low[k] for k in _FILE_KEYS if low.get(k)), None)
        d = next((low[k] for k in _DATE_KEYS if low.get(k)), None)
        if f is None or d is None:
            raise IngestOptionError(
                f"--dates {self.path}: entry {where} needs a file ({'/'.join(_FILE_KEYS)}) and "
                f"a date ({'/'.join(_DATE_KEYS)}); got {row}"
            )
        return str(f).strip(), str(d).strip()

    def lookup(self, paths: list[str]) -> DateChoice | None:
        """The date of a source with these files (path as given, absolute, name or stem)."""
        for p in paths:
            pp = Path(p)
            for key in (p, str(pp.resolve()) if "://" not in p else p, pp.name, pp.stem):
                if key in self.entries:
                    self.used.add(key)
                    return DateChoice.of(self.entries[key], f"--dates {self.path.name}")
        return None

    def unused(self) -> list[str]:
        """Entries that matched no source (a typo or a file not ingested)."""
        return [k for k in self.entries if k not in self.used]


def choose_datetime(
    source,
    tags: Mapping[str, str],
    *,
    forced: DatePeriod | None = None,
    dates: DatesFile | None = None,
) -> DateChoice:
    """The date of ``source`` from the first evidence that has one (see the module doc)."""
    if forced is not None:
        return DateChoice.of(forced, "--datetime")
    if dates is not None and (hit := dates.lookup(source.paths)) is not None:
        return hit
    if source.datetime is not None:
        return DateChoice(source.datetime.astimezone(UTC), "time", "STAC item")
    return date_from_names(source.name_parts) or date_from_tags(tags) or NO_DATE


def parse_datetime(value: str | datetime | None) -> datetime | None:
    """``--datetime`` as an aware UTC datetime (naive input is UTC; a year or a month: the
    period's midpoint). See :func:`parse_datetime_option` for the precision too."""
    p = parse_datetime_option(value)
    return None if p is None else p.midpoint


def parse_datetime_option(value: str | datetime | DatePeriod | None) -> DatePeriod | None:
    """``--datetime`` as a :class:`~clay_search.dates.DatePeriod` (None when not given)."""
    if value is None or isinstance(value, DatePeriod):
        return value
    return parse_period(value, what="--datetime")
