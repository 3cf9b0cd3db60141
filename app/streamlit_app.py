"""clay-search: find features on a map by example (Streamlit script).

Run with ``clay-search app --store PATH`` (or ``streamlit run app/streamlit_app.py -- --store
PATH``, or with $CLAY_SEARCH_STORE). Uses only the Python API: ``clay_search.connect`` and the
Store / Results it returns.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pandas as pd
import streamlit as st

from clay_search.app import exports, gallery, layers
from clay_search.app import state as S
from clay_search.app.sidebar import Controls, render_filters, render_overview
from clay_search.app.store_access import (
    ENV_VAR,
    Opened,
    open_store,
    overview,
    store_uri,
    warm_up,
    weights_path,
)
from clay_search.app.upload import UploadError, validate_upload
from clay_search.errors import ClaySearchError

BROWSE_LIMIT = 2000  # chips drawn on the map before any search
MAX_EXAMPLES_ON_MAP = 200  # labelled chips outlined on the results map
TABLE_COLUMNS = ["rank", "score", "chip_id", "sensor", "datetime", "label", "source"]
CLICK_ACTIONS = ["Mark positive", "Mark negative", "Just show"]


@st.cache_resource(show_spinner=False, max_entries=4)
def _open(uri: str, weights: str | None, token: int) -> Opened:
    """Open a store once per (path, weights, reload token), shared by sessions."""
    opened = open_store(uri, weights)
    if opened.store is not None:
        warm_up(opened.store)
    return opened


@st.cache_resource(show_spinner=False, max_entries=16)
def _browse(uri: str, version: Any, filters_key: str, _store: Any, _kwargs: dict) -> pd.DataFrame:
    """Chips to show before a search: the filtered listing, at most BROWSE_LIMIT rows."""
    return _store.chips(limit=BROWSE_LIMIT, **_kwargs).to_pandas()


def _notice(level: str, message: str) -> None:
    st.session_state[S.NOTICE] = (level, message)


def run_query(kind: str, store: Any, controls: Controls) -> None:
    """Callback of Search / Refine / Search-with-upload: query the store, keep the results."""
    ss = st.session_state
    if controls.problem:
        _notice("error", f"Fix the filters first: {controls.problem}")
        return
    pos, neg = S.positives(ss), S.negatives(ss)
    kw = controls.filters.kwargs()
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
            res = store.search(positives=pos, negatives=neg, k=controls.k, **kw)
            desc = f"search: {len(pos)} positive, {len(neg)} negative"
        elif kind == "refine":
            if not pos:
                _notice(
                    "warning",
                    "Refine trains a classifier on your labels: mark at least one Positive "
                    "(and, better, some Negative) chips first.",
                )
                return
            res = store.refine(pos, neg, k=controls.k, **kw)
            desc = f"refine: classifier on {len(pos)} positive, {len(neg)} negative"
            if not neg:
                desc += " (random chips as background)"
        elif kind == "upload":
            chip = ss.get(S.UPLOAD)
            if chip is None:
                _notice("warning", "Upload a GeoTIFF or PNG chip first.")
                return
            tmp = chip.write_temp()
            sensor = ss.get("upload-sensor") or None
            bands = [b.strip() for b in (ss.get("upload-bands") or "").split(",") if b.strip()]
            res = store.search_image(
                str(tmp), k=controls.k, image_sensor=sensor, bands=bands or None, **kw
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
    ss[S.QUERY] = f"{desc}; {controls.filters.describe()}"
    S.record_round(ss, kind, len(df), seconds)


def _clear_results() -> None:
    st.session_state[S.RESULTS] = None
    st.session_state[S.RESULTS_DF] = None
    st.session_state[S.QUERY] = ""


def _on_map_select() -> None:
    """Map click: mark (or just show) the chip under the pointer."""
    ss = st.session_state
    chip_id = layers.picked_chip(ss.get("map"))
    if chip_id is None:
        return
    ss[S.PICKED] = chip_id
    action = ss.get("click-action", CLICK_ACTIONS[0])
    if action == CLICK_ACTIONS[0]:
        S.set_label(ss, chip_id, S.POSITIVE)
    elif action == CLICK_ACTIONS[1]:
        S.set_label(ss, chip_id, S.NEGATIVE)


def _restore_labels() -> None:
    f = st.session_state.get("labels-file")
    if f is None:
        return
    try:
        restored = S.parse_labels_json(f.getvalue())
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
            data=lambda fmt=fmt: exports.results_bytes(res, fmt),
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
    with st.sidebar:
        view = st.radio("View", ["Search", "Changes"], key="view", horizontal=True)
        render_overview(uri, info)
        if st.button("Reload store", key="reload"):
            _open.clear()
            _browse.clear()
            _clear_results()
            st.rerun()
        controls = render_filters(info, ss.get("view-bounds"))
    if len(store) == 0:
        st.info(
            f"The store at `{uri}` holds no chips yet. Add imagery with "
            f"`clay-search ingest SOURCE --store {uri}`, then press Reload store."
        )
        return
    if view == "Changes":
        from clay_search.app import changes_view

        changes_view.render(store, info, basemap=controls.basemap)
        return
    if controls.problem:
        st.error(f"Filter problem: {controls.problem}")

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
        args=("refine", store, controls),
        help="Train a classifier on the labelled chips and re-rank.",
        width="stretch",
    )
    b3.button("Clear results", key="clear-results", on_click=_clear_results, width="stretch")
    b4.markdown(f"**{len(pos)}** positive, **{len(neg)}** negative | {controls.filters.describe()}")

    with st.expander("Query by upload"):
        render_upload(store, controls, [n for n in _sensor_names(info)])

    res = ss.get(S.RESULTS)
    df = ss.get(S.RESULTS_DF)
    if res is not None and df is not None:
        if df.empty:
            st.warning(
                "No results: no chip passes the filters. Widen the date range, area or sensor."
            )
        else:
            st.success(f"{len(df)} results ({ss.get(S.QUERY)})")
        shown = df
    else:
        try:
            kw = controls.filters.kwargs() if not controls.problem else {}
            shown = _browse(uri, store.version, repr(sorted(kw.items())), store, kw)
        except ClaySearchError as e:
            st.error(str(e))
            shown = pd.DataFrame(columns=["chip_id"])
        if shown.empty:
            st.warning("No chips match the filters.")
        else:
            st.caption(
                f"Browsing {len(shown)} chips (of {len(store):,}). Mark positives, then Search."
            )

    map_col, side_col = st.columns([3, 1])
    with map_col:
        st.radio("Map click", CLICK_ACTIONS, key="click-action", horizontal=True)
        frame = layers.footprint_frame(shown, S.labels(ss))
        ss["view-bounds"] = bounds = layers.extent(frame)  # the map fits what is shown
        if res is not None:
            frame = _with_examples(frame, store, shown)
        if frame.empty and not shown.empty:
            st.info("These chips have no georeference; use the gallery below.")
        st.pydeck_chart(
            layers.build_deck(frame, basemap=controls.basemap, bounds=bounds),
            on_select=_on_map_select,
            selection_mode="single-object",
            key="map",
        )
    with side_col:
        render_labels_panel(store)

    gallery.render_gallery(shown, ss, key="results" if res is not None else "browse")
    if res is not None and df is not None and not df.empty:
        render_results_footer(res, df)


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
