"""The map: a small Streamlit component (deck.gl, bundled at build time, no CDN at run time).

It draws the overview images and chip thumbnails (``clay_search.overviews``:
``OverviewSet.for_map``, overlapping sources mosaicked into one image) under the chip
footprints, and has a toolbar: *Pick* (click a chip), *Box* and *Polygon* (draw an area to
filter by or to label the chips inside), *Use view* (send the current view as the area filter)
and *Clear drawing*. The frontend lives in ``app/map_frontend`` (``npm run build`` writes
``app/map_static/map.js``, which is committed and shipped in the package).

The value the component returns is the last event: ``{"event": "click", "chip_id", "lonlat"}``,
``{"event": "draw", "geometry"}`` (GeoJSON polygon), ``{"event": "view", "bounds", "zoom"}`` or
``{"event": "clear"}``, each with a growing ``seq``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

STATIC = Path(__file__).resolve().parent / "map_static"
#: Thumbnails sent to the map (drawn in place at high zoom): the first 50 shown chips (all of a
#: default k = 50 result list). Every rerun sends them as data URLs: 300 were 3.5 MB a rerun and
#: made the first page of a 100,000-chip store 13 s slower in the browser (docs/benchmarks.md).
MAX_THUMBNAILS = 50


@cache
def _component() -> Any:
    import streamlit.components.v1 as components

    return components.declare_component("clay_search_map", path=str(STATIC))


def data_url(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URL (what deck.gl's BitmapLayer loads offline)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class MapEvent:
    """One thing the person did on the map."""

    kind: str  # "click", "draw", "view", "clear"
    seq: int
    nonce: str = ""  # new for every page load of the map: (nonce, seq) identifies an event
    chip_id: str | None = None
    geometry: dict | None = None  # GeoJSON Polygon (draw)
    bounds: tuple[float, float, float, float] | None = None  # view

    @classmethod
    def parse(cls, value: Any) -> MapEvent | None:
        """The event in a component value, or None for no / malformed value."""
        if not isinstance(value, Mapping) or "event" not in value:
            return None
        try:
            kind, seq = str(value["event"]), int(value.get("seq") or 0)
        except (TypeError, ValueError):
            return None
        nonce = str(value.get("nonce") or "")
        if kind == "click" and value.get("chip_id"):
            return cls(kind, seq, nonce, chip_id=str(value["chip_id"]))
        if kind == "draw" and isinstance(value.get("geometry"), Mapping):
            return cls(kind, seq, nonce, geometry=dict(value["geometry"]))
        if kind == "view":
            try:
                w, s, e, n = (float(v) for v in value["bounds"])
            except (KeyError, TypeError, ValueError):
                return None
            return cls(kind, seq, nonce, bounds=(w, s, e, n))
        if kind == "clear":
            return cls(kind, seq, nonce)
        return None

    @property
    def key(self) -> tuple[str, int]:
        """What identifies this event (a rerun shows the same value again)."""
        return (self.nonce, self.seq)


def thumbnails(df: pd.DataFrame, limit: int = MAX_THUMBNAILS) -> list[dict]:
    """Thumbnails of the first ``limit`` chips of ``df`` with their lon/lat bounds."""
    cols = {"chip_id", "thumbnail", "minx", "miny", "maxx", "maxy"}
    if df.empty or not cols <= set(df.columns):
        return []
    out = []
    for row in df.head(limit).itertuples(index=False):
        thumb = row.thumbnail
        b = (row.minx, row.miny, row.maxx, row.maxy)
        if isinstance(thumb, bytes | bytearray) and thumb and all(pd.notna(v) for v in b):
            out.append(
                {
                    "chip_id": str(row.chip_id),
                    "bounds": [float(v) for v in b],
                    "image": data_url(bytes(thumb)),
                }
            )
    return out


def map_args(
    frame: pd.DataFrame,
    *,
    bounds: Sequence[float] | None,
    fit_key: str,
    overviews: Sequence[Any] = (),
    thumbs: Sequence[dict] = (),
    grid: Sequence[Sequence[Sequence[float]]] = (),
    basemap_url: str | None = None,
    drawn: dict | None = None,
    height: int = 520,
) -> dict[str, Any]:
    """The JSON arguments of the component (also what the tests read back).

    ``frame`` is a footprint frame (``layers.footprint_frame``); ``overviews`` are
    :class:`clay_search.overviews.Overview`; the view is refitted to ``bounds`` only when
    ``fit_key`` changes (so a rerun keeps where the person panned to).
    """
    chips = frame[["chip_id", "polygon", "fill", "line", "line_px", "tip"]].to_dict("records")
    return {
        "chips": chips,
        "overviews": [{"bounds": list(o.bounds), "image": data_url(o.png)} for o in overviews],
        "thumbnails": list(thumbs),
        "grid": [list(map(list, p)) for p in grid],
        "bounds": None if bounds is None else [float(v) for v in bounds],
        "fit_key": fit_key,
        "basemap_url": basemap_url or None,
        "drawn": None if not drawn else drawn["coordinates"][0],
        "height": int(height),
    }


def render_map(args: dict[str, Any], *, key: str) -> None:
    """Draw the map; its events arrive as the widget value ``st.session_state[key]``."""
    _component()(**args, key=key, default=None)
