"""The Changes view's map: change footprints as a pydeck (deck.gl) chart, drawn offline.

The Search view uses the bundled map component (``map_component.py``); this read-only map only
colours each place by its change score. Without a basemap (the default) the footprints sit on a
plain background with a light lon/lat grid; with ``basemap=True`` Carto's tiles are drawn (needs
network).
"""

from __future__ import annotations

import math

import pandas as pd
import pydeck as pdk

from clay_search.app.layers import extent, grid_paths

LAYER_ID = "chips"
GRID_LAYER_ID = "grid"
#: Streamlit's deck.gl frontend draws no basemap for this style value; without it, it falls
#: back to Carto's tiles (a network fetch that fails offline).
NO_BASEMAP_STYLE = "__MAP_STYLE__"


def view_state(bounds: tuple[float, float, float, float] | None) -> pdk.ViewState:
    """A view that fits ``bounds`` (the whole world when None)."""
    if bounds is None:
        return pdk.ViewState(latitude=20.0, longitude=0.0, zoom=1)
    w, s, e, n = bounds
    span = max(e - w, (n - s) * 1.3, 1e-4)
    zoom = max(0.0, min(16.0, math.log2(360.0 / span) - 0.3))
    return pdk.ViewState(latitude=(s + n) / 2, longitude=(w + e) / 2, zoom=zoom)


def _grid(bounds: tuple[float, float, float, float] | None) -> pd.DataFrame:
    """The lon/lat lines of ``layers.grid_paths`` as the PathLayer's rows."""
    return pd.DataFrame({"path": grid_paths(bounds)})


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
