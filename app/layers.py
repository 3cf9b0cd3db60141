"""Map layers: chip footprints as pydeck polygons, coloured by score and outlined by label.

Without a basemap (the default, so the map draws offline) the footprints sit on a plain
background with a light lon/lat grid; with ``basemap=True`` Carto's tiles are drawn (needs
network).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pydeck as pdk

LAYER_ID = "chips"
FRAME_COLUMNS = ["chip_id", "polygon", "fill", "line", "line_px", "tip"]
#: Streamlit's deck.gl frontend draws no basemap for this style value; without it, it falls
#: back to Carto's tiles (a network fetch that fails offline).
NO_BASEMAP_STYLE = "__MAP_STYLE__"
GRID_LAYER_ID = "grid"

# A dark-blue -> teal -> yellow ramp (low -> high score), as RGB stops.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float
)
_NEUTRAL = [120, 144, 156, 110]
_POS_LINE = [0, 200, 83, 255]
_NEG_LINE = [229, 57, 53, 255]


def score_colors(scores: np.ndarray, alpha: int = 190) -> list[list[int]]:
    """RGBA colours for ``scores`` on the ramp, min -> max of the scores given."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return []
    finite = np.isfinite(s)
    lo, hi = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 1.0)
    t = np.full_like(s, 0.5) if hi <= lo else (s - lo) / (hi - lo)
    t = np.where(finite, np.clip(t, 0, 1), 0.0) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[:, None]
    rgb = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    return [[int(r), int(g), int(b), alpha] for r, g, b in rgb.round()]


def _polygons(df: pd.DataFrame) -> list[list[list[float]] | None]:
    """Outer rings [[lon, lat], ...] from WKB ``geometry``, else from the bounds columns."""
    import shapely

    n = len(df)
    rings: list[list[list[float]] | None] = [None] * n
    if "geometry" in df.columns:
        wkb = df["geometry"].to_numpy(dtype=object)
        has = np.array([isinstance(b, bytes | bytearray | memoryview) for b in wkb])
        if has.any():
            geoms = shapely.from_wkb(np.array([bytes(b) for b in wkb[has]], dtype=object))
            exteriors = shapely.get_exterior_ring(shapely.convex_hull(geoms))
            coords, idx = shapely.get_coordinates(exteriors, return_index=True)
            where = np.flatnonzero(has)
            splits = np.flatnonzero(np.diff(idx)) + 1
            for k, part in zip(np.unique(idx), np.split(coords, splits), strict=True):
                if len(part) >= 3:
                    rings[where[k]] = part.round(7).tolist()
    if all(c in df.columns for c in ("minx", "miny", "maxx", "maxy")):
        b = df[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=float)
        for i in range(n):
            if rings[i] is None and np.isfinite(b[i]).all():
                x0, y0, x1, y1 = b[i]
                rings[i] = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return rings


def footprint_frame(df: pd.DataFrame, labels: Mapping[str, int]) -> pd.DataFrame:
    """One row per chip with a footprint: polygon, fill and line colours, tooltip text.

    Fill follows ``score`` when the frame has one (results), else a neutral grey (browsing).
    Outline: green for positives, red for negatives.
    """
    if df.empty:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    rings = _polygons(df)
    scored = "score" in df.columns
    fills = score_colors(df["score"].to_numpy()) if scored else [_NEUTRAL] * len(df)
    rows = []
    for i, (chip_id, ring) in enumerate(zip(df["chip_id"].astype(str), rings, strict=True)):
        if ring is None:
            continue
        lab = labels.get(chip_id)
        # unlabelled chips are outlined in their own colour, so tiny footprints keep it
        line = _POS_LINE if lab == 1 else _NEG_LINE if lab == -1 else [*fills[i][:3], 255]
        tip = chip_id
        if scored:
            tip += f" | score {float(df['score'].iat[i]):.3f}"
        if "label" in df.columns and isinstance(df["label"].iat[i], str):
            tip += f" | {df['label'].iat[i]}"
        if lab is not None:
            tip += " | positive" if lab == 1 else " | negative"
        rows.append(
            {
                "chip_id": chip_id,
                "polygon": ring,
                "fill": fills[i],
                "line": line,
                "line_px": 3 if lab is not None else 1,
                "tip": tip,
            }
        )
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def examples_frame(df: pd.DataFrame, labels: Mapping[str, int]) -> pd.DataFrame:
    """Labelled chips that are not among the results: outlines only, so the map shows them."""
    frame = footprint_frame(df.drop(columns=["score"], errors="ignore"), labels)
    if not frame.empty:
        frame["fill"] = [[0, 0, 0, 0]] * len(frame)
        frame["tip"] = frame["tip"] + " (example)"
    return frame


def extent(frame: pd.DataFrame) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of the polygons in a footprint frame, or None if empty."""
    if frame.empty:
        return None
    pts = np.array([p for ring in frame["polygon"] for p in ring], dtype=float)
    return (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())


def view_state(bounds: tuple[float, float, float, float] | None) -> pdk.ViewState:
    """A view that fits ``bounds`` (the whole world when None)."""
    if bounds is None:
        return pdk.ViewState(latitude=20.0, longitude=0.0, zoom=1)
    w, s, e, n = bounds
    span = max(e - w, (n - s) * 1.3, 1e-4)
    zoom = max(0.0, min(16.0, math.log2(360.0 / span) - 0.3))
    return pdk.ViewState(latitude=(s + n) / 2, longitude=(w + e) / 2, zoom=zoom)


def _grid(bounds: tuple[float, float, float, float] | None) -> pd.DataFrame:
    """Lon/lat lines around ``bounds`` so a map without basemap still shows where it is."""
    if bounds is None:
        w, s, e, n, step = -180.0, -80.0, 180.0, 80.0, 30.0
    else:
        w, s, e, n = bounds
        span = max(e - w, n - s, 1e-3)
        step = 10 ** math.floor(math.log10(span / 2))
        w, s = math.floor(w / step - 1) * step, math.floor(s / step - 1) * step
        e, n = math.ceil(e / step + 1) * step, math.ceil(n / step + 1) * step
    lines = [{"path": [[x, s], [x, n]]} for x in np.arange(w, e + step / 2, step)]
    lines += [{"path": [[w, y], [e, y]]} for y in np.arange(s, n + step / 2, step)]
    return pd.DataFrame(lines)


def build_deck(
    frame: pd.DataFrame,
    *,
    basemap: bool = False,
    height: int = 480,
    bounds: tuple[float, float, float, float] | None = None,
) -> pdk.Deck:
    """The pydeck map of the footprints in ``frame`` (see :func:`footprint_frame`).

    The view fits ``bounds`` (default: the extent of the whole frame).
    """
    bounds = bounds or extent(frame)
    layers = []
    if not basemap:
        layers.append(
            pdk.Layer(
                "PathLayer",
                data=_grid(bounds),
                id=GRID_LAYER_ID,
                get_path="path",
                get_color=[160, 160, 160, 90],
                width_min_pixels=1,
                pickable=False,
            )
        )
    layers.append(
        pdk.Layer(
            "PolygonLayer",
            data=frame,
            id=LAYER_ID,
            get_polygon="polygon",
            get_fill_color="fill",
            get_line_color="line",
            get_line_width="line_px",  # not "width": deck.gl reads that as the viewport
            line_width_units="pixels",
            line_width_min_pixels=1,
            stroked=True,
            filled=True,
            pickable=True,
            auto_highlight=True,
        )
    )
    deck = pdk.Deck(
        layers=layers,
        initial_view_state=view_state(bounds),
        tooltip={"text": "{tip}"},
        height=height,
        map_provider="carto" if basemap else None,
        map_style="light" if basemap else None,
    )
    if not basemap:
        deck.map_style = NO_BASEMAP_STYLE
    return deck


def picked_chip(selection: Any) -> str | None:
    """The chip id of the object selected on the map (pydeck selection state), if any."""
    try:
        objects = selection["selection"]["objects"]
    except (KeyError, TypeError, AttributeError):
        return None
    for obj in (objects or {}).get(LAYER_ID, []) or []:
        chip_id = obj.get("chip_id") if isinstance(obj, Mapping) else None
        if chip_id:
            return str(chip_id)
    return None
