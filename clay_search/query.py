"""A lancedb-style fluent query over a :class:`~clay_search.store.store.Store`.

``store.query().where(bbox=..., start=...).positives(ids).negatives(more).limit(50)``
then ``.to_results()``, ``.to_arrow()``, ``.to_pandas()`` or ``.to_geopandas()``. Each step
returns a new :class:`Query`; nothing runs until a ``to_*`` call. It is a builder only: the
filters are one :class:`~clay_search.filters.Filters`, and the answer comes from
:meth:`Store.search` (with positives), :meth:`Store.refine` (after :meth:`Query.refine`) or
:meth:`Store.chips` (neither).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clay_search.errors import QueryError
from clay_search.filters import FilterKeywords, Filters

if TYPE_CHECKING:  # pragma: no cover
    from typing import Unpack

    import pyarrow as pa

    from clay_search.results import Results
    from clay_search.store.store import Store


@dataclass(frozen=True)
class Query:
    """An immutable query description bound to a store (see the module docstring)."""

    store: Store
    filters: Filters = field(default_factory=Filters)
    pos: tuple[Any, ...] = ()
    neg: tuple[Any, ...] = ()
    k: int | None = None
    mode: str = "search"  # or "refine"

    def where(self, filters: Filters | None = None, **where: Unpack[FilterKeywords]) -> Query:
        """Add filters (a :class:`Filters` and/or its keywords; later calls override)."""
        base = self.filters if filters is None else _merge(self.filters, filters)
        return dataclasses.replace(self, filters=Filters.of(base, **where))

    def positives(self, *examples: Any) -> Query:
        """Add positive examples (chip ids, id prefixes or vectors; or one list of them)."""
        return dataclasses.replace(self, pos=self.pos + _flat(examples))

    def negatives(self, *examples: Any) -> Query:
        """Add negative examples."""
        return dataclasses.replace(self, neg=self.neg + _flat(examples))

    def limit(self, k: int) -> Query:
        """At most ``k`` results."""
        return dataclasses.replace(self, k=k)

    def refine(self) -> Query:
        """Rank with :meth:`Store.refine` (a classifier on the examples) instead of search."""
        return dataclasses.replace(self, mode="refine")

    def to_results(self) -> Results:
        """Run the query."""
        st = self.store
        if self.mode == "refine":
            return st.refine(list(self.pos), list(self.neg), k=self.k, filters=self.filters)
        if self.pos:
            k = 50 if self.k is None else self.k
            return st.search(list(self.pos), list(self.neg), k, filters=self.filters)
        if self.neg:
            raise QueryError("negatives without positives: add .positives(...) first")
        return st.chips(self.filters, limit=self.k)

    def to_arrow(self) -> pa.Table:
        """The results as Arrow."""
        return self.to_results().to_arrow()

    def to_pandas(self):
        """The results as pandas."""
        return self.to_results().to_pandas()

    def to_geopandas(self):
        """The results as a GeoDataFrame (EPSG:4326)."""
        return self.to_results().to_geopandas()


def _flat(examples: tuple[Any, ...]) -> tuple[Any, ...]:
    if (
        len(examples) == 1
        and isinstance(examples[0], Sequence | set)
        and not isinstance(examples[0], str)
    ):
        first = examples[0]
        if not (len(first) and all(isinstance(v, int | float) for v in first)):  # not a vector
            return tuple(first)
    return tuple(examples)


def _merge(base: Filters, extra: Filters) -> Filters:
    """``base`` with every part that ``extra`` sets."""
    if not isinstance(extra, Filters):
        raise QueryError(f"where() takes a Filters or keywords, got {type(extra).__name__}")
    set_parts = {
        f.name: getattr(extra, f.name)
        for f in dataclasses.fields(extra)
        if getattr(extra, f.name) not in (None, False)
    }
    return dataclasses.replace(base, **set_parts)
