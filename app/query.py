"""What a date filter removed from the chips the other filters keep (so nothing vanishes
silently). The filters themselves are ``clay_search.filters.Filters``, passed to the Store as
``filters=``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clay_search.filters import Filters

#: Limits wide enough to keep every dated chip (used to count undated chips).
_EVER = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))


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

    Counts with ``store.count`` (the same filter code as every query): the other filters alone,
    the other filters with a range that keeps every dated chip, and ``f`` itself.
    """
    if not f.has_time:
        return None
    base = dataclasses.replace(f, start=None, end=None, undated=False)

    def matched(flt: Filters) -> int:
        return int(store.count(filters=flt)["matched"])

    before = matched(base)
    dated = matched(dataclasses.replace(base, start=_EVER[0], end=_EVER[1]))
    after = matched(f)
    undated_kept = before - dated if f.undated else 0
    return DateEffect(
        before=before,
        after=after,
        undated=before - dated - undated_kept,
        outside=dated - (after - undated_kept),
    )
