"""Change over time: a place's timeline, change scores between two periods, change search.

Places come from :mod:`clay_search.places`: chips with one ``place_id`` are one grid cell on
several dates. Between two periods (``before``, ``after``) each place that has chips in both is
one *pair*:

- several chips of a place in one period are combined as the mean of their L2-normalised
  embeddings (renormalised), which also damps season and cloud noise; the chip shown for the
  period (``chip_id_before``/``chip_id_after``, their dates and thumbnails) is the one closest
  to that mean (the period's most typical chip, not an outlier such as a cloudy date);
- pairing: ``"grid"`` joins places by ``place_id``; ``"overlap"`` pairs each before-place with
  the after-place whose footprint overlaps it most (IoU >= ``min_iou``, DuckDB spatial), for
  chips of different grids; ``"auto"`` (default) pairs by grid, then adds the chips of other
  grids in either period to the grid-paired place they overlap most (IoU >= ``min_iou``), then
  pairs the places still left by overlap.

Change measures (``method``; higher = more change):

- ``"cosine"``: cosine distance ``1 - <b, a>`` of the two periods' mean embeddings;
- ``"patch"``: the maximum over the patch grid of the cosine distance between the periods' mean
  patch tokens (finds a small change in a big chip); stored with ``--patch-embeddings``, else
  recomputed from the chips' source windows (:mod:`clay_search.patches`);
- ``"normalised"``: the cosine distance divided by the place's own variability over its dates
  before the after period (mean cosine distance of those chips to their mean), shrunk towards the
  median variability of all places (weight of 2 dates) so places with one earlier date get the
  median. A place that flickers (fields, water, clouds) then needs a larger jump to rank high.

:func:`change_search` ("more changes like this") uses the change vector of each pair (after
minus before, of the mean embeddings, normalised) as its vector and ranks pairs by the cosine of
their change vector with a query formed from positive and negative pairs, like chip search.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from clay_search.errors import QueryError, UnknownChipError
from clay_search.filters import Filters
from clay_search.index.vectors import l2_normalise
from clay_search.places import DEFAULT_MIN_IOU, overlap_pairs, place_ids
from clay_search.results import Results
from clay_search.search import NEGATIVE_WEIGHT, query_vector

METHODS = ("cosine", "patch", "normalised")
PAIRINGS = ("auto", "grid", "overlap")
#: Weight (in dates) of the median variability in the ``normalised`` measure.
SHRINK_DATES = 2.0

_PLACE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

Period = tuple[Any, Any] | Sequence[Any] | str


# -- periods and places ------------------------------------------------------------------------
def parse_period(value: Period, name: str) -> tuple[datetime, datetime]:
    """``(start, end)`` (inclusive; ISO text, date or datetime) or ``"START/END"`` as UTC times."""
    pair: Any = value
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) != 2:
            raise QueryError(
                f"{name} period {value!r} must be START/END, e.g. 2015-01-01/2016-12-31"
            )
        pair = parts
    try:
        start, end = pair
    except (TypeError, ValueError) as e:
        raise QueryError(f"{name} period must be (start, end); got {pair!r}") from e
    if start in (None, "") or end in (None, ""):
        raise QueryError(f"{name} period needs both a start and an end; got {pair!r}")
    try:
        f = Filters.of(start=start, end=end)
    except QueryError as e:
        raise QueryError(f"{name} period: {e}") from e
    assert f.start is not None and f.end is not None  # both given: Filters made them datetimes
    return f.start, f.end


def check_periods(
    before: Period, after: Period
) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """Parse both periods; :class:`QueryError` when they overlap or are reversed."""
    b, a = parse_period(before, "before"), parse_period(after, "after")
    if a[1] < b[0]:
        raise QueryError(
            f"the after period ({a[0]:%Y-%m-%d} to {a[1]:%Y-%m-%d}) lies before the before "
            f"period ({b[0]:%Y-%m-%d} to {b[1]:%Y-%m-%d}); swap them"
        )
    if a[0] <= b[1]:
        raise QueryError(
            f"the periods overlap: before ends {b[1]:%Y-%m-%d}, after starts {a[0]:%Y-%m-%d}; "
            "give periods that do not share a date"
        )
    return b, a


def store_place_keys(store) -> np.ndarray:
    """Place key of every row of ``store`` (its ``place_id``, else ``chip:<chip_id>``)."""
    hit = _PLACE_CACHE.get(store)
    if hit is not None and hit[0] == store.version:
        return hit[1]
    pids = place_ids(store.attrs)
    ids = store.attrs.column("chip_id").to_pylist()
    keys = np.array(
        [p if p is not None else f"chip:{c}" for p, c in zip(pids, ids, strict=True)], dtype=object
    )
    _PLACE_CACHE[store] = (store.version, keys)
    return keys


def _groups(keys: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Rows grouped by place key (each group's rows ascending)."""
    if not len(rows):
        return {}
    k = keys[rows]
    order = np.argsort(k, kind="stable")
    ks, rs = k[order], rows[order]
    cut = np.flatnonzero(ks[1:] != ks[:-1]) + 1
    return {str(g[0]): r for g, r in zip(np.split(ks, cut), np.split(rs, cut), strict=True)}


def _mean_rep(vectors: np.ndarray, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the renormalised mean of its (normalised) vectors and the row closest to it."""
    if not groups:
        return np.zeros((0, vectors.shape[1]), np.float32), np.zeros(0, np.int64)
    lens = np.array([len(g) for g in groups])
    flat = np.concatenate(groups).astype(np.int64)
    v = vectors[flat]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    means = l2_normalise(np.add.reduceat(v, starts, axis=0)).astype(np.float32)
    sim = np.sum(v * np.repeat(means, lens, axis=0), axis=1)
    seg = np.repeat(np.arange(len(groups)), lens)
    order = np.lexsort((-sim, seg))  # by group, best first within each group
    return means, flat[order[starts]]


# -- pairs ------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Places with chips in both periods: their rows, mean embeddings and representative chips."""

    keys: list[str]  # place key of the before side
    rows_before: list[np.ndarray]
    rows_after: list[np.ndarray]
    mean_before: np.ndarray  # [n, D]
    mean_after: np.ndarray
    rep_before: np.ndarray  # [n] row numbers
    rep_after: np.ndarray
    how: list[str]  # "grid" | "overlap"
    iou: np.ndarray  # 1.0 for grid pairs
    before: tuple[datetime, datetime]
    after: tuple[datetime, datetime]
    filters: Filters
    reason: str | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def diffs(self) -> np.ndarray:
        """``[n, D]`` normalised change vectors (after minus before)."""
        d = self.mean_after - self.mean_before
        norm = np.linalg.norm(d, axis=1, keepdims=True)
        return np.where(norm > 0, d / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def pair_places(
    store,
    before: Period,
    after: Period,
    *,
    filters: Filters | None = None,
    pairing: str = "auto",
    min_iou: float = DEFAULT_MIN_IOU,
    **where: Any,
) -> Pairs:
    """The places of ``store`` with chips in both periods (within ``filters`` / ``where``:
    the :class:`~clay_search.filters.Filters` keywords except the time range)."""
    if pairing not in PAIRINGS:
        raise QueryError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if not 0.0 < float(min_iou) <= 1.0:
        raise QueryError(f"min_iou must be in (0, 1], got {min_iou!r}")
    f = Filters.of(filters, **where)
    for bad in ("start", "end"):
        if getattr(f, bad) is not None:
            raise QueryError(f"give the time range as before=/after= periods, not {bad}=")
    b, a = check_periods(before, after)
    f = dataclasses.replace(f, undated=False)  # a chip without a date is in no period
    eng = store.engine
    dates = np.unique(eng.time_us[eng.has_time])
    if len(dates) < 2:
        raise QueryError(
            f"store {store.path} holds chips of {len(dates)} date(s) only; change needs the same "
            "places on at least two dates (ingest another date into the store)"
        )
    fb = dataclasses.replace(f, start=b[0], end=b[1])
    fa = dataclasses.replace(f, start=a[0], end=a[1])
    rb, ra = eng.rows(fb), eng.rows(fa)
    keys = store_place_keys(store)
    gb, ga = _groups(keys, rb), _groups(keys, ra)
    pb, pa_, how, iou = [], [], [], []
    names: list[str] = []
    if pairing in ("auto", "grid"):
        for key in sorted(set(gb) & set(ga)):
            names.append(key)
            pb.append(gb[key])
            pa_.append(ga[key])
            how.append("grid")
            iou.append(1.0)
    if pairing in ("auto", "overlap"):
        geom = eng.geometry
        lb = sorted(set(gb) - set(names))
        la = sorted(set(ga) - set(names))
        if names and pairing == "auto":
            # chips of another grid in a period join the paired place they overlap most
            # (e.g. one date of a series on a shifted grid): they are the same place
            wp = [geom[int(g[0])].as_py() for g in pb]
            for left, groups, side in ((la, ga, pa_), (lb, gb, pb)):
                w = [geom[int(groups[key][0])].as_py() for key in left]
                i, j, _ = overlap_pairs(w, wp, min_iou=min_iou)
                for ii, jj in zip(i, j, strict=True):
                    side[int(jj)] = np.concatenate([side[int(jj)], groups[left[int(ii)]]])
                joined = {left[int(ii)] for ii in i}
                left[:] = [key for key in left if key not in joined]
        wb = [geom[int(gb[key][0])].as_py() for key in lb]
        wa = [geom[int(ga[key][0])].as_py() for key in la]
        i, j, v = overlap_pairs(wb, wa, min_iou=min_iou)
        taken: set[int] = set()
        for ii, jj, vv in sorted(zip(i, j, v, strict=True), key=lambda t: (-t[2], t[0])):
            if int(jj) in taken:  # one after-place pairs with one before-place only
                continue
            taken.add(int(jj))
            names.append(lb[int(ii)])
            pb.append(gb[lb[int(ii)]])
            pa_.append(ga[la[int(jj)]])
            how.append("overlap")
            iou.append(float(vv))
    reason = None
    if not rb.size:
        reason = f"no chip in the before period {b[0]:%Y-%m-%d}/{b[1]:%Y-%m-%d} within the filters"
    elif not ra.size:
        reason = f"no chip in the after period {a[0]:%Y-%m-%d}/{a[1]:%Y-%m-%d} within the filters"
    elif not names:
        reason = (
            f"no place has chips in both periods ({len(gb)} places before, {len(ga)} "
            f"after, none on the same grid cell or overlapping with IoU >= {min_iou})"
        )
    vec = store.vectors
    mb, repb = _mean_rep(vec, pb)
    ma, repa = _mean_rep(vec, pa_)
    return Pairs(
        names, pb, pa_, mb, ma, repb, repa, how, np.asarray(iou, np.float64), b, a, f, reason
    )


# -- measures ---------------------------------------------------------------------------------
def cosine_change(pairs: Pairs) -> np.ndarray:
    """``1 - <before, after>`` of the periods' mean embeddings."""
    return (1.0 - np.sum(pairs.mean_before * pairs.mean_after, axis=1)).astype(np.float32)


#: chips whose patch tokens are fetched (or recomputed) at once by ``patch_change``
PATCH_BATCH = 256


def _patch_means(store, groups: list[np.ndarray], token_dim: int) -> list[np.ndarray]:
    from clay_search.patches import patch_tokens

    rows = np.unique(np.concatenate(groups)) if groups else np.zeros(0, np.int64)
    ids = store.attrs.column("chip_id").take(pa.array(rows)).to_pylist()
    parts = []
    for s in range(0, len(ids), PATCH_BATCH):  # stored tokens, or recomputed from the sources
        t = patch_tokens(store, ids[s : s + PATCH_BATCH])
        parts.append(t.reshape(len(t), -1, token_dim).astype(np.float32))
    mat = np.concatenate(parts) if parts else np.zeros((0, 1, token_dim), np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=2, keepdims=True), 1e-12)
    where = {int(r): i for i, r in enumerate(rows)}
    out = []
    for g in groups:
        m = mat[[where[int(r)] for r in g]].mean(axis=0)
        out.append(m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12))
    return out


def patch_change(store, pairs: Pairs) -> np.ndarray:
    """Max over the patch grid of the cosine distance between the periods' mean patch tokens.

    Tokens come from the ``patch_embeddings`` column, or, for stores (or rows) without it, are
    recomputed from each chip's source window by :func:`clay_search.patches.patch_tokens`."""
    if not len(pairs):
        return np.zeros(0, np.float32)
    token_dim = int(store._get_embedder().token_dim)  # checks the store's model id
    stored = "patch_embeddings" in store.table.schema.names
    size = store.table.schema.field("patch_embeddings").type.list_size if stored else 0
    if stored and size % token_dim:
        raise QueryError(
            f"patch embeddings of size {size} are not a grid of {token_dim}-dimensional tokens; "
            "connect with the weights the store was made with (connect(path, weights=...))"
        )
    before = _patch_means(store, pairs.rows_before, token_dim)
    after = _patch_means(store, pairs.rows_after, token_dim)
    out = np.zeros(len(pairs), np.float32)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        if b.shape != a.shape:
            raise QueryError("method='patch' needs both dates' chips of one size")
        out[i] = float(np.max(1.0 - np.sum(b * a, axis=1)))
    return out


def normalised_change(store, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Cosine change divided by each place's variability over its dates before ``after``.

    Returns (score, variability used).
    """
    d = cosine_change(pairs)
    if not len(pairs):
        return d, d
    eng = store.engine
    keys = store_place_keys(store)
    f = pairs.filters
    hist_rows = eng.rows(dataclasses.replace(f, start=None, end=pairs.after[0]))
    hist_rows = hist_rows[eng.time_us[hist_rows] < _us(pairs.after[0])]
    hist = _groups(keys, hist_rows)
    vec = store.vectors
    spread = np.full(len(pairs), np.nan)
    ndates = np.zeros(len(pairs))
    for i, key in enumerate(pairs.keys):
        g = hist.get(key)
        if g is None:
            continue
        t = eng.time_us[g]
        uniq = np.unique(t)
        if len(uniq) < 2:
            continue
        # one vector per date (mean of that date's chips), then their spread around the mean
        per_date = l2_normalise(np.stack([vec[g[t == u]].mean(axis=0) for u in uniq]))
        m = l2_normalise(per_date.mean(axis=0, keepdims=True))[0]
        spread[i] = float(np.mean(1.0 - per_date @ m))
        ndates[i] = len(uniq)
    known = spread[np.isfinite(spread)]
    median = float(np.median(known)) if len(known) else float(np.median(d)) or 1.0
    median = max(median, 1e-6)
    s = np.where(
        np.isfinite(spread),
        (ndates * np.nan_to_num(spread) + SHRINK_DATES * median) / (ndates + SHRINK_DATES),
        median,
    )
    return (d / np.maximum(s, 1e-6)).astype(np.float32), s.astype(np.float32)


def _us(dt: datetime) -> int:
    from clay_search.filters import _us as us

    return us(dt)


# -- results ----------------------------------------------------------------------------------
def _pairs_table(
    store, pairs: Pairs, order: np.ndarray, score: np.ndarray, change: np.ndarray
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    a = store.attrs
    rb = pairs.rep_before[order] if len(pairs) else np.zeros(0, np.int64)
    ra = pairs.rep_after[order] if len(pairs) else np.zeros(0, np.int64)
    tb, ta = a.take(pa.array(rb, pa.int64())), a.take(pa.array(ra, pa.int64()))
    n = len(order)
    keys = [pairs.keys[i] for i in order]
    cols = {
        "place_id": pa.array([_pid(k) for k in keys], pa.string()),
        "chip_id": ta.column("chip_id"),
        "chip_id_before": tb.column("chip_id"),
        "chip_id_after": ta.column("chip_id"),
        "datetime_before": tb.column("datetime"),
        "datetime_after": ta.column("datetime"),
        "n_before": pa.array([len(pairs.rows_before[i]) for i in order], pa.int32()),
        "n_after": pa.array([len(pairs.rows_after[i]) for i in order], pa.int32()),
        "pairing": pa.array([pairs.how[i] for i in order], pa.string()),
        "iou": pa.array(pairs.iou[order] if n else [], pa.float32()),
        "change": pa.array(change[order] if n else [], pa.float32()),
        "geometry": tb.column("geometry"),
    }
    for name in ("minx", "miny", "maxx", "maxy", "sensor", "gsd", "crs", "window", "label"):
        cols[name] = tb.column(name)
    cols["source_before"] = tb.column("source")
    cols["source_after"] = ta.column("source")
    cols["score"] = pa.array(score[order] if n else [], pa.float32())
    cols["rank"] = pa.array(np.arange(1, n + 1), pa.int32())
    return pa.table(cols), rb, ra


def _thumbs_fetch(store, rb: np.ndarray, ra: np.ndarray):
    table = store.table
    has = "thumbnail" in table.schema.names

    def col(rows: np.ndarray) -> pa.Array:
        if not has or not len(rows):
            return pa.nulls(len(rows), pa.binary())
        return store.take_column("thumbnail", rows)

    def fetch(res: pa.Table) -> pa.Table:
        if "thumbnail_before" in res.column_names:
            return res
        return res.append_column("thumbnail_before", col(rb)).append_column(
            "thumbnail_after", col(ra)
        )

    return fetch


def _meta(store, pairs: Pairs, query: str, **extra: Any) -> dict:
    meta = {
        "query": query,
        "before": [pairs.before[0].isoformat(), pairs.before[1].isoformat()],
        "after": [pairs.after[0].isoformat(), pairs.after[1].isoformat()],
        "filters": pairs.filters.to_dict(),
        "pairs": len(pairs),
        "pairs_grid": int(sum(h == "grid" for h in pairs.how)),
        "pairs_overlap": int(sum(h == "overlap" for h in pairs.how)),
        "combine": "mean of L2-normalised embeddings per period; the chip shown is the one "
        "closest to that mean",
        "index": "exact",
        **extra,
    }
    if pairs.reason:
        meta["reason"] = pairs.reason
    return meta


def _check_k(k: int | None) -> None:
    if k is not None and (not isinstance(k, int | np.integer) or k < 1):
        raise QueryError(f"k must be a positive integer, got {k!r}")


def changes(
    store,
    before: Period,
    after: Period,
    *,
    filters: Filters | None = None,
    bbox=None,
    geometry=None,
    k: int | None = None,
    method: str = "cosine",
    pairing: str = "auto",
    min_iou: float = DEFAULT_MIN_IOU,
    **where: Any,
) -> Results:
    """One row per place with chips in both periods, ranked by ``change`` (see module doc).

    ``filters`` / ``bbox``, ``geometry`` and the other filter keywords (``sensor``, ``label``,
    ...) select the chips; the periods are the time range.
    """
    if method not in METHODS:
        raise QueryError(f"method must be one of {METHODS}, got {method!r}")
    _check_k(k)
    pairs = pair_places(
        store,
        before,
        after,
        filters=filters,
        pairing=pairing,
        min_iou=min_iou,
        bbox=bbox,
        geometry=geometry,
        **where,
    )
    extra: dict = {"method": method}
    if method == "cosine":
        change = cosine_change(pairs)
    elif method == "patch":
        change = patch_change(store, pairs)
    else:
        change, s = normalised_change(store, pairs)
        extra["median_variability"] = float(np.median(s)) if len(s) else None
    keys = np.array(pairs.keys, dtype=object)
    order = np.lexsort((keys, -change)) if len(pairs) else np.zeros(0, np.int64)
    if k is not None:
        order = order[:k]
    table, rb, ra = _pairs_table(store, pairs, order, change, change)
    return Results(
        table,
        version=store.version,
        meta=_meta(store, pairs, "changes", **extra),
        fetch=_thumbs_fetch(store, rb, ra),
    )


def _example_rows(store, pairs: Pairs, examples, what: str) -> tuple[list[np.ndarray], list[int]]:
    """Change vectors of examples (place ids, chip ids of either period, or change vectors) and
    the positions of the pairs they name."""
    if examples is None:
        return [], []
    if isinstance(examples, str) or (isinstance(examples, np.ndarray) and examples.ndim == 1):
        examples = [examples]
    ids = store.attrs.column("chip_id").to_pylist()
    pos_of = {key: i for i, key in enumerate(pairs.keys)}
    for i in range(len(pairs)):  # chip ids of either period name their pair too
        for r in (*pairs.rows_before[i], *pairs.rows_after[i]):
            pos_of.setdefault(ids[int(r)], i)
    vecs: list[np.ndarray] = []
    used: list[int] = []
    diffs = pairs.diffs
    for e in examples:
        if isinstance(e, str):
            pos = pos_of.get(e)
            if pos is None:
                raise UnknownChipError(
                    f"{what} {e!r} is not a place (or a chip of a place) with chips in both "
                    "periods; list those with store.changes(before=..., after=...)"
                )
            vecs.append(diffs[pos])
            used.append(pos)
        else:
            v = np.asarray(e, dtype=np.float32)
            if v.ndim != 1 or v.shape[0] != store.dim:
                raise QueryError(
                    f"{what} change vector must have {store.dim} values, got shape {v.shape}"
                )
            vecs.append(v)
    return vecs, used


def change_search(
    store,
    positives,
    negatives=(),
    *,
    before: Period,
    after: Period,
    k: int | None = 50,
    filters: Filters | None = None,
    bbox=None,
    geometry=None,
    alpha: float = NEGATIVE_WEIGHT,
    pairing: str = "auto",
    min_iou: float = DEFAULT_MIN_IOU,
    exclude_examples: bool = True,
    **where: Any,
) -> Results:
    """Places whose change (after minus before) is most like the positives' change.

    Examples are place ids or chip ids (of either period) of places paired in these periods, or
    change vectors. Scores are cosines between each pair's normalised change vector and the
    query ``mean(positives) - alpha * mean(negatives)``; ``change`` is the cosine change.
    """
    _check_k(k)
    pairs = pair_places(
        store,
        before,
        after,
        filters=filters,
        pairing=pairing,
        min_iou=min_iou,
        bbox=bbox,
        geometry=geometry,
        **where,
    )
    keys = np.array(pairs.keys, dtype=object)
    pos, pos_used = _example_rows(store, pairs, positives, "positive")
    if not pos:
        raise QueryError("no positives: give at least one place id (or chip id) of a change")
    neg, neg_used = _example_rows(store, pairs, negatives, "negative")
    q = query_vector(np.stack(pos), np.stack(neg) if neg else None, alpha=alpha)
    diffs = pairs.diffs
    score = (diffs @ q).astype(np.float32) if len(pairs) else np.zeros(0, np.float32)
    keep = np.ones(len(pairs), bool)
    if exclude_examples:
        keep[pos_used + neg_used] = False
    cand = np.flatnonzero(keep)
    order = cand[np.lexsort((keys[cand], -score[cand]))] if len(cand) else cand
    if k is not None:
        order = order[:k]
    table, rb, ra = _pairs_table(store, pairs, order, score, cosine_change(pairs))
    meta = _meta(store, pairs, "change_search", positives=len(pos), negatives=len(neg), alpha=alpha)
    return Results(table, version=store.version, meta=meta, fetch=_thumbs_fetch(store, rb, ra))


def timeline(
    store, place_or_chip_id: str, *, reference: Any = None, min_iou: float | None = DEFAULT_MIN_IOU
) -> Results:
    """Every chip of a place, by date, with ``distance`` (cosine) to a reference chip.

    ``place_or_chip_id``: a place id or the id of one of its chips. ``reference``: a chip id of
    the timeline or a date (the chip nearest that date); default the first date. Chips of other
    grids whose footprint overlaps the place with IoU >= ``min_iou`` are included (``None``:
    the place's own grid only). ``distance_previous`` is the distance to the previous date.
    """
    if not isinstance(place_or_chip_id, str) or not place_or_chip_id:
        raise QueryError(f"give a place id or chip id, got {place_or_chip_id!r}")
    keys = store_place_keys(store)
    ids = store.attrs.column("chip_id").to_pylist()
    hit = np.flatnonzero(keys == place_or_chip_id)
    if not len(hit):
        try:
            row = int(store._rows_of([place_or_chip_id])[0])
        except UnknownChipError:
            raise UnknownChipError(
                f"{place_or_chip_id!r} is neither a place id nor a chip id in store "
                f"{store.path} (version {store.version}); list them with store.chips() "
                "(columns place_id, chip_id)"
            ) from None
        hit = np.flatnonzero(keys == keys[row])
    rows = hit
    eng = store.engine
    if min_iou is not None and eng.has_geom[hit[0]]:
        f = Filters(bbox=(eng.minx[hit[0]], eng.miny[hit[0]], eng.maxx[hit[0]], eng.maxy[hit[0]]))
        cand = eng.rows(f)
        cand = cand[keys[cand] != keys[hit[0]]]
        if len(cand):
            others = _groups(keys, cand)
            names = sorted(others)
            wb = [eng.geometry[int(hit[0])].as_py()]
            wa = [eng.geometry[int(others[n][0])].as_py() for n in names]
            _, j, _ = overlap_pairs(wb, wa, min_iou=min_iou, best_only=False)
            extra = [others[names[int(jj)]] for jj in j]
            if extra:
                rows = np.concatenate([rows, *extra])
    t = np.where(eng.has_time[rows], eng.time_us[rows], np.iinfo(np.int64).max)
    rows = rows[np.lexsort((np.array([ids[r] for r in rows], dtype=object), t))]
    vec = store.vectors[rows]
    if reference is None:
        ref = 0
    elif isinstance(reference, str) and reference in {ids[r] for r in rows}:
        ref = [ids[r] for r in rows].index(reference)
    else:
        start = Filters(start=reference).start
        assert start is not None  # reference is not None here
        at = _us(start)
        tt = eng.time_us[rows].astype(np.float64)
        ref = int(np.argmin(np.abs(tt - at)))
    dist = (1.0 - vec @ vec[ref]).astype(np.float32)
    prev = np.concatenate([[np.nan], 1.0 - np.sum(vec[1:] * vec[:-1], axis=1)]).astype(np.float32)
    meta = {
        "query": "timeline",
        "place": str(keys[hit[0]]),
        "reference": ids[rows[ref]],
        "grids": int(len(np.unique(keys[rows]))),
    }
    tab = store.get([ids[r] for r in rows]).to_arrow()  # a few rows: thumbnails read here
    tab = tab.replace_schema_metadata(None).drop_columns(
        [c for c in ("score", "rank", "place_id") if c in tab.column_names]
    )
    tab = tab.append_column("place_id", pa.array([_pid(keys[r]) for r in rows], pa.string()))
    tab = tab.append_column("distance", pa.array(dist, pa.float32()))
    tab = tab.append_column("distance_previous", pa.array(prev, pa.float32()))
    tab = tab.append_column("score", pa.array(dist, pa.float32()))
    tab = tab.append_column("rank", pa.array(np.arange(1, len(rows) + 1), pa.int32()))
    return Results(tab, version=store.version, meta=meta)


def _pid(key: str) -> str | None:
    return None if key.startswith("chip:") else key


# -- change map raster ------------------------------------------------------------------------
def write_change_raster(results: Results, path, *, column: str = "change") -> dict:
    """Write a change map: a float32 GeoTIFF with one pixel per chip cell, georeferenced.

    The raster is in the CRS most of the pairs' chips have; its pixel is the chip size (the
    median chip width/height in that CRS) on the lattice of the chips' top-left corners.
    Cells without a pair are NaN (nodata); where chips overlap (stride < chip size) the cell
    keeps the largest value. Chips of another CRS are placed by their centre. Returns a summary.
    """
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    from clay_search.places import _from_wgs84

    table = results.to_arrow()
    if table.num_rows == 0:
        raise QueryError(
            f"no changes to map: the results are empty ({results.meta.get('reason', 'no pairs')})"
        )
    crs_col = table.column("crs").to_pylist()
    vals = table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    known = [c for c in crs_col if c]
    crs_text = max(set(known), key=known.count) if known else "EPSG:4326"
    tr = _from_wgs84(crs_text)
    boxes = np.full((len(vals), 4), np.nan)
    for i, g in enumerate(geoms):
        if g is None or shapely.is_missing(g):
            continue
        xy = shapely.get_coordinates(g)
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        boxes[i] = (np.min(x), np.min(y), np.max(x), np.max(y))
    ok = np.isfinite(boxes).all(axis=1)
    if not ok.any():
        raise QueryError("no change row has a footprint: nothing to put on a map")
    same = np.array([c == crs_text for c in crs_col]) & ok
    ref = boxes[same] if same.any() else boxes[ok]
    cw = float(np.median(ref[:, 2] - ref[:, 0]))
    ch = float(np.median(ref[:, 3] - ref[:, 1]))
    x0, y1 = float(np.min(ref[:, 0])), float(np.max(ref[:, 3]))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    col = np.floor((cx - x0) / cw).astype(np.int64, copy=False)
    row = np.floor((y1 - cy) / ch).astype(np.int64, copy=False)
    keep = ok & (col >= 0) & (row >= 0)
    width, height = int(col[keep].max()) + 1, int(row[keep].max()) + 1
    grid = np.full((height, width), np.nan, np.float32)
    for r, c, v in zip(row[keep], col[keep], vals[keep], strict=True):
        if np.isnan(grid[r, c]) or v > grid[r, c]:
            grid[r, c] = v
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": crs_text,
        "nodata": float("nan"),
        "transform": from_origin(x0, y1, cw, ch),
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grid, 1)
        dst.set_band_description(1, column)
        dst.update_tags(
            clay_search_before="/".join(results.meta.get("before", [])),
            clay_search_after="/".join(results.meta.get("after", [])),
            clay_search_method=str(results.meta.get("method", "")),
        )
    return {
        "path": str(path),
        "width": width,
        "height": height,
        "crs": crs_text,
        "cells": int(np.isfinite(grid).sum()),
    }
