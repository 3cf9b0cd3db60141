"""The sidebar: store overview, filters, k and map options."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import streamlit as st

from clay_search.errors import QueryError
from clay_search.filters import Filters

AREA_MODES = [
    "Anywhere",
    "Map view",
    "Drawn on the map",
    "Box (lon/lat)",
    "Pasted area (WKT / GeoJSON)",
]
ANYWHERE, MAP_VIEW, DRAWN, BOX, PASTED = AREA_MODES
DEFAULT_BASEMAP = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


@dataclass
class Controls:
    """What the sidebar decided: filters, result count, map options, and filter problems."""

    filters: Filters
    k: int
    basemap_url: str | None  # an XYZ tile URL template (online), or None: offline imagery only
    imagery: bool = True  # draw the overview images and thumbnails under the footprints
    problem: str | None = None
    sort: str | None = None  # browse order: None (table order) or a Store.chips sort column
    ascending: bool = False


def _as_date(v: Any) -> date | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    try:
        return datetime.fromisoformat(str(v)).date()
    except ValueError:
        return None


def _first(info: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if info.get(k) not in (None, "", [], {}):
            return info[k]
    return None


def date_range(info: dict[str, Any]) -> tuple[date | None, date | None]:
    """The store's first and last acquisition dates from its overview, if known."""
    rng = _first(info, "time_range", "date_range")
    if isinstance(rng, list | tuple) and len(rng) == 2:
        return _as_date(rng[0]), _as_date(rng[1])
    return _as_date(_first(info, "start", "date_min", "min_datetime")), _as_date(
        _first(info, "end", "date_max", "max_datetime")
    )


def _names(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [str(k) for k in v]
    if isinstance(v, list | tuple | set):
        return [str(x) for x in v]
    return [str(v)] if v else []


def render_overview(uri: str, info: dict[str, Any]) -> None:
    """Chip count, sensors, date range, model id and table version."""
    st.subheader("Store")
    st.caption(uri)
    count = _first(info, "chips", "count", "rows")
    version = _first(info, "version", "table_version")
    a, b = st.columns(2)
    a.metric("Chips", f"{int(count):,}" if count is not None else "?")
    b.metric("Table version", str(version) if version is not None else "?")
    start, end = date_range(info)
    sensors = _names(_first(info, "sensors"))
    labels = _names(_first(info, "labels"))
    st.markdown(
        f"**Sensors:** {', '.join(sensors) or 'none'}  \n"
        f"**Dates:** {start or '?'} .. {end or '?'}  \n"
        f"**Model:** `{str(_first(info, 'model_id') or '?')[:16]}`  \n"
        f"**Labels:** {len(labels) if labels else 'none'}"
    )
    if "overview_error" in info:
        st.warning(f"Overview incomplete: {info['overview_error']}")


def render_filters(
    info: dict[str, Any],
    *,
    view_bounds: tuple[float, float, float, float] | None = None,
    drawn: dict | None = None,
) -> Controls:
    """Filter widgets; returns the Controls (with a problem message instead of raising).

    The widgets' values become one :class:`clay_search.filters.Filters` (it validates them by
    the Store's rules; the app passes it to every query as ``filters=``).
    ``view_bounds`` and ``drawn`` come from the map (its *Use view* button and drawn shape).
    """
    st.subheader("Filters")
    start = end = None
    undated = False
    lo, hi = date_range(info)
    if lo and hi and st.checkbox("Filter by date", key="f-date-on"):
        picked = st.date_input("Date range", (lo, hi), min_value=lo, max_value=hi, key="f-date")
        if isinstance(picked, tuple | list):
            start = picked[0] if len(picked) > 0 else None
            end = picked[1] if len(picked) > 1 else None
        undated = st.checkbox(
            "Keep undated chips",
            key="f-undated",
            help="Chips without an acquisition date pass the date filter too.",
        )
    sensors = _names(_first(info, "sensors"))
    sensor = st.multiselect("Sensor", sensors, key="f-sensor", placeholder="any sensor")
    labels = _names(_first(info, "labels"))
    label = (
        st.multiselect("Label", labels, key="f-label", placeholder="any label") if labels else []
    )
    max_recon_error = quality_filter(info.get("quality"))
    area = st.radio("Area", AREA_MODES, key="f-area")
    bbox: tuple[float, float, float, float] | None = None
    geometry: dict | str | None = None  # drawn GeoJSON or pasted WKT / GeoJSON text
    if area == MAP_VIEW:
        if view_bounds is None:
            st.caption("Press **Use view** on the map to filter by what it shows.")
        else:
            bbox = view_bounds
            st.caption("The map's view: " + ", ".join(f"{v:.4f}" for v in view_bounds))
    elif area == DRAWN:
        if drawn is None:
            st.caption("Draw a **Box** or **Polygon** on the map (toolbar above the map).")
        else:
            geometry = drawn
            st.caption("The shape drawn on the map.")
    elif area == BOX:
        w0, s0, e0, n0 = info.get("bbox") or (-180.0, -90.0, 180.0, 90.0)
        st.caption("West, south, east, north in degrees; starts as the extent of the store.")
        c1, c2 = st.columns(2)
        w = c1.number_input("West", -180.0, 180.0, float(w0), format="%.5f", key="f-w")
        e = c2.number_input("East", -180.0, 180.0, float(e0), format="%.5f", key="f-e")
        s = c1.number_input("South", -90.0, 90.0, float(s0), format="%.5f", key="f-s")
        n = c2.number_input("North", -90.0, 90.0, float(n0), format="%.5f", key="f-n")
        bbox = (w, s, e, n)
    elif area == PASTED:
        text = st.text_area(
            "Area (lon/lat)",
            key="f-wkt",
            placeholder="POLYGON((lon lat, ...)) or a GeoJSON Polygon / Feature",
            help="Draw it in any GIS or geojson.io, then paste the polygon here.",
        )
        geometry = text if text.strip() else None
    st.subheader("Results")
    k = int(st.slider("k (results)", 1, 500, 50, key="k"))
    sort, ascending = browse_order(info.get("quality"))
    st.subheader("Map")
    imagery = st.toggle("Imagery from the store (offline)", value=True, key="imagery")
    basemap_url = None
    if st.toggle("Online basemap (needs internet)", value=False, key="basemap"):
        basemap_url = st.text_input("Tile URL", DEFAULT_BASEMAP, key="basemap-url").strip()
    try:
        flt = Filters.of(
            start=start,
            end=end,
            undated=undated,
            sensor=sensor or None,
            label=label or None,
            bbox=bbox,
            geometry=geometry,
            max_recon_error=max_recon_error,
        )
        problem = None
    except QueryError as err:
        flt, problem = Filters(), str(err)
    return Controls(
        filters=flt,
        k=k,
        basemap_url=basemap_url or None,
        imagery=imagery,
        problem=problem,
        sort=sort,
        ascending=ascending,
    )


#: Browse orders offered when the store holds quality scores: (label, sort column, ascending).
BROWSE_ORDERS = [
    ("Table order", None, False),
    ("Quality score: worst first", "recon_error", False),
    ("Quality score: best first", "recon_error", True),
]


def quality_filter(quality: dict | None) -> float | None:
    """The quality-score filter widgets (only for a store with scores): a max recon_error."""
    if not quality or not quality.get("scored"):
        return None
    if not st.checkbox(
        "Filter by quality score",
        key="f-quality-on",
        help="Drop chips the model reconstructs badly (recon_error above the limit): cloudy, "
        "broken or unusual chips. Chips without a score are kept.",
    ):
        return None
    lo, hi = float(quality["min"]), float(quality["max"])
    if hi <= lo:
        hi = lo + 1e-3
    limit = st.slider(
        "Max recon_error",
        lo,
        hi,
        float(min(max(quality["p95"], lo), hi)),
        step=(hi - lo) / 200,
        format="%.3f",
        key="f-quality",
        help="Starts at the store's 95th percentile (drops the worst 5 %).",
    )
    if quality.get("unscored"):
        st.caption(f"{quality['unscored']:,} chips have no score and are kept.")
    return float(limit)


def browse_order(quality: dict | None) -> tuple[str | None, bool]:
    """The browse-order choice (only for a store with quality scores)."""
    if not quality or not quality.get("scored"):
        return None, False
    names = [o[0] for o in BROWSE_ORDERS]
    picked = st.selectbox(
        "Browse order", names, key="browse-order", help="Order of the chips before a search."
    )
    _, sort, ascending = BROWSE_ORDERS[names.index(picked)]
    return sort, ascending
