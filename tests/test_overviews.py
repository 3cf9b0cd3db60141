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
from clay_search.overviews import Overview, build_overviews, map_tiles
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


def _overview(name: str, bounds: tuple[float, float, float, float], rgb, side: int = 32):
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (*rgb, 255)).save(buf, format="PNG")
    return Overview(name, bounds, buf.getvalue(), side, side, chips=4, drawn=4)


def _colour_at(images, lon: float, lat: float):
    """The colour the map draws at (lon, lat): the last image whose box holds it."""
    from clay_search.overviews import _merc_y

    got = None
    for o in images:
        w, s, e, n = o.bounds
        if w <= lon < e and s <= lat < n:
            img = np.asarray(Image.open(io.BytesIO(o.png)).convert("RGBA"))
            col = int((lon - w) / (e - w) * o.width)
            row = int((_merc_y(n) - _merc_y(lat)) / (_merc_y(n) - _merc_y(s)) * o.height)
            px = img[min(row, o.height - 1), min(col, o.width - 1)]
            if px[3]:
                got = tuple(int(v) for v in px[:3])
    return got


def test_overlapping_sources_are_drawn_as_one_mosaic_disjoint_ones_stay() -> None:
    red = _overview("a.tif", (10.0, 50.0, 10.2, 50.2), (255, 0, 0))
    blue = _overview("b.tif", (10.1, 50.1, 10.3, 50.3), (0, 0, 255))  # overlaps a
    green = _overview("c.tif", (20.0, 40.0, 20.1, 40.1), (0, 255, 0))  # far away
    images = map_tiles([red, blue, green])
    assert len(images) == 2 and images[1] is green  # a lone source is passed as it is
    mosaic = images[0]
    assert mosaic.source == "mosaic of 2 sources" and mosaic.chips == 8
    w, s, e, n = mosaic.bounds
    assert abs(w - 10.0) < 1e-9 and abs(n - 50.3) < 1e-9 and e >= 10.3 - 1e-9 and s <= 50.0
    assert mosaic.width == 48  # the sources' own resolution: their 32 px a 0.2 degree, over 0.3
    assert _colour_at(images, 10.05, 50.05) == (255, 0, 0)  # a alone
    assert _colour_at(images, 10.15, 50.15) == (0, 0, 255)  # both: the later on top
    assert _colour_at(images, 10.25, 50.25) == (0, 0, 255)
    assert _colour_at(images, 10.05, 50.25) is None  # in the union's box, in neither source
    assert _colour_at(images, 20.05, 40.05) == (0, 255, 0)


def test_many_disjoint_sources_are_merged_down_to_max_images() -> None:
    rng = np.random.default_rng(0)
    ovs = []
    for i in range(40):
        x, y = 0.5 * i, 45.0 + 0.5 * (i % 3)
        ovs.append(_overview(f"s{i}.tif", (x, y, x + 0.1, y + 0.1), tuple(rng.integers(0, 256, 3))))
    assert len(map_tiles(ovs, max_images=64)) == 40  # disjoint and few enough: as they are
    images = map_tiles(ovs, max_images=8, max_side=4096)
    assert 1 < len(images) <= 8
    for o in ovs:  # every source still shows its own colour at its centre
        lon, lat = (o.bounds[0] + o.bounds[2]) / 2, (o.bounds[1] + o.bounds[3]) / 2
        want = tuple(int(v) for v in np.asarray(Image.open(io.BytesIO(o.png)))[0, 0, :3])
        assert _colour_at(images, lon, lat) == want, o.source


def test_store_overviews_for_the_map(tmp_path: Path) -> None:
    store = clay_search.connect(str(_grid_store(tmp_path / "s", sources=3)))
    ovs = build_overviews(store, max_side=64)
    assert ovs.for_map == ovs.overviews  # three disjoint sources: their own images
    assert "map image" not in ovs.describe()
    few = build_overviews(store, max_side=64, max_map_images=1)
    assert len(few.for_map) == 1 and few.for_map[0].chips == 12
    assert "3 overview image(s) from chip thumbnails, drawn as 1 map image(s)" in few.describe()
    for (i, j), rgb in COLOURS.items():  # each cell's colour where its chips are
        for src in range(3):
            lon, lat = 10.0 + src + i * 0.01 + 0.005, 50.0 + j * 0.01 + 0.005
            assert _colour_at(few.for_map, lon, lat) == rgb, (src, i, j)
