"""The labelling session in the app: classifier settings, rounds through ``clay_search.session``,
detection review (confidence slider, confirm/reject with a correction weight), polygon and
GeoJSON labelling, the session history, session files and the detections export.

The app keeps its labels in ``state.labels`` (chip id -> +1/-1, what the gallery and map
toggle); each round copies them, with their weights and provenance, into one
:class:`clay_search.session.Session` kept in the session state.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import streamlit as st

from clay_search.app import state as S
from clay_search.errors import ClaySearchError
from clay_search.session import (
    CLASSIFIERS,
    NEGATIVE_STRATEGIES,
    Label,
    Session,
    detection_polygons,
)

SESSION = "session"  # clay_search.session.Session
ROUND = "round"  # the last RoundResult (of a Refine round), or None
WEIGHTS = "label-weights"  # chip id -> weight (rejected detections weigh more)
HOW = "label-how"  # chip id -> how it was labelled (click, gallery, polygon, geojson, review)

CLASSIFIER_NAMES = {"logreg": "Logistic regression", "lightgbm": "Gradient-boosted trees"}
NEGATIVE_NAMES = {
    "random": "Random background",
    "kmeans": "Diverse (k-means)",
    "hard": "Hard (last round's unlabelled)",
}


@dataclass(frozen=True)
class SessionSettings:
    """What the sidebar chose for the classifier rounds."""

    classifier: str = "logreg"
    negatives: str = "random"
    negatives_per_positive: int = 10
    correction_weight: float = 3.0


def render_settings() -> SessionSettings:
    """Classifier, negatives and correction weight (sidebar)."""
    st.subheader("Classifier (Refine)")
    classifier = st.selectbox(
        "Classifier", CLASSIFIERS, format_func=CLASSIFIER_NAMES.__getitem__, key="s-classifier"
    )
    negatives = st.selectbox(
        "Background negatives",
        NEGATIVE_STRATEGIES,
        format_func=NEGATIVE_NAMES.__getitem__,
        key="s-negatives",
        help="Chips used as negatives besides yours: random chips, one chip per k-means cluster "
        "of the store (its variety), or random plus the chips the last round showed that you "
        "left unlabelled.",
    )
    per = int(st.number_input("Background per positive", 0, 100, 10, key="s-per-positive"))
    weight = float(
        st.number_input(
            "Weight of a rejected detection",
            1.0,
            20.0,
            3.0,
            0.5,
            key="s-correction",
            help="A detection you mark Neg teaches the classifier this much more than a label.",
        )
    )
    # Non-empty options and the default index 0: a selectbox always returns one of them.
    assert classifier is not None and negatives is not None
    return SessionSettings(classifier, negatives, per, weight)


def note_label(ss: MutableMapping[str, Any], chip_id: str, how: str, weight: float = 1.0) -> None:
    """Remember how ``chip_id`` was labelled (and its weight) for the next round."""
    ss.setdefault(HOW, {})[chip_id] = how
    ss.setdefault(WEIGHTS, {})[chip_id] = float(weight)


def current_session(ss: MutableMapping[str, Any], store: Any, settings: SessionSettings) -> Session:
    """The session for ``store`` with the app's labels and the chosen settings."""
    s = ss.get(SESSION)
    if not isinstance(s, Session) or s.model_id != store.model_id:
        s = Session.start(store)
        ss[SESSION] = s
    s.classifier, s.negatives = settings.classifier, settings.negatives
    s.negatives_per_positive = settings.negatives_per_positive
    s.correction_weight = settings.correction_weight
    weights, hows = ss.get(WEIGHTS, {}), ss.get(HOW, {})
    old = s.labels
    s.labels = {
        c: Label(
            c,
            1 if v == S.POSITIVE else 0,
            float(weights.get(c, 1.0)),
            str(hows.get(c, "click")),
            old[c].round if c in old else len(s.rounds),
        )
        for c, v in S.labels(ss).items()
    }
    return s


def run_round(ss: MutableMapping[str, Any], store: Any, settings: SessionSettings, k: int,
              filters: Any) -> tuple[Any, str]:  # fmt: skip
    """One Refine round: (Results, description). Keeps the RoundResult for review/export."""
    s = current_session(ss, store, settings)
    rnd = s.run_round(store, k=k, filters=filters)
    ss[ROUND] = rnd
    r = rnd.record
    desc = (
        f"round {r.round}: {CLASSIFIER_NAMES[r.classifier].lower()} on {r.positives} positive, "
        f"{r.negatives_labelled} negative + {r.background} {r.negatives} background"
    )
    return rnd.results, desc


def metrics_text(metrics: dict[str, Any]) -> str:
    """The spatial cross-validation of a round in one phrase."""
    if metrics.get("precision") is None:
        return f"spatial CV: {metrics.get('note', 'not available')}"
    return (
        f"spatial CV over {metrics['folds']} location folds: precision "
        f"{metrics['precision']:.2f}, recall {metrics['recall']:.2f}, average precision "
        f"{metrics['average_precision']:.2f}"
    )


def review_filter(df: pd.DataFrame, ss: MutableMapping[str, Any]) -> pd.DataFrame:
    """Detection review after a Refine round: a confidence slider; the results above it."""
    rnd = ss.get(ROUND)
    if rnd is None or "score" not in df.columns or df.empty:
        return df
    thr = float(
        st.slider(
            "Confidence (detections at or above)",
            0.0,
            1.0,
            0.5,
            0.01,
            key="confidence",
            help="Results scoring at least this are drawn and paged below. Confirm a detection "
            "with Pos, reject it with Neg (it counts as a weighted negative next round).",
        )
    )
    above = df[df["score"] >= thr]
    total = int((rnd.scores >= thr).sum())
    st.caption(
        f"{len(above)} of the {len(df)} results score at least {thr:.2f} "
        f"({total:,} chips in the filter do; the detections export merges all of them). "
        + metrics_text(rnd.metrics)
    )
    return above


HEATMAP = "s-heatmap"  # the "where in the chip" checkbox


@st.cache_data(max_entries=32, show_spinner="Patch heatmaps...")
def _heat_pngs(
    uri: str, version: int, positives: tuple[str, ...], ids: tuple[str, ...], _store: Any
) -> dict[str, bytes]:
    from clay_search.patches import heatmap_png, patch_similarity, patch_tokens

    query = patch_tokens(_store, list(positives))
    tokens = patch_tokens(_store, list(ids))
    heat = patch_similarity(query, tokens)
    thumbs = _store.get(list(ids)).to_arrow().column("thumbnail").to_pylist()
    return {c: heatmap_png(t, h) for c, t, h in zip(ids, thumbs, heat, strict=True) if t}


def render_heatmap(store: Any, ss: MutableMapping[str, Any], shown: pd.DataFrame,
                   page: pd.DataFrame) -> dict[str, bytes]:  # fmt: skip
    """ "Where in the chip": for the results on the gallery's page, the similarity of each patch
    to the positives' patch tokens (``clay_search.patches``) drawn over the thumbnail; chip id
    -> PNG (empty when off or impossible, with the reason in a caption)."""
    if shown.empty or "score" not in shown.columns:
        return {}
    on = st.checkbox(
        "Where in the chip: patch heatmap",
        key=HEATMAP,
        help="Red patches look most like your positives (patch-token similarity). Drawn over "
        "the gallery's thumbnails and the map's in-place images of this page.",
    )
    pos = [c for c, v in S.labels(ss).items() if v == S.POSITIVE]
    if not on:
        return {}
    if not pos:
        st.caption("Patch heatmap: mark a positive first (the heat is similarity to it).")
        return {}
    ids = tuple(str(c) for c in page["chip_id"])
    try:
        return _heat_pngs(str(store.path), int(store.version), tuple(pos[:8]), ids, store)
    except ClaySearchError as e:
        st.caption(f"Patch heatmap: {e}")
        return {}


def with_images(df: pd.DataFrame, images: dict[str, bytes]) -> pd.DataFrame:
    """``df`` with the thumbnails of ``images``' chips replaced (what the map draws in place)."""
    if not images or df.empty or "thumbnail" not in df.columns:
        return df
    out = df.copy()
    out["thumbnail"] = [images.get(str(c), t) for c, t in zip(out["chip_id"], out["thumbnail"],
                                                              strict=True)]  # fmt: skip
    return out


ACTIVE = "s-active"  # the "least sure" checkbox
ACTIVE_COUNT = 12


def uncertain_frame(
    store: Any, ss: MutableMapping[str, Any], n: int = ACTIVE_COUNT
) -> pd.DataFrame:
    """The last round's ``n`` unlabelled chips the classifier is least sure about (score
    nearest 0.5), least sure first, as gallery rows with their scores; empty without a round."""
    rnd = ss.get(ROUND)
    if rnd is None:
        return pd.DataFrame(columns=["chip_id"])
    ids, scores = rnd.uncertain(n, exclude=S.labels(ss))
    if not len(ids):
        return pd.DataFrame(columns=["chip_id"])
    df = store.get(list(ids)).to_pandas()
    df["score"] = scores
    df["rank"] = range(1, len(df) + 1)
    return df


def render_active(store: Any, ss: MutableMapping[str, Any], render_gallery: Any) -> None:
    """Active learning, optional: the chips the classifier is least sure about, to label next
    (their labels are recorded as ``active``)."""
    if ss.get(ROUND) is None:
        return
    on = st.checkbox(
        "Label next: the chips the classifier is least sure about",
        key=ACTIVE,
        help="Active learning: the unlabelled chips scoring nearest 0.5. A label on one of "
        "these teaches the next round more than a label on a confident result.",
    )
    if not on:
        return
    try:
        df = uncertain_frame(store, ss)
    except ClaySearchError as e:
        st.caption(f"Least sure chips: {e}")
        return
    if df.empty:
        st.caption("Every scored chip is labelled.")
        return
    st.caption(
        f"The {len(df)} least sure chips of round {ss[ROUND].record.round} (score nearest "
        "0.5): mark them Pos or Neg, then Refine."
    )
    render_gallery(df, ss, key="active", how="active")


def render_detections_export(store: Any, ss: MutableMapping[str, Any]) -> None:
    """Download the detections above the confidence threshold merged into polygons."""
    rnd = ss.get(ROUND)
    if rnd is None:
        return
    thr = float(ss.get("confidence", 0.5))

    def data(fmt: str) -> bytes:
        gdf = detection_polygons(store, rnd, thr)
        with tempfile.TemporaryDirectory(prefix="clay-detections-") as tmp:
            path = Path(tmp) / f"d.{fmt}"
            if fmt == "parquet":
                gdf.to_parquet(path)
            else:
                gdf.to_file(path, driver="GeoJSON")
            return path.read_bytes()

    c1, c2, _ = st.columns([1, 1, 4])
    for col, fmt, label in ((c1, "geojson", "GeoJSON"), (c2, "parquet", "GeoParquet")):
        col.download_button(
            f"Detections {label}",
            data=functools.partial(data, fmt),
            file_name=f"clay-search-detections.{fmt}",
            mime="application/geo+json" if fmt == "geojson" else "application/vnd.apache.parquet",
            key=f"dl-det-{fmt}",
            on_click="ignore",
            help="Chips at or above the confidence threshold; touching chips merged into one "
            "polygon with chip count and score statistics.",
        )


def label_area_buttons(store: Any, ss: MutableMapping[str, Any]) -> None:
    """Label every chip in the shape drawn on the map."""
    drawn = ss.get(S.DRAWN)
    if not drawn:
        return
    try:
        ids = store.chips(geometry=drawn).chip_ids
    except ClaySearchError as e:
        st.caption(f"Drawn area: {e}")
        return
    st.caption(f"Drawn area: {len(ids)} chip(s)")
    c1, c2 = st.columns(2)
    for col, value, word in ((c1, S.POSITIVE, "positive"), (c2, S.NEGATIVE, "negative")):
        col.button(
            f"All {word}",
            key=f"area-{word[:3]}",
            on_click=_label_many,
            args=(ids, value, "polygon"),
        )


def _label_many(ids: list[str], value: int, how: str) -> None:
    ss = cast("MutableMapping[str, Any]", st.session_state)  # str keys
    for c in ids:
        S.set_label(ss, c, value)
        note_label(ss, c, how)
    word = "positive" if value == S.POSITIVE else "negative"
    ss[S.NOTICE] = ("success", f"Labelled {len(ids)} chip(s) {word}.")


def _label_geojson(store: Any) -> None:
    ss = st.session_state
    f = ss.get("labels-geojson")
    if f is None:
        return
    from clay_search.session import chips_under, geojson_geometries

    try:
        import json

        ids = chips_under(store, geojson_geometries(json.loads(f.getvalue())))
    except (ClaySearchError, ValueError) as e:
        ss[S.NOTICE] = ("error", f"Could not label from {f.name}: {e}")
        return
    _label_many(ids, S.POSITIVE, "geojson")
    ss[S.NOTICE] = ("success", f"{f.name}: {len(ids)} chip(s) under its features are positives.")


def render_session_panel(
    store: Any, ss: MutableMapping[str, Any], settings: SessionSettings
) -> None:
    """History of the rounds, bulk labelling from GeoJSON, save/open a session file."""
    with st.expander("Session: history, GeoJSON labels, save / open"):
        rounds = ss.get(S.ROUNDS) or []
        if rounds:
            st.dataframe(pd.DataFrame(rounds), hide_index=True)
        else:
            st.caption("No rounds yet: label chips, then Search or Refine.")
        st.file_uploader(
            "Label from GeoJSON (chips under its points / polygons become positives)",
            type=["geojson", "json"],
            key="labels-geojson",
            on_change=_label_geojson,
            args=(store,),
        )
        if S.labels(ss):
            c1, c2 = st.columns(2)
            for col, fmt, label in ((c1, "parquet", "GeoParquet"), (c2, "geojson", "GeoJSON")):
                col.download_button(
                    f"Save session ({label})",
                    data=functools.partial(_session_bytes, store, ss, settings, fmt),
                    file_name=f"clay-search-session.{fmt}",
                    key=f"dl-session-{fmt}",
                    on_click="ignore",
                )
        st.file_uploader(
            "Open a session (GeoParquet / GeoJSON)",
            type=["parquet", "geojson", "json"],
            key="session-file",
            on_change=_open_session,
            args=(store,),
        )


def _session_bytes(
    store: Any, ss: MutableMapping[str, Any], settings: SessionSettings, fmt: str
) -> bytes:
    s = current_session(ss, store, settings)
    with tempfile.TemporaryDirectory(prefix="clay-session-") as tmp:
        return s.save(Path(tmp) / f"session.{fmt}", store).read_bytes()


def _open_session(store: Any) -> None:
    ss = cast("MutableMapping[str, Any]", st.session_state)  # str keys
    f = ss.get("session-file")
    if f is None:
        return
    suffix = Path(f.name).suffix or ".parquet"
    with tempfile.TemporaryDirectory(prefix="clay-session-") as tmp:
        path = Path(tmp) / f"session{suffix}"
        path.write_bytes(f.getvalue())
        try:
            s, notes = Session.load(path, store)
        except ClaySearchError as e:
            ss[S.NOTICE] = ("error", f"Could not open {f.name}: {e}")
            return
    ss[SESSION] = s
    S.clear_labels(ss)
    for c, lab in s.labels.items():
        S.set_label(ss, c, S.POSITIVE if lab.label == 1 else S.NEGATIVE)
        note_label(ss, c, lab.how, lab.weight)
    for key, name in (("s-classifier", s.classifier), ("s-negatives", s.negatives)):
        ss[key] = name
    ss[S.ROUNDS] = [round_row(r) for r in s.rounds]
    text = f"Opened {f.name}: {len(s.labels)} labels, {len(s.rounds)} round(s)."
    ss[S.NOTICE] = ("warning" if notes else "success", " ".join([text, *notes]))


def round_row(r: Any) -> dict[str, Any]:
    """One row of the history table for a session round."""
    m = r.metrics or {}
    return {
        "round": r.round,
        "kind": "refine",
        "classifier": r.classifier,
        "negatives": r.negatives,
        "positives": r.positives,
        "negatives_labelled": r.negatives_labelled,
        "background": r.background,
        "cv_precision": m.get("precision"),
        "cv_recall": m.get("recall"),
        "cv_ap": m.get("average_precision"),
        "results": r.results,
        "seconds": r.seconds,
    }
