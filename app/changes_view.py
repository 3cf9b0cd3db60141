"""The "Changes" view: two periods, a map coloured by change, before/after pairs, timelines.

Uses only the Python API (``Store.changes``, ``Store.change_search``, ``Store.timeline``). Pairs
picked as Like / Unlike drive "More changes like these"; a pair's Timeline button (or a click on
its footprint on the map) shows every date of that place with its distance to the first date.
The map is the Search view's component (``map_component.py``): footprints filled by change,
the after chips' thumbnails in place when zoomed in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import MutableMapping
from datetime import date, timedelta
from typing import Any, cast

import pandas as pd
import streamlit as st

from clay_search.app import exports, layers, map_component
from clay_search.errors import ClaySearchError

PAGE_SIZE = 12
COLUMNS = 4
METHODS = ["cosine", "normalised", "patch"]
# session keys of this view (all prefixed "chg-")
RES, DF, QUERY, LIKE, UNLIKE, PLACE, NOTE, MAP_KEY, SEEN = (
    "chg-results",
    "chg-df",
    "chg-query",
    "chg-like",
    "chg-unlike",
    "chg-place",
    "chg-note",
    "chg-map",
    "chg-map-seen",
)


def default_periods(info: dict[str, Any]) -> tuple[tuple[date, date], tuple[date, date]]:
    """Before = the first year of the store's time range, after = its last year."""
    tr = info.get("time_range") or [None, None]
    try:
        lo, hi = date.fromisoformat(str(tr[0])[:10]), date.fromisoformat(str(tr[1])[:10])
    except (TypeError, ValueError):
        lo, hi = date(2015, 1, 1), date(2020, 12, 31)
    mid = lo + (hi - lo) / 2
    before_end = min(date(lo.year, 12, 31), mid)
    after_start = max(date(hi.year, 1, 1), before_end + timedelta(days=1))
    return (lo, before_end), (after_start, hi)


def toggle(ss: MutableMapping[str, Any], key: str, place: str) -> None:
    """Add ``place`` to the Like (or Unlike) set, or take it out; never in both."""
    other = UNLIKE if key == LIKE else LIKE
    chosen = ss.setdefault(key, [])
    if place in chosen:
        chosen.remove(place)
    else:
        chosen.append(place)
        if place in ss.setdefault(other, []):
            ss[other].remove(place)


def handle_map_event(ss: MutableMapping[str, Any]) -> None:
    """A click on a pair's footprint opens its timeline (each event is applied once)."""
    ev = map_component.MapEvent.parse(ss.get(MAP_KEY))
    if ev is None or ss.get(SEEN) == ev.key:
        return
    ss[SEEN] = ev.key
    if ev.kind == "click" and ev.chip_id:
        ss[PLACE] = ev.chip_id  # the after chip: store.timeline takes a place's chip id


def pair_caption(row: pd.Series) -> str:
    """Text under a before/after pair."""
    parts = [f"#{int(row['rank'])}", f"{row['score']:.3f}"]
    b, a = row.get("datetime_before"), row.get("datetime_after")
    if pd.notna(b) and pd.notna(a):
        parts.append(f"{pd.Timestamp(b):%Y-%m-%d} -> {pd.Timestamp(a):%Y-%m-%d}")
    return " | ".join(parts)


def _key(row: pd.Series) -> str:
    return str(row["place_id"]) if pd.notna(row.get("place_id")) else str(row["chip_id_before"])


def _run(store: Any, kind: str, before: tuple, after: tuple, method: str, k: int) -> None:
    ss = st.session_state
    try:
        if kind == "more":
            like, unlike = list(ss.get(LIKE, [])), list(ss.get(UNLIKE, []))
            if not like:
                ss[NOTE] = ("warning", "Pick at least one pair with Like first.")
                return
            res = store.change_search(like, unlike, before=before, after=after, k=k)
            desc = f"changes like {len(like)} pair(s), unlike {len(unlike)}"
        else:
            res = store.changes(before, after, method=method, k=k)
            desc = f"largest changes ({method})"
        df = res.to_pandas()
    except ClaySearchError as e:
        ss[NOTE] = ("error", str(e))
        return
    ss[RES], ss[DF], ss[QUERY] = res, df, desc
    if df.empty:
        ss[NOTE] = ("warning", f"No pairs: {res.meta.get('reason', 'nothing matched')}")


def render_timeline(store: Any, place: str) -> None:
    """Distance to the first date over time, and every date's thumbnail."""
    try:
        tl = store.timeline(place).to_pandas()
    except ClaySearchError as e:
        st.error(str(e))
        return
    st.markdown(f"**Timeline of place** `{place[:14]}` ({len(tl)} dates)")
    chart = pd.DataFrame(
        {
            "date": pd.to_datetime(tl["datetime"]),
            "distance to first date": tl["distance"].astype(float),
        }
    )
    st.line_chart(chart, x="date", y="distance to first date", height=200)
    cols = st.columns(min(len(tl), 10) or 1)
    for i, (_, r) in enumerate(tl.iterrows()):
        with cols[i % len(cols)]:
            if isinstance(r.get("thumbnail"), bytes) and r["thumbnail"]:
                st.image(r["thumbnail"], width="stretch")
            st.caption(f"{pd.Timestamp(r['datetime']):%Y-%m-%d} d={r['distance']:.2f}")


def render_pairs(df: pd.DataFrame, ss: MutableMapping[str, Any]) -> None:
    """Gallery of before/after thumbnails with Like / Unlike / Timeline buttons."""
    pages = max(1, math.ceil(len(df) / PAGE_SIZE))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="chg-page"))
    rows = df.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    cols = st.columns(COLUMNS)
    like, unlike = ss.get(LIKE, []), ss.get(UNLIKE, [])
    for i, (_, row) in enumerate(rows.iterrows()):
        place = _key(row)
        with cols[i % COLUMNS], st.container(border=True, key=f"chg-card-{place}"):
            c1, c2 = st.columns(2)
            for c, col, label in (
                (c1, "thumbnail_before", "before"),
                (c2, "thumbnail_after", "after"),
            ):
                thumb = row.get(col)
                if isinstance(thumb, bytes) and thumb:
                    c.image(thumb, caption=label, width="stretch")
                else:
                    c.caption(f"({label}: no thumbnail)")
            mark = " | LIKE" if place in like else " | UNLIKE" if place in unlike else ""
            st.caption(pair_caption(row) + mark)
            b1, b2, b3 = st.columns(3)
            b1.button("Like", key=f"chg-like-{place}", on_click=toggle, args=(ss, LIKE, place))
            b2.button(
                "Unlike", key=f"chg-unlike-{place}", on_click=toggle, args=(ss, UNLIKE, place)
            )
            b3.button(
                "Timeline", key=f"chg-tl-{place}", on_click=ss.__setitem__, args=(PLACE, place)
            )


def render(store: Any, info: dict[str, Any], *, basemap_url: str | None = None) -> None:
    """The whole Changes view (``basemap_url``: the sidebar's XYZ tiles, None = offline)."""
    ss = cast("MutableMapping[str, Any]", st.session_state)  # the app's keys are str
    handle_map_event(ss)
    (b0, b1), (a0, a1) = default_periods(info)
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    before: Any = c1.date_input("Before period", (b0, b1), key="chg-before")
    after: Any = c2.date_input("After period", (a0, a1), key="chg-after")
    has_patches = "patch_embeddings" in store.table.schema.names
    method = c3.selectbox("Measure", METHODS if has_patches else METHODS[:2], key="chg-method")
    k = int(c4.number_input("Pairs", 1, 5000, 200, key="chg-k"))
    if not (
        isinstance(before, tuple | list)
        and len(before) == 2
        and isinstance(after, tuple | list)
        and len(after) == 2
    ):
        st.info("Pick a start and an end date for both periods.")
        return
    before, after = tuple(before), tuple(after)
    b1_, b2_, b3_, b4_ = st.columns([1, 1, 1, 3])
    b1_.button(
        "Find changes",
        key="chg-run",
        type="primary",
        on_click=_run,
        args=(store, "changes", before, after, method, k),
    )
    b2_.button(
        "More like these",
        key="chg-more",
        on_click=_run,
        args=(store, "more", before, after, method, k),
        help="Rank pairs by how much their change resembles the Liked pairs' change.",
    )

    def clear_picks() -> None:
        ss[LIKE] = []
        ss[UNLIKE] = []

    b3_.button("Clear picks", key="chg-clear", on_click=clear_picks)
    b4_.markdown(f"**{len(ss.get(LIKE, []))}** liked, **{len(ss.get(UNLIKE, []))}** unliked")
    note = ss.pop(NOTE, None)
    if note:
        getattr(st, note[0], st.info)(note[1])
    res, df = ss.get(RES), ss.get(DF)
    if res is None or df is None or df.empty:
        if res is None:
            st.caption("Pick two periods and press Find changes.")
        return
    st.success(f"{len(df)} pairs ({ss.get(QUERY)}; {res.meta.get('pairs')} places paired)")
    shown = df.assign(chip_id=df["chip_id_after"], thumbnail=df["thumbnail_after"])
    frame = layers.footprint_frame(shown, {})
    bounds = layers.extent(frame)
    args = map_component.map_args(
        frame,
        bounds=bounds,
        fit_key=f"changes|{ss.get(QUERY)}|{before}|{after}|{len(frame)}",
        thumbs=map_component.thumbnails(shown),
        grid=layers.grid_paths(bounds),
        basemap_url=basemap_url,
    )
    map_component.render_map(args, key=MAP_KEY)
    st.caption(
        "Footprints filled by change (the after chips' thumbnails when zoomed in); "
        "click one for its timeline."
    )
    place = ss.get(PLACE)
    if place:
        render_timeline(store, place)
    render_pairs(df, ss)
    d1, d2, _ = st.columns([1, 1, 4])
    for col, fmt in ((d1, "GeoJSON"), (d2, "GeoParquet")):
        col.download_button(
            f"Download {fmt}",
            data=functools.partial(exports.results_bytes, res, fmt),
            file_name=exports.file_name(fmt, stem="clay-search-changes"),
            mime=exports.mime(fmt),
            key=f"chg-dl-{fmt.lower()}",
            on_click="ignore",
        )
