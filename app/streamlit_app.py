"""clay-search: find features on a map by example (Streamlit script).

Run with ``clay-search app --store PATH`` (or ``streamlit run app/streamlit_app.py -- --store
PATH``, or with $CLAY_SEARCH_STORE). Uses only the Python API: ``clay_search.connect`` and the
Store / Results it returns.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any

import pandas as pd
import streamlit as st

from clay_search.app import exports, gallery, layers, map_component
from clay_search.app import session_panel as SP
from clay_search.app import state as S
from clay_search.app.query import date_effect
from clay_search.app.sidebar import (
    ANYWHERE,
    DRAWN,
    MAP_VIEW,
    Controls,
    render_filters,
    render_overview,
)
from clay_search.app.store_access import (
    ENV_VAR,
    Opened,
    overview,
    store_uri,
    weights_path,
)
from clay_search.app.store_access import cached_open as _open
from clay_search.app.store_access import cached_overviews as _overviews
from clay_search.app.upload import validate_labels_file, validate_upload
from clay_search.errors import ClaySearchError, UploadError

BROWSE_LIMIT = 2000  # chips drawn on the map before any search
MAP_KEY = "map"
MAX_EXAMPLES_ON_MAP = 200  # labelled chips outlined on the results map
TABLE_COLUMNS = ["rank", "score", "chip_id", "sensor", "datetime", "label", "source"]
CLICK_ACTIONS = ["Mark positive", "Mark negative", "Just show"]


@st.cache_resource(show_spinner=False, max_entries=16)
def _browse(
    uri: str,
    version: Any,
    filters_key: str,
    _store: Any,
    _filters: Any,
    sort: str | None = None,
    ascending: bool = False,
) -> pd.DataFrame:
    """Chips to show before a search: the filtered listing (in the sidebar's browse order), at
    most BROWSE_LIMIT rows."""
    return _store.chips(_filters, limit=BROWSE_LIMIT, sort=sort, ascending=ascending).to_pandas()


@st.cache_resource(show_spinner=False, max_entries=4)
def _pred_classes(uri: str, version: Any, _store: Any) -> dict[str, list[int]]:
    """Colours of the store's predicted classes (all of them, so a class keeps its colour in
    every query); empty when the store has no ``pred_label``."""
    if "pred_label" not in _store.table.schema.names:
        return {}
    t = _store.table.search().select(["pred_label"]).limit(None).to_arrow()
    return layers.class_colors(t.column("pred_label").drop_null().unique().to_pylist())


@st.cache_resource(show_spinner=False, max_entries=16)
def _date_effect(uri: str, version: Any, filters_key: str, _store: Any, _f: Any) -> Any:
    """What the date range removed (counted once per store version and filters)."""
    return date_effect(_store, _f)


def _key(filters: Any) -> str:
    """A cache key of a Filters object (its full description, geometry as WKT)."""
    return json.dumps(filters.to_dict(), sort_keys=True, default=str)


def _notice(level: str, message: str) -> None:
    st.session_state[S.NOTICE] = (level, message)


def run_query(
    kind: str, store: Any, controls: Controls, settings: SP.SessionSettings | None = None
) -> None:
    """Callback of Search / Refine / Search-with-upload: query the store, keep the results."""
    ss = st.session_state
    if controls.problem:
        _notice("error", f"Fix the filters first: {controls.problem}")
        return
    pos, neg = S.positives(ss), S.negatives(ss)
    flt = controls.filters
    t0 = time.perf_counter()
    tmp = None
    try:
        if kind == "search":
            if not pos:
                _notice(
                    "warning",
                    "Mark at least one chip Positive (click it on the map or use Pos in the "
                    "gallery), or search with an uploaded chip.",
                )
                return
            res = store.search(positives=pos, negatives=neg, k=controls.k, filters=flt)
            desc = f"search: {len(pos)} positive, {len(neg)} negative"
        elif kind == "refine":
            if not pos:
                _notice(
                    "warning",
                    "Refine trains a classifier on your labels: mark at least one Positive "
                    "(and, better, some Negative) chips first.",
                )
                return
            res, desc = SP.run_round(
                ss, store, settings or SP.SessionSettings(), controls.k, controls.filters
            )
            desc = f"refine {desc}"
        elif kind == "upload":
            chip = ss.get(S.UPLOAD)
            if chip is None:
                _notice("warning", "Upload a GeoTIFF or PNG chip first.")
                return
            tmp = chip.write_temp()
            sensor = ss.get("upload-sensor") or None
            bands = [b.strip() for b in (ss.get("upload-bands") or "").split(",") if b.strip()]
            res = store.search_image(
                str(tmp), k=controls.k, image_sensor=sensor, bands=bands or None, filters=flt
            )
            desc = f"upload: {chip.name}"
        else:  # pragma: no cover - only the buttons below call this
            raise ValueError(kind)
        df = res.to_pandas()
    except ClaySearchError as e:
        _notice("error", str(e))
        return
    except Exception as e:  # noqa: BLE001 - the page must survive anything the query raises
        _notice("error", f"The {kind} failed unexpectedly: {type(e).__name__}: {e}")
        return
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    ss[S.RESULTS] = res
    ss[S.RESULTS_DF] = df
    ss[gallery.FOCUS] = None  # the map fits the new results
    ss[S.QUERY] = f"{desc}; {controls.filters.describe()}"
    extra = None
    if kind == "refine":
        r = ss[SP.ROUND].record
        extra = {k: v for k, v in SP.round_row(r).items() if k.startswith(("cv_", "class"))}
        extra.update(background=f"{r.background} {r.negatives}")
    else:
        ss[SP.ROUND] = None  # the review slider is for classifier rounds
    S.record_round(ss, kind, len(df), seconds, extra)


def _clear_results() -> None:
    st.session_state[S.RESULTS] = None
    st.session_state[S.RESULTS_DF] = None
    st.session_state[S.QUERY] = ""


def handle_map_event(ss: Any) -> None:
    """Act on the map's last event (runs before the sidebar, so the area filter follows it)."""
    ev = map_component.MapEvent.parse(ss.get(MAP_KEY))
    if ev is None or ev.key == ss.get(S.MAP_EVENT):
        return
    ss[S.MAP_EVENT] = ev.key
    if ev.kind == "click" and ev.chip_id:
        ss[S.PICKED] = ev.chip_id
        action = ss.get("click-action", CLICK_ACTIONS[0])
        if action == CLICK_ACTIONS[0]:
            S.set_label(ss, ev.chip_id, S.POSITIVE)
            SP.note_label(ss, ev.chip_id, "click")
        elif action == CLICK_ACTIONS[1]:
            S.set_label(ss, ev.chip_id, S.NEGATIVE)
            SP.note_label(ss, ev.chip_id, "click")
    elif ev.kind == "draw":
        ss[S.DRAWN] = ev.geometry
        ss["f-area"] = DRAWN
    elif ev.kind == "view":
        ss[S.VIEW] = ev.bounds
        ss["f-area"] = MAP_VIEW
    elif ev.kind == "clear":
        ss[S.DRAWN] = None
        if ss.get("f-area") == DRAWN:
            ss["f-area"] = ANYWHERE


def _restore_labels() -> None:
    f = st.session_state.get("labels-file")
    if f is None:
        return
    try:
        restored = validate_labels_file(f.getvalue())  # bounded, schema-checked
    except ValueError as e:
        _notice("error", f"Could not restore labels: {e}")
        return
    S.labels(st.session_state).update(restored)
    _notice("success", f"Restored {len(restored)} labels.")


def render_no_store(uri: str | None, opened: Opened | None) -> None:
    """Clear page for a missing or unreadable store."""
    if uri is None:
        st.info(
            "No store given. Start the app with `clay-search app --store PATH` "
            f"(or set ${ENV_VAR}). Build a store with `clay-search ingest sample --store PATH`."
        )
        return
    assert opened is not None
    if opened.kind == "missing":
        st.warning(f"No store at `{uri}`.")
        st.info(f"{opened.error}")
    else:
        st.error(opened.error or f"Could not open {uri}.")
    if st.button("Try again", key="reload-missing"):
        st.session_state["reload-token"] = st.session_state.get("reload-token", 0) + 1
        st.rerun()


def render_upload(store: Any, controls: Controls, sensors: list[str]) -> None:
    """Query by upload: validate the file, describe it, search with it."""
    ss = st.session_state
    f = st.file_uploader(
        "Query chip (GeoTIFF or PNG, at most 5 MB)",
        type=["tif", "tiff", "png"],
        key="upload-file",
    )
    if f is None:
        ss[S.UPLOAD] = None
        return
    try:
        chip = validate_upload(f.name, f.getvalue())
    except UploadError as e:
        ss[S.UPLOAD] = None
        st.error(f"Upload rejected: {e}")
        return
    ss[S.UPLOAD] = chip
    st.caption(chip.describe())
    if chip.kind == "png":
        st.image(chip.data, width=128)
    c1, c2 = st.columns(2)
    c1.selectbox("Sensor of the chip", [*sensors, ""], key="upload-sensor")
    c2.text_input("Bands (comma separated, optional)", key="upload-bands")
    st.button(
        "Search with this chip",
        key="search-upload",
        on_click=run_query,
        args=("upload", store, controls),
    )


def render_labels_panel(store: Any) -> None:
    """Labels kept for the session: counts, the picked chip, clear, export, restore."""
    ss = st.session_state
    pos, neg = S.positives(ss), S.negatives(ss)
    st.markdown(f"**Labels:** {len(pos)} positive, {len(neg)} negative")
    picked = ss.get(S.PICKED)
    if picked:
        try:
            row = store.get([picked]).to_pandas().iloc[0]
        except (ClaySearchError, IndexError):
            row = None
        if row is not None:
            st.caption(f"Picked on the map: {picked[:12]}")
            thumb = row.get("thumbnail")
            if isinstance(thumb, bytes) and thumb:
                st.image(thumb, width=120)
    if pos or neg:
        with st.expander("Labelled chips"):
            st.dataframe(
                pd.DataFrame(
                    {
                        "chip_id": pos + neg,
                        "label": ["positive"] * len(pos) + ["negative"] * len(neg),
                    }
                ),
                hide_index=True,
            )
            pick = st.selectbox("Chip", pos + neg, key="unlabel-pick")
            st.button("Remove label", key="unlabel", on_click=S.set_label, args=(ss, pick, None))
        st.button("Clear labels", key="clear-labels", on_click=S.clear_labels, args=(ss,))
        c1, c2 = st.columns(2)
        c1.download_button(
            "Labels JSON",
            data=lambda: S.labels_json(ss, str(ss.get("store-uri", "")), store.version),
            file_name="clay-search-labels.json",
            mime="application/json",
            key="dl-labels-json",
            on_click="ignore",
        )
        c2.download_button(
            "Labels CSV",
            data=lambda: S.labels_csv(ss),
            file_name="clay-search-labels.csv",
            mime="text/csv",
            key="dl-labels-csv",
            on_click="ignore",
        )
    st.file_uploader(
        "Restore labels (JSON)", type=["json"], key="labels-file", on_change=_restore_labels
    )


def render_results_footer(res: Any, df: pd.DataFrame) -> None:
    """Results table, rounds and export downloads."""
    ss = st.session_state
    cols = [c for c in TABLE_COLUMNS if c in df.columns]
    with st.expander(f"Results table ({len(df)})"):
        st.dataframe(df[cols], hide_index=True)
        if ss.get(S.ROUNDS):
            st.caption("Rounds this session")
            st.dataframe(pd.DataFrame(ss[S.ROUNDS]), hide_index=True)
    c1, c2, _ = st.columns([1, 1, 4])
    for col, fmt in ((c1, "GeoJSON"), (c2, "GeoParquet")):
        col.download_button(
            f"Download {fmt}",
            data=functools.partial(exports.results_bytes, res, fmt),
            file_name=exports.file_name(fmt),
            mime=exports.mime(fmt),
            key=f"dl-{fmt.lower()}",
            on_click="ignore",
        )


def main() -> None:
    """Build the page."""
    st.set_page_config(page_title="clay-search", layout="wide")
    ss = st.session_state
    S.init_state(ss)
    st.title("clay-search: find it by example")
    uri = store_uri(sys.argv[1:])
    ss["store-uri"] = uri
    weights = weights_path(sys.argv[1:])
    opened = _open(uri, weights, int(ss.get("reload-token", 0))) if uri else None
    if opened is None or opened.store is None:
        render_no_store(uri, opened)
        return
    store = opened.store
    info = overview(store)
    handle_map_event(ss)
    with st.sidebar:
        view = st.radio("View", ["Search", "Changes"], key="view", horizontal=True)
        render_overview(uri, info)
        if st.button("Reload store", key="reload"):
            _open.clear()
            _browse.clear()
            _clear_results()
            st.rerun()
        controls = render_filters(info, view_bounds=ss.get(S.VIEW), drawn=ss.get(S.DRAWN))
        settings = SP.render_settings()
    if len(store) == 0:
        st.info(
            f"The store at `{uri}` holds no chips yet. Add imagery with "
            f"`clay-search ingest SOURCE --store {uri}`, then press Reload store."
        )
        return
    if view == "Changes":
        from clay_search.app import changes_view

        changes_view.render(store, info, basemap_url=controls.basemap_url)
        return
    if controls.problem:
        st.error(f"Filter problem: {controls.problem}")
    effect = _date_effect(uri, store.version, _key(controls.filters), store, controls.filters)

    notice = ss.get(S.NOTICE)
    if notice:
        getattr(st, notice[0], st.info)(notice[1])
        ss[S.NOTICE] = None

    pos, neg = S.positives(ss), S.negatives(ss)
    b1, b2, b3, b4 = st.columns([1, 1, 1, 3])
    b1.button(
        "Search",
        key="search",
        type="primary",
        on_click=run_query,
        args=("search", store, controls),
        help="Rank chips by similarity to the positives (and away from the negatives).",
        width="stretch",
    )
    b2.button(
        "Refine",
        key="refine",
        on_click=run_query,
        args=("refine", store, controls, settings),
        help="Train the classifier (sidebar) on the labelled chips, rank the chips, and "
        "estimate its precision by spatial cross-validation.",
        width="stretch",
    )
    b3.button("Clear results", key="clear-results", on_click=_clear_results, width="stretch")
    b4.markdown(f"**{len(pos)}** positive, **{len(neg)}** negative | {controls.filters.describe()}")

    with st.expander("Query by upload"):
        render_upload(store, controls, list(_sensor_names(info)))

    res = ss.get(S.RESULTS)
    heat: dict[str, bytes] = {}  # chip id -> thumbnail with the patch heatmap
    df = ss.get(S.RESULTS_DF)
    # one slot, always there, for the results' controls above the map: the map keeps its place
    # in the page's element tree between browsing and results (a map that moves is remounted and
    # loses the click it was sending)
    above_map = st.container()
    if res is not None and df is not None:
        if df.empty:
            st.warning(
                "No results: no chip passes the filters. Widen the date range, area or sensor."
                + (f" {effect.message()}" if effect is not None and effect.removed else "")
            )
        else:
            st.success(f"{len(df)} results ({ss.get(S.QUERY)})")
        shown = SP.review_filter(df, ss)
        page = gallery.page_rows(shown, int(ss.get("results-page", 1) or 1))
        with above_map:
            heat = SP.render_heatmap(store, ss, shown, page)
    else:
        try:
            flt = controls.filters
            shown = _browse(
                uri, store.version, _key(flt), store, flt, controls.sort, controls.ascending
            )
        except ClaySearchError as e:
            st.error(str(e))
            shown = pd.DataFrame(columns=["chip_id"])
        if shown.empty:
            st.warning(
                "No chips match the filters."
                + (f" {effect.message()}" if effect is not None and effect.removed else "")
            )
        else:
            st.caption(
                f"Browsing {len(shown)} chips (of {len(store):,}). Mark positives, then Search."
            )

    if effect is not None and effect.removed and not (shown.empty):
        st.info(effect.message())

    map_col, side_col = st.columns([3, 1])
    with map_col:
        st.radio("Map click", CLICK_ACTIONS, key="click-action", horizontal=True)
        classes = _pred_classes(uri, store.version, store) if layers.has_predictions(shown) else {}
        q_range = layers.quality_range(info.get("quality")) if layers.has_quality(shown) else None
        by_quality = q_range is not None and st.toggle(
            "Colour by quality score",
            value=False,
            key="color-by-quality",
            help="Fill each chip by its quality score (recon_error, the model's reconstruction "
            "error): green is good, red the store's worst 5 % (cloudy, broken or unusual chips).",
        )
        by_class = (
            bool(classes)
            and st.toggle(
                "Colour by predicted class",
                value=True,
                key="color-by-class",
                disabled=by_quality,  # kept (not reset) while the quality colouring is on
            )
            and not by_quality
        )
        frame = layers.footprint_frame(
            shown,
            S.labels(ss),
            imagery=controls.imagery,
            class_fill=classes if by_class else None,
            quality=q_range if by_quality else None,
        )
        bounds = layers.extent(frame)  # the map fits what is shown
        focus = ss.get(gallery.FOCUS)
        if focus and focus in set(frame["chip_id"]):  # "Map" on a card: zoom to that chip
            bounds = layers.zoom_box(frame[frame["chip_id"] == focus], factor=3.0)
        if res is not None:
            frame = _with_examples(frame, store, shown)
        if frame.empty and not shown.empty:
            st.info("These chips have no georeference; use the gallery below.")
        ovs = _overviews(uri, store.version, store) if controls.imagery else None
        args = map_component.map_args(
            frame,
            bounds=bounds,
            fit_key=f"{ss.get(S.QUERY)}|{controls.filters.describe()}|{len(frame)}|{focus}",
            overviews=ovs.for_map if ovs is not None else (),
            thumbs=map_component.thumbnails(SP.with_images(shown, heat))
            if controls.imagery
            else (),
            grid=layers.grid_paths(bounds),
            basemap_url=controls.basemap_url,
            drawn=ss.get(S.DRAWN),
        )
        map_component.render_map(args, key=MAP_KEY)
        if by_class:
            st.markdown(layers.legend_html(classes), unsafe_allow_html=True)
        if by_quality and q_range is not None:
            unscored = int((info.get("quality") or {}).get("unscored") or 0)
            st.markdown(layers.quality_legend_html(q_range, unscored), unsafe_allow_html=True)
        if ovs is not None:
            st.caption(ovs.describe() + "; chip thumbnails appear in place when you zoom in.")
    with side_col:
        render_labels_panel(store)
        SP.label_area_buttons(store, ss)
        SP.render_session_panel(store, ss, settings)

    reviewing = res is not None and ss.get(SP.ROUND) is not None
    gallery.render_gallery(
        shown,
        ss,
        key="results" if res is not None else "browse",
        review=reviewing,
        correction_weight=settings.correction_weight,
        images=heat,
    )
    if reviewing:
        SP.render_active(store, ss, gallery.render_gallery)
    if res is not None and df is not None and not df.empty:
        render_results_footer(res, df)
        if reviewing:
            SP.render_detections_export(store, ss)


def _with_examples(frame: pd.DataFrame, store: Any, shown: pd.DataFrame) -> pd.DataFrame:
    """Add the labelled chips that are not in the results (outlines) to the map frame."""
    lab = S.labels(st.session_state)
    missing = [c for c in lab if c not in set(shown["chip_id"])][:MAX_EXAMPLES_ON_MAP]
    if not missing:
        return frame
    try:
        extra = store.get(missing).to_pandas()
    except ClaySearchError:  # a label from another store version: nothing to draw
        return frame
    return pd.concat([layers.examples_frame(extra, lab), frame], ignore_index=True)


def _sensor_names(info: dict[str, Any]) -> list[str]:
    s = info.get("sensors")
    if isinstance(s, dict):
        return [str(k) for k in s]
    if isinstance(s, list | tuple):
        return [str(x) for x in s]
    return []


if __name__ == "__main__":
    main()
