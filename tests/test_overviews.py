"""Overview images mosaicked from chip thumbnails (clay_search.overviews): placement and limits."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from store_fixtures import rows_table

import clay_search
from clay_search.overviews import build_overviews
from clay_search.store import open_chips_table, open_or_create_store

COLOURS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255, 255, 0)}


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _grid_store(path: Path, sources: int = 1) -> Path:
    """Chips on a 2x2 grid per source (0.01 degree cells), one colour per cell."""
    rows = []
    for src in range(sources):
        for (i, j), rgb in COLOURS.items():
            x0, y0 = 10.0 + src + i * 0.01, 50.0 + j * 0.01
            fp = shapely.box(x0, y0, x0 + 0.01, y0 + 0.01)
            rows.append(
                {
                    "chip_id": f"s{src}-{i}{j}",
                    "geometry": shapely.to_wkb(fp),
                    "minx": x0,
                    "miny": y0,
                    "maxx": x0 + 0.01,
                    "maxy": y0 + 0.01,
                    "datetime": datetime(2020, 1, 1, tzinfo=UTC),
                    "sensor": "naip",
                    "source": f"scene{src}.tif",
                    "window": json.dumps({"col_off": i, "row_off": j}),
                    "thumbnail": _png(rgb),
                }
            )
    vecs = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    info = open_or_create_store(path, "test-model", 8)
    open_chips_table(info, create=True).add(rows_table(rows, vecs, "test-model"))
    return path


def test_overview_places_each_thumbnail_north_up(tmp_path: Path) -> None:
    store = clay_search.connect(str(_grid_store(tmp_path / "s")))
    ovs = build_overviews(store, max_side=64)
    assert len(ovs.overviews) == 1 and ovs.skipped_sources == 0
    ov = ovs.overviews[0]
    assert ov.source == "scene0.tif" and ov.chips == 4 and ov.drawn == 4
    w, s, e, n = ov.bounds
    assert np.allclose([w, e], [10.0, 10.02]) and np.allclose([s, n], [50.0, 50.02], atol=1e-9)
    img = np.asarray(Image.open(io.BytesIO(ov.png)).convert("RGBA"))
    assert img.shape[:2] == (ov.height, ov.width) and max(img.shape[:2]) == 64
    h, wd = img.shape[:2]
    # row 0 is north: the top-left quarter is cell (i=0, j=1), bottom-right is (1, 0)
    assert tuple(img[h // 4, wd // 4, :3]) == COLOURS[(0, 1)]
    assert tuple(img[3 * h // 4, wd // 4, :3]) == COLOURS[(0, 0)]
    assert tuple(img[h // 4, 3 * wd // 4, :3]) == COLOURS[(1, 1)]
    assert tuple(img[3 * h // 4, 3 * wd // 4, :3]) == COLOURS[(1, 0)]
    assert (img[..., 3] == 255).all()


def test_overview_limits_sources_and_pixels(tmp_path: Path) -> None:
    store = clay_search.connect(str(_grid_store(tmp_path / "s", sources=3)))
    ovs = build_overviews(store, max_side=512, max_sources=2, pixel_budget=2 * 32 * 32)
    assert len(ovs.overviews) == 2 and ovs.sources == 3 and ovs.skipped_sources == 1
    assert "1 smaller source(s) shown as footprints only" in ovs.describe()
    assert all(max(o.width, o.height) == 32 for o in ovs.overviews)


def test_sample_store_overviews_are_the_chip_thumbnails(sample_store: Path) -> None:
    store = clay_search.connect(str(sample_store))
    ovs = build_overviews(store, max_side=64)
    assert len(ovs.overviews) == 30 == ovs.sources  # each EuroSAT chip is its own file
    truth = store.table.to_pandas().set_index("source")
    for ov in ovs.overviews[:5]:
        row = truth.loc[ov.source]
        assert np.allclose(ov.bounds[::2], [row.minx, row.maxx])
        thumb = np.asarray(Image.open(io.BytesIO(row.thumbnail)).convert("RGB"), dtype=float)
        got = np.asarray(Image.open(io.BytesIO(ov.png)).convert("RGB"), dtype=float)
        assert got.shape == (64, 64, 3) or abs(got.shape[0] - 64) <= 1
        small = np.asarray(
            Image.fromarray(thumb.astype(np.uint8)).resize(got.shape[1::-1], Image.BILINEAR),
            dtype=float,
        )
        assert np.abs(small - got).mean() < 2.0  # the same picture
