"""Map data: chip footprints as polygons coloured by score (or by predicted class or by quality
score, with a legend) and outlined by label, and a light lon/lat grid. The map component
(``map_component.py``) draws them over the offline overview imagery
(``clay_search.overviews``) or an online tile basemap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

FRAME_COLUMNS = ["chip_id", "polygon", "fill", "line", "line_px", "tip"]

# A dark-blue -> teal -> yellow ramp (low -> high score), as RGB stops.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float
)
_NEUTRAL = [120, 144, 156, 110]
_POS_LINE = [0, 200, 83, 255]
_NEG_LINE = [229, 57, 53, 255]


# Categorical colours for predicted classes (Tableau 10 + 2), assigned in sorted class order.
_CLASS_PALETTE = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    [174, 199, 232], [255, 187, 120],
]  # fmt: skip


def class_colors(classes: Iterable[str]) -> dict[str, list[int]]:
    """RGB colour per class name, in sorted order (the same classes always get the same
    colours; more than 12 classes reuse the palette)."""
    names = sorted({str(c) for c in classes if c is not None})
    return {c: _CLASS_PALETTE[i % len(_CLASS_PALETTE)] for i, c in enumerate(names)}


def has_predictions(df: pd.DataFrame) -> bool:
    """Whether ``df`` carries predicted classes (``clay-search predict --store``)."""
    return "pred_label" in df.columns and bool(df["pred_label"].notna().any())


def legend_html(colors: Mapping[str, list[int]], title: str = "Predicted class") -> str:
    """A small HTML legend (swatch + class name per class) for ``st.markdown``."""
    import html

    items = "".join(
        f'<span style="margin-right:12px;white-space:nowrap"><span style="display:inline-block;'
        f"width:12px;height:12px;background:rgb({r},{g},{b});border-radius:2px;"
        f'margin-right:4px;vertical-align:middle"></span>{html.escape(name)}</span>'
        for name, (r, g, b) in colors.items()
    )
    return f'<div class="clay-legend"><b>{html.escape(title)}:</b> {items}</div>'


# Quality score ramp (low recon_error = good -> high = bad): green -> yellow -> red.
_QUALITY_RAMP = np.array([[26, 152, 80], [166, 217, 106], [254, 224, 139], [244, 109, 67],
                          [215, 48, 39]], dtype=float)  # fmt: skip
QUALITY_COLUMN = "recon_error"


def has_quality(df: pd.DataFrame) -> bool:
    """Whether ``df`` carries quality scores (``recon_error`` written at ingest)."""
    return QUALITY_COLUMN in df.columns and bool(df[QUALITY_COLUMN].notna().any())


def quality_range(quality: Mapping | None) -> tuple[float, float] | None:
    """The colour range of the quality ramp from the store's summary
    (``Store.overview()["quality"]``): the best score -> the 95th percentile, so the worst
    5 % of the store are full red wherever they are shown. None without scores."""
    if not quality or not quality.get("scored"):
        return None
    lo, hi = float(quality["min"]), float(quality["p95"])
    return (lo, hi if hi > lo else lo + 1e-6)


def quality_colors(
    values: np.ndarray, lo_hi: tuple[float, float], alpha: int = 200
) -> list[list[int]]:
    """RGBA colours of quality scores on the green -> red ramp over ``lo_hi``; chips without
    a score (NaN) are neutral grey."""
    v = np.asarray(values, dtype=float)
    lo, hi = lo_hi
    t = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1) * (len(_QUALITY_RAMP) - 1)
    t = np.where(np.isfinite(v), t, 0.0)
    i = np.minimum(t.astype(int), len(_QUALITY_RAMP) - 2)
    f = (t - i)[:, None]
    rgb = (_QUALITY_RAMP[i] * (1 - f) + _QUALITY_RAMP[i + 1] * f).round()
    return [
        [int(r), int(g), int(b), alpha] if ok else [*_NEUTRAL[:3], alpha]
        for (r, g, b), ok in zip(rgb, np.isfinite(v), strict=True)
    ]


def quality_legend_html(lo_hi: tuple[float, float], unscored: int = 0) -> str:
    """The quality colouring's legend: the ramp from the best score to the 95th percentile."""
    lo, hi = lo_hi
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in _QUALITY_RAMP.astype(int))
    bar = (
        '<span style="display:inline-block;width:120px;height:12px;border-radius:2px;'
        f'vertical-align:middle;background:linear-gradient(to right, {stops})"></span>'
    )
    grey = (
        f'; <span style="display:inline-block;width:12px;height:12px;background:rgb'
        f'({_NEUTRAL[0]},{_NEUTRAL[1]},{_NEUTRAL[2]});border-radius:2px;vertical-align:middle">'
        f"</span> no score ({unscored:,} chips in the store)"
        if unscored
        else ""
    )
    return (
        '<div class="clay-legend clay-quality-legend"><b>Quality score (recon_error):</b> '
        f"{lo:.3f} (good) {bar} {hi:.3f} and worse (the store's worst 5 %: cloudy, broken or "
        f"unusual chips){grey}</div>"
    )


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


def footprint_frame(
    df: pd.DataFrame,
    labels: Mapping[str, int],
    *,
    imagery: bool = False,
    class_fill: Mapping[str, list[int]] | None = None,
    quality: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """One row per chip with a footprint: polygon, fill and line colours, tooltip text.

    Fill follows ``score`` when the frame has one (results), else a neutral grey (browsing);
    with ``class_fill`` (:func:`class_colors`) it follows ``pred_label`` instead (chips without a
    prediction stay grey) and the tooltip gives the class and ``pred_score``. With ``quality``
    (:func:`quality_range`) it follows the quality score ``recon_error`` on a green -> red ramp
    (chips without a score grey); that wins over ``class_fill``.
    Outline: green for positives, red for negatives. With ``imagery`` (drawn under the
    footprints) browsing fills nothing and scores fill half-transparent, so the image shows.
    """
    if df.empty:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    rings = _polygons(df)
    scored = "score" in df.columns and bool(df["score"].notna().any())  # browse: no scores
    by_quality = quality is not None and has_quality(df)
    by_class = not by_quality and class_fill is not None and has_predictions(df)
    if by_quality and quality is not None:
        fills = quality_colors(df[QUALITY_COLUMN].to_numpy(dtype=float), quality,
                               alpha=150 if imagery else 210)  # fmt: skip
    elif by_class and class_fill is not None:
        alpha = 130 if imagery else 200
        grey = [*_NEUTRAL[:3], 0 if imagery else _NEUTRAL[3]]
        fills = [
            [*class_fill[str(p)], alpha] if isinstance(p, str) and str(p) in class_fill else grey
            for p in df["pred_label"]
        ]
    elif scored:
        fills = score_colors(df["score"].to_numpy(), alpha=110 if imagery else 190)
    else:
        fills = [[*_NEUTRAL[:3], 0 if imagery else _NEUTRAL[3]]] * len(df)

    def col(name: str) -> list:
        """A column as a plain list (None where absent), read once, not per row."""
        if name not in df.columns:
            return [None] * len(df)
        return [None if (v is None or v is pd.NA or v != v) else v for v in df[name].tolist()]

    score, pred, pred_score = col("score"), col("pred_label"), col("pred_score")
    recon, label = col(QUALITY_COLUMN), col("label")
    rows = []
    for i, (chip_id, ring) in enumerate(zip(df["chip_id"].astype(str), rings, strict=True)):
        if ring is None:
            continue
        lab = labels.get(chip_id)
        # unlabelled chips are outlined in their own colour, so tiny footprints keep it
        line = _POS_LINE if lab == 1 else _NEG_LINE if lab == -1 else [*fills[i][:3], 255]
        tip = chip_id
        if scored:
            tip += f" | score {float(score[i]) if score[i] is not None else float('nan'):.3f}"
        if by_class and isinstance(pred[i], str):
            tip += f" | predicted {pred[i]}"
            if pred_score[i] is not None:
                tip += f" ({float(pred_score[i]):.2f})"
        if recon[i] is not None:
            tip += f" | recon_error {float(recon[i]):.3f}"
        if isinstance(label[i], str):
            tip += f" | {label[i]}"
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


def zoom_box(frame: pd.DataFrame, factor: float = 3.0) -> tuple[float, float, float, float] | None:
    """The extent of ``frame`` grown ``factor`` times around its centre (to zoom to a chip)."""
    box = extent(frame)
    if box is None:
        return None
    w, s, e, n = box
    cx, cy, hw, hh = (w + e) / 2, (s + n) / 2, (e - w) * factor / 2, (n - s) * factor / 2
    return (max(-180.0, cx - hw), max(-85.0, cy - hh), min(180.0, cx + hw), min(85.0, cy + hh))


def grid_paths(bounds: tuple[float, float, float, float] | None) -> list[list[list[float]]]:
    """Lon/lat lines around ``bounds`` so the map shows where it is even without imagery."""
    if bounds is None:
        w, s, e, n, step = -180.0, -80.0, 180.0, 80.0, 30.0
    else:
        w, s, e, n = bounds
        span = max(e - w, n - s, 1e-3)
        step = 10 ** math.floor(math.log10(span / 2))
        w = max(-180.0, math.floor(w / step - 10) * step)
        s = max(-85.0, math.floor(s / step - 10) * step)
        e = min(180.0, math.ceil(e / step + 10) * step)
        n = min(85.0, math.ceil(n / step + 10) * step)
    xs = [round(float(x), 9) for x in np.arange(w, e + step / 2, step)]
    ys = [round(float(y), 9) for y in np.arange(s, n + step / 2, step)]
    return [[[x, s], [x, n]] for x in xs] + [[[w, y], [e, y]] for y in ys]
