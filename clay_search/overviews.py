"""Low-resolution overview images of a store's sources, mosaicked from the stored chip thumbnails.

The map draws them under the chip footprints, so it shows imagery with no network and no tile
server. They are built from what every store already holds (each chip's RGB ``thumbnail`` and its
lon/lat bounds), in memory, when first asked for; nothing is written to the store (a read never
writes). One image per source, on a Web-Mercator grid (rows linear in Mercator y), so a deck.gl
``BitmapLayer`` with ``bounds=[west, south, east, north]`` places every pixel where it belongs.

Cost is bounded: at most ``max_sources`` sources (the ones with most chips), a pixel budget shared
by them, and per source only as many thumbnails as its image has room for (one chip per cell of
the chip's size on the image, coarser where that would be more than ``max_thumbnails``
thumbnails in all: a 1,000,000-chip store decodes no more than a 1,500-chip one).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

_COLUMNS = ["source", "minx", "miny", "maxx", "maxy"]
_MAX_LAT = 85.05


@dataclass(frozen=True)
class Overview:
    """One source's overview image: PNG (RGBA, transparent where no chip) and its lon/lat box."""

    source: str
    bounds: tuple[float, float, float, float]  # west, south, east, north (EPSG:4326)
    png: bytes
    width: int
    height: int
    chips: int  # chips of the source
    drawn: int  # thumbnails drawn into the image (fewer when chips are smaller than a pixel)


@dataclass(frozen=True)
class OverviewSet:
    """The overviews of a store version and what was left out."""

    overviews: list[Overview]
    sources: int  # sources with a footprint in the store
    skipped_sources: int  # sources beyond ``max_sources``
    #: what the map draws: ``overviews`` with overlapping ones mosaicked (:func:`map_tiles`);
    #: empty means the same as ``overviews``
    map_images: list[Overview] = field(default_factory=list)

    @property
    def for_map(self) -> list[Overview]:
        """The images the map draws (at most ``MAX_MAP_IMAGES`` of them)."""
        return self.map_images or self.overviews

    def describe(self) -> str:
        """One line for the page."""
        text = f"{len(self.overviews)} overview image(s) from chip thumbnails"
        if self.map_images and len(self.map_images) != len(self.overviews):
            text += f", drawn as {len(self.map_images)} map image(s)"
        if self.skipped_sources:
            text += f"; {self.skipped_sources} smaller source(s) shown as footprints only"
        return text


#: Most images the map gets. The browser draws each as a layer of its own; with software WebGL
#: a layer costs ~60 ms before the map is drawn, so 182 per-source images held the overview up
#: by ~11 s (docs/benchmarks.md). Overlapping sources are mosaicked whatever their number.
MAX_MAP_IMAGES = 32


def _merc_y(lat: np.ndarray | float) -> np.ndarray:
    lat = np.clip(np.asarray(lat, dtype=np.float64), -_MAX_LAT, _MAX_LAT)
    return np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))


def _grid_size(span_x: float, span_y: float, side: int) -> tuple[int, int]:
    """(width, height) in pixels: the longer side ``side``, the aspect of the extent."""
    if span_x <= 0 and span_y <= 0:
        return side, side
    if span_x >= span_y:
        return side, max(1, round(side * span_y / max(span_x, 1e-12)))
    return max(1, round(side * span_x / max(span_y, 1e-12))), side


def build_overviews(
    store: Any,
    *,
    max_side: int = 512,
    max_sources: int = 200,
    pixel_budget: int = 8_000_000,
    max_thumbnails: int = 1500,
    batch: int = 2048,
    max_map_images: int = MAX_MAP_IMAGES,
) -> OverviewSet:
    """Overview images of ``store``'s sources (a :class:`clay_search.store.Store`).

    ``max_side`` caps each image's longer side; all images together hold at most
    ``pixel_budget`` pixels. At most about ``max_thumbnails`` thumbnails are decoded in all
    (shared by the sources by chip count, at least 16 each): where a source has more chips than
    its share, one chip per cell of a coarser grid stands for the cell's chips, so the cost does
    not grow with the store (a 1,000,000-chip store decodes as many as a 1,500-chip one). Reads
    ``store.attrs`` and the thumbnails of the chosen chips (``store.table``); chips without a
    footprint or a thumbnail are left out. For the map, overlapping sources' images are also
    mosaicked into one, and at most ``max_map_images`` images are kept
    (``OverviewSet.for_map``, :func:`map_tiles`).
    """
    from PIL import Image

    attrs = store.attrs
    if attrs.num_rows == 0 or "thumbnail" not in store.table.schema.names:
        return OverviewSet([], 0, 0)
    cols = {c: attrs.column(c).combine_chunks() for c in _COLUMNS}
    ids = attrs.column("chip_id").combine_chunks()
    b = {c: cols[c].cast(pa.float64()).to_numpy(zero_copy_only=False) for c in _COLUMNS[1:]}
    ok = np.isfinite(b["minx"]) & np.isfinite(b["miny"]) & np.isfinite(b["maxx"])
    ok &= np.isfinite(b["maxy"])
    enc = cols["source"].fill_null("").dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.to_pylist()
    codes = np.where(ok, codes, -1)
    counts = np.bincount(codes[codes >= 0], minlength=len(names))
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    chosen = order[:max_sources]
    if len(chosen) == 0:
        return OverviewSet([], 0, 0)
    side = int(min(max_side, max(16, math.sqrt(pixel_budget / len(chosen)))))
    x0, x1 = b["minx"], b["maxx"]
    y0, y1 = _merc_y(b["miny"]), _merc_y(b["maxy"])
    out = []
    for code in chosen:
        rows = np.flatnonzero(codes == code)
        w, e = float(x0[rows].min()), float(x1[rows].max())
        sy, ny = float(y0[rows].min()), float(y1[rows].max())
        width, height = _grid_size(math.radians(e - w), ny - sy, side)  # both in Mercator units
        px = width / max(e - w, 1e-12)
        py = height / max(ny - sy, 1e-12)
        # target boxes in image pixels (row 0 = north)
        c0 = np.floor((x0[rows] - w) * px).astype(np.int64)
        c1 = np.maximum(c0 + 1, np.ceil((x1[rows] - w) * px).astype(np.int64))
        r0 = np.floor((ny - y1[rows]) * py).astype(np.int64)
        r1 = np.maximum(r0 + 1, np.ceil((ny - y0[rows]) * py).astype(np.int64))
        # one thumbnail per cell: cells start at the typical chip size and grow (x2) until the
        # source's share of ``max_thumbnails`` covers them; each sample is painted over the
        # box of all the chips in its cell (a low-resolution mosaic, decode cost bounded)
        cell_w = max(1, int(np.median(c1 - c0)))
        cell_h = max(1, int(np.median(r1 - r0)))
        budget = max(16, max_thumbnails * int(counts[code]) // int(counts[chosen].sum()))
        while True:
            cc = ((c0 + c1) // 2) // cell_w  # the cell of each chip's centre
            cr = ((r0 + r1) // 2) // cell_h
            cell = cr * (width // cell_w + 2) + cc
            uniq, first, inverse = np.unique(cell, return_index=True, return_inverse=True)
            if len(uniq) <= budget or (cell_w >= width and cell_h >= height):
                break
            cell_w, cell_h = cell_w * 2, cell_h * 2
        inverse = inverse.ravel()
        # painted box per cell: the sample's own box grown to its cell's chips, inside the cell
        lo_c = np.full(len(uniq), np.iinfo(np.int64).max)
        lo_r = lo_c.copy()
        hi_c = np.full(len(uniq), np.iinfo(np.int64).min)
        hi_r = hi_c.copy()
        np.minimum.at(lo_c, inverse, c0)
        np.minimum.at(lo_r, inverse, r0)
        np.maximum.at(hi_c, inverse, c1)
        np.maximum.at(hi_r, inverse, r1)
        ucc, ucr = cc[first], cr[first]
        own = np.stack([c0[first], r0[first], c1[first], r1[first]], axis=1)
        grown = np.stack(
            [
                np.minimum(own[:, 0], np.maximum(lo_c, ucc * cell_w)),
                np.minimum(own[:, 1], np.maximum(lo_r, ucr * cell_h)),
                np.maximum(own[:, 2], np.minimum(hi_c, (ucc + 1) * cell_w)),
                np.maximum(own[:, 3], np.minimum(hi_r, (ucr + 1) * cell_h)),
            ],
            axis=1,
        )
        # grow only where the cell's chips cover at least half of that box (contiguous
        # imagery); scattered chips keep their own footprint instead of a misleading block
        area = np.zeros(len(uniq))
        np.add.at(area, inverse, ((c1 - c0) * (r1 - r0)).astype(float))
        grown_area = ((grown[:, 2] - grown[:, 0]) * (grown[:, 3] - grown[:, 1])).astype(float)
        box = np.where((area >= 0.5 * grown_area)[:, None], grown, own)
        order = np.argsort(first)  # read in table order
        keep, box = first[order], box[order]
        canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        drawn = 0
        for s in range(0, len(keep), batch):
            part = keep[s : s + batch]
            want = {str(c): tuple(int(v) for v in bx) for c, bx in zip(
                ids.take(pa.array(rows[part])).to_pylist(), box[s : s + batch], strict=True
            )}  # fmt: skip
            got = store.table.take_offsets(rows[part].tolist()).select(["chip_id", "thumbnail"])
            got = got.to_arrow() if hasattr(got, "to_arrow") else got
            # take_offsets may return rows in another order: place each by its chip id
            for chip_id, png in zip(
                got.column("chip_id").to_pylist(), got.column("thumbnail").to_pylist(), strict=True
            ):
                where = want.get(str(chip_id))
                if not png or where is None:
                    continue
                a0, b0, a1, b1 = where
                try:
                    with Image.open(io.BytesIO(png)) as im:
                        tile = im.convert("RGBA").resize(
                            (a1 - a0, b1 - b0), Image.Resampling.BILINEAR
                        )
                except OSError:
                    continue  # a broken thumbnail: that chip stays transparent
                canvas.paste(tile, (a0, b0))
                drawn += 1
        buf = io.BytesIO()
        canvas.save(buf, format="PNG", optimize=False)
        south, north = _merc_lat(sy), _merc_lat(ny)
        out.append(
            Overview(
                source=str(names[code]),
                bounds=(w, south, e, north),
                png=buf.getvalue(),
                width=width,
                height=height,
                chips=len(rows),
                drawn=drawn,
            )
        )
    return OverviewSet(
        out,
        sources=len(present),
        skipped_sources=len(present) - len(chosen),
        map_images=map_tiles(out, max_images=max_map_images),
    )


def map_tiles(
    overviews: Sequence[Overview],
    *,
    max_images: int = MAX_MAP_IMAGES,
    max_side: int = 2048,
) -> list[Overview]:
    """``overviews`` as the images the map draws: overlapping ones mosaicked into one.

    Sources whose boxes overlap (a time series of one place, neighbouring scenes) are painted,
    in their order (the later on top), into one Web-Mercator image of their union at the
    finest of their own resolutions, with no side over ``max_side`` pixels. Disjoint sources
    keep their own image (a mosaic of far-apart chips would shrink each to a pixel). Where that
    still leaves more than ``max_images`` images, groups are merged by a grid over the whole
    extent (about ``max_images`` cells) until it does not. A single overview in a group is
    returned as it is; every pixel keeps its place.
    """
    if len(overviews) <= 1:
        return list(overviews)
    ys = [(float(_merc_y(o.bounds[1])), float(_merc_y(o.bounds[3]))) for o in overviews]
    boxes = np.array(
        [(math.radians(o.bounds[0]), y0, math.radians(o.bounds[2]), y1)
         for o, (y0, y1) in zip(overviews, ys, strict=True)]
    )  # fmt: skip
    groups = _overlapping(boxes)
    max_images = max(1, max_images)
    cells = math.isqrt(max_images)
    while len(groups) > max_images:  # a 1 x 1 grid merges everything: this ends
        groups = _merge_by_grid(boxes, groups, cells)
        cells = max(1, cells // 2)
    return [
        overviews[g[0]] if len(g) == 1 else _mosaic([overviews[i] for i in g], boxes[g], max_side)
        for g in groups
    ]


def _overlapping(boxes: np.ndarray) -> list[list[int]]:
    """Groups (connected components, members in input order) of boxes that overlap."""
    n = len(boxes)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(boxes[:, 0], kind="stable")  # sweep west to east
    active: list[int] = []
    for i in order.tolist():
        active = [j for j in active if boxes[j, 2] > boxes[i, 0]]
        for j in active:
            if boxes[j, 1] < boxes[i, 3] and boxes[i, 1] < boxes[j, 3]:
                parent[root(i)] = root(j)
        active.append(i)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(root(i), []).append(i)
    return sorted(out.values(), key=lambda g: g[0])


def _merge_by_grid(boxes: np.ndarray, groups: list[list[int]], cells: int) -> list[list[int]]:
    """Groups whose centres fall in the same cell of a ``cells`` x ``cells`` grid, merged."""
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    span = np.maximum(hi - lo, 1e-12)
    merged: dict[tuple[int, int], list[int]] = {}
    for g in groups:
        b = boxes[g]
        centre = (np.r_[b[:, 0].min(), b[:, 1].min()] + np.r_[b[:, 2].max(), b[:, 3].max()]) / 2
        cx, cy = np.minimum(((centre - lo) / span * cells).astype(int), cells - 1)
        merged.setdefault((int(cx), int(cy)), []).extend(g)
    return sorted((sorted(g) for g in merged.values()), key=lambda g: g[0])


def _mosaic(overviews: list[Overview], boxes: np.ndarray, max_side: int) -> Overview:
    """One image of ``overviews`` (Mercator ``boxes``: x0, y0, x1, y1 with y north-up)."""
    from PIL import Image

    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    span_x, span_y = max(x1 - x0, 1e-12), max(y1 - y0, 1e-12)
    finest = min(
        min((b[2] - b[0]) / o.width, (b[3] - b[1]) / o.height)
        for o, b in zip(overviews, boxes, strict=True)
    )
    res = max(finest, span_x / max_side, span_y / max_side)  # Mercator units a pixel
    width, height = max(1, math.ceil(span_x / res)), max(1, math.ceil(span_y / res))
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for o, b in zip(overviews, boxes, strict=True):
        c0, r0 = round((b[0] - x0) / res), round((y1 - b[3]) / res)
        c1, r1 = max(c0 + 1, round((b[2] - x0) / res)), max(r0 + 1, round((y1 - b[1]) / res))
        with Image.open(io.BytesIO(o.png)) as im:
            part = im.convert("RGBA").resize((c1 - c0, r1 - r0), Image.Resampling.BILINEAR)
        canvas.alpha_composite(part, (min(c0, width - 1), min(r0, height - 1)))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    west, east = math.degrees(x0), math.degrees(x0 + width * res)  # the pixels' own edges
    return Overview(
        source=f"mosaic of {len(overviews)} sources",
        bounds=(west, _merc_lat(y1 - height * res), east, _merc_lat(y1)),
        png=buf.getvalue(),
        width=width,
        height=height,
        chips=sum(o.chips for o in overviews),
        drawn=sum(o.drawn for o in overviews),
    )


def _merc_lat(y: float) -> float:
    """The latitude of Mercator ``y`` (the inverse of :func:`_merc_y`)."""
    return float(np.degrees(2 * np.arctan(np.exp(y)) - np.pi / 2))
