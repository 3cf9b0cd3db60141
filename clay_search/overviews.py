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
from dataclasses import dataclass
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

    def describe(self) -> str:
        """One line for the page."""
        text = f"{len(self.overviews)} overview image(s) from chip thumbnails"
        if self.skipped_sources:
            text += f"; {self.skipped_sources} smaller source(s) shown as footprints only"
        return text


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
) -> OverviewSet:
    """Overview images of ``store``'s sources (a :class:`clay_search.store.Store`).

    ``max_side`` caps each image's longer side; all images together hold at most
    ``pixel_budget`` pixels. At most about ``max_thumbnails`` thumbnails are decoded in all
    (shared by the sources by chip count, at least 16 each): where a source has more chips than
    its share, one chip per cell of a coarser grid stands for the cell's chips, so the cost does
    not grow with the store (a 1,000,000-chip store decodes as many as a 1,500-chip one). Reads
    ``store.attrs`` and the thumbnails of the chosen chips (``store.table``); chips without a
    footprint or a thumbnail are left out.
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
        south = float(np.degrees(2 * np.arctan(np.exp(sy)) - np.pi / 2))
        north = float(np.degrees(2 * np.arctan(np.exp(ny)) - np.pi / 2))
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
    return OverviewSet(out, sources=len(present), skipped_sources=len(present) - len(chosen))
