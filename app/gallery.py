"""The thumbnail gallery: one card per chip with its image, score and Positive/Negative toggles."""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import pandas as pd
import streamlit as st

from clay_search.app import state as S

PAGE_SIZE = 24
COLUMNS = 6


def _toggle(chip_id: str, value: int, how: str = "gallery", weight: float = 1.0) -> None:
    from clay_search.app.session_panel import note_label

    ss = st.session_state
    if S.toggle_label(ss, chip_id, value) is not None:
        note_label(ss, chip_id, how, weight if value == S.NEGATIVE else 1.0)


FOCUS = "focus"  # chip id the map zooms to


def _focus(chip_id: str) -> None:
    st.session_state[FOCUS] = chip_id


def card_caption(row: pd.Series, label: int | None) -> str:
    """Text under a thumbnail: rank and score (results), class label, chip id; then the
    acquisition date (or "undated"), the sensor and the quality score (``recon_error``, when
    stored) on a second line."""
    parts = []
    ranked = "score" in row and pd.notna(row["score"])  # a browse page has no ranking
    if ranked and "rank" in row and pd.notna(row["rank"]):
        parts.append(f"#{int(row['rank'])}")
    if "score" in row and pd.notna(row["score"]):
        parts.append(f"score {float(row['score']):.3f}")
    if "label" in row and isinstance(row["label"], str) and row["label"]:
        parts.append(row["label"])
    if label is not None:
        parts.append("POSITIVE" if label == S.POSITIVE else "NEGATIVE")
    parts.append(str(row["chip_id"])[:10])
    seen = []  # second line: when and by what
    when = row.get("datetime")
    seen.append(pd.Timestamp(when).strftime("%Y-%m-%d") if pd.notna(when) else "undated")
    if isinstance(row.get("sensor"), str) and row["sensor"]:
        seen.append(row["sensor"])
    q = row.get("recon_error")
    if q is not None and pd.notna(q):  # the quality score (higher: worse reconstructed)
        seen.append(f"recon {float(q):.3f}")
    return " | ".join(parts) + "  \n" + " | ".join(seen)


def page_rows(df: pd.DataFrame, page: int, page_size: int = PAGE_SIZE) -> pd.DataFrame:
    """Rows of ``df`` on 1-based ``page`` (clamped to the pages that exist)."""
    pages = max(1, math.ceil(len(df) / page_size))
    page = min(max(1, page), pages)
    return df.iloc[(page - 1) * page_size : page * page_size]


def render_gallery(
    df: pd.DataFrame,
    ss: MutableMapping[str, Any],
    *,
    key: str,
    review: bool = False,
    correction_weight: float = 1.0,
) -> None:
    """Draw ``df`` (rows with ``chip_id``, ``thumbnail`` and maybe ``score``) as cards.

    With ``review`` (detections of a Refine round) Pos confirms a detection and Neg rejects it:
    a negative weighted ``correction_weight``.
    """
    how = "review" if review else "gallery"
    if df.empty:
        return
    pages = max(1, math.ceil(len(df) / PAGE_SIZE))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}-page", width=160))
    rows = page_rows(df, page)
    labels = S.labels(ss)
    cols = st.columns(COLUMNS)
    for i, (_, row) in enumerate(rows.iterrows()):
        chip_id = str(row["chip_id"])
        lab = labels.get(chip_id)
        with cols[i % COLUMNS], st.container(border=True, key=f"card-{key}-{chip_id}"):
            thumb = row.get("thumbnail")
            if isinstance(thumb, bytes | bytearray) and thumb:
                st.image(bytes(thumb), width="stretch", output_format="PNG")  # lossless
            else:
                st.caption("(no thumbnail)")
            st.caption(card_caption(row, lab))
            left, mid, right = st.columns(3)
            left.button(
                "Pos",
                key=f"{key}-pos-{chip_id}",
                type="primary" if lab == S.POSITIVE else "secondary",
                on_click=_toggle,
                args=(chip_id, S.POSITIVE, how),
                help="Confirm: a positive (click again to clear)"
                if review
                else "Mark as positive (click again to clear)",
                width="stretch",
            )
            mid.button(
                "Map",
                key=f"{key}-zoom-{chip_id}",
                on_click=_focus,
                args=(chip_id,),
                help="Zoom the map to this chip (its image is drawn in place)",
                width="stretch",
            )
            right.button(
                "Neg",
                key=f"{key}-neg-{chip_id}",
                type="primary" if lab == S.NEGATIVE else "secondary",
                on_click=_toggle,
                args=(chip_id, S.NEGATIVE, how, correction_weight),
                help=f"Reject: a negative weighing {correction_weight:g} (click again to clear)"
                if review
                else "Mark as negative (click again to clear)",
                width="stretch",
            )
