"""The app's side of a query: the one filter object (``clay_search.filters.Filters``) as Store
keywords, a short description of it, and what a date filter removed (so nothing vanishes
silently)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clay_search.filters import Filters

#: Limits wide enough to keep every dated chip (used to count undated chips).
_EVER = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))


def filter_kwargs(f: Filters) -> dict[str, Any]:
    """The parts of ``f`` that are set, as keywords of ``Store.search`` / ``refine`` / ``chips``.

    ``make_filters(**filter_kwargs(f)) == f``: the Store validates them again, so the app
    never holds a second set of filter rules.
    """
    out = {}
    for field in dataclasses.fields(f):
        value = getattr(f, field.name)
        if value is not None and value != field.default:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def _is_box(geom: Any) -> bool:
    import shapely

    return (
        geom.geom_type == "Polygon"
        and len(geom.exterior.coords) == 5
        and abs(geom.area - shapely.box(*geom.bounds).area) <= 1e-12 * max(1.0, geom.area)
    )


def describe(f: Filters) -> str:
    """Short human summary, e.g. ``2019-01-01..2019-12-31, sensor=sentinel-2-l2a, box 1,2,3,4``."""
    parts = []
    if f.start is not None or f.end is not None:
        lo = f.start.date().isoformat() if f.start is not None else ""
        hi = f.end.date().isoformat() if f.end is not None else ""
        parts.append(f"{lo}..{hi}")
        if getattr(f, "undated", False):
            parts.append("undated kept")
    if f.sensor:
        parts.append("sensor=" + "|".join(f.sensor))
    if f.label:
        parts.append("label=" + "|".join(f.label))
    if f.geometry is not None:
        b = ",".join(f"{v:.4g}" for v in f.geometry.bounds)
        parts.append(f"box {b}" if _is_box(f.geometry) else f"area in {b}")
    return ", ".join(parts) or "no filters"


@dataclass(frozen=True)
class DateEffect:
    """What the date range removed from the chips the other filters keep."""

    before: int  # chips passing every filter but the dates
    after: int  # chips passing every filter
    undated: int  # removed because they have no acquisition date
    outside: int  # removed because their date is outside the range

    @property
    def removed(self) -> int:
        """Chips the date range removed."""
        return self.before - self.after

    def message(self) -> str:
        """One sentence for the page, e.g. "The date filter removed 30 of 30 chips: ..."."""
        why = []
        if self.undated:
            why.append(f"{self.undated:,} have no acquisition date")
        if self.outside:
            why.append(f"{self.outside:,} are outside the date range")
        text = f"The date filter removed {self.removed:,} of {self.before:,} chips"
        return text + (": " + " and ".join(why) + "." if why else ".")


def date_effect(store: Any, f: Filters) -> DateEffect | None:
    """How many chips the date part of ``f`` removes, and why; ``None`` without a date range.

    Counts with ``store.chips`` (the same filter code as every query): the other filters alone,
    the other filters with a range that keeps every dated chip, and ``f`` itself.
    """
    if f.start is None and f.end is None:
        return None
    base = dataclasses.replace(f, start=None, end=None)
    if hasattr(base, "undated"):
        base = dataclasses.replace(base, undated=False)
    before = len(store.chips(**filter_kwargs(base)))
    ever = dataclasses.replace(base, start=_EVER[0], end=_EVER[1])
    dated = len(store.chips(**filter_kwargs(ever)))
    after = len(store.chips(**filter_kwargs(f)))
    undated_kept = before - dated if getattr(f, "undated", False) else 0
    return DateEffect(
        before=before,
        after=after,
        undated=before - dated - undated_kept,
        outside=dated - (after - undated_kept),
    )
