"""Change over time: place ids, timelines, change ranking, change search, CLI outputs.

Core tests run on a seeded time series made from the shipped NAIP crop (tests/change_fixtures.py)
and ingested with the bundled weights: real GeoTIFFs, real CRS, a planted construction.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from change_fixtures import CHANGED_CELL, CHIP, make_series
from rasterio.windows import Window
from typer.testing import CliRunner

import clay_search
from clay_search.cli.main import app
from clay_search.errors import QueryError, UnknownChipError
from clay_search.places import overlap_pairs, place_id_for_window, place_ids

BEFORE = ("2010-01-01", "2012-12-31")
AFTER = ("2019-01-01", "2020-12-31")


def _ingest(files, store):
    from clay_search.ingest import run

    run([str(f) for f in files], store, chip_size=CHIP, workers=0)
    return store


@pytest.fixture(scope="module")
def series(tmp_path_factory, sample_dir):
    root = tmp_path_factory.mktemp("series")
    files = make_series(root / "tifs", sample_dir, shifted=True)
    store = _ingest([f for f in files if "20200716" not in f.name], root / "store")
    shifted = root / "store_shifted"
    shutil.copytree(store, shifted)
    _ingest([f for f in files if "20200716" in f.name], shifted)
    return {"files": files, "store": store, "shifted": shifted}


def _changed_window_json() -> str:
    r, c = CHANGED_CELL
    return f'{{"col_off": {c * CHIP}, "height": {CHIP}, "row_off": {r * CHIP}, "width": {CHIP}}}'


# -- place ids --------------------------------------------------------------------------------
def test_place_id_same_grid_any_date_and_file():
    crs = rasterio.crs.CRS.from_epsg(26914)
    t = rasterio.Affine(5.0, 0, 487500.0, 0, -5.0, 5208047.0)
    w = Window(64, 128, 64, 64)
    a = place_id_for_window(crs, t, w)
    # float noise and a sub-pixel misregistration (1 m of a 5 m pixel) keep the place
    t_noise = rasterio.Affine(5.0, 0, 487499.0 + 1e-7, 0, -5.0, 5208046.0)
    assert place_id_for_window(crs, t_noise, w) == a
    # another window, chip size, pixel grid (3 px shift) or CRS is another place
    assert place_id_for_window(crs, t, Window(128, 128, 64, 64)) != a
    assert place_id_for_window(crs, t, Window(64, 128, 32, 32)) != a
    t_shift = rasterio.Affine(5.0, 0, 487515.0, 0, -5.0, 5208047.0)
    assert place_id_for_window(crs, t_shift, w) != a
    assert place_id_for_window(rasterio.crs.CRS.from_epsg(32614), t, w) != a
    assert place_id_for_window(None, t, w) is None


def test_place_ids_stored_at_ingest_and_computed_on_read(series):
    store = clay_search.connect(series["store"])
    a = store.attrs
    stored = a.column("place_id").to_pylist()
    assert all(stored)
    # five dates of 16 chip cells: 16 places, each on five dates
    assert len(set(stored)) == 16
    assert sorted(np.unique(stored, return_counts=True)[1]) == [5] * 16
    # a store written before the column existed gets the same ids from crs/window/footprint
    assert list(place_ids(a.drop_columns(["place_id"]))) == stored


def test_different_grids_pair_by_footprint_overlap(series):
    store = clay_search.connect(series["shifted"])
    pids = store.attrs.column("place_id").to_pylist()
    assert len(set(pids)) == 32  # the shifted date's 16 cells are other places
    wkb = store.attrs.column("geometry").to_pylist()
    src = store.attrs.column("source").to_pylist()
    a = [w for w, s in zip(wkb, src, strict=True) if "20100615" in s]
    b = [w for w, s in zip(wkb, src, strict=True) if "20200716" in s]
    i, j, iou = overlap_pairs(a, b, min_iou=0.5)
    assert len(i) == 16
    assert np.all((iou > 0.85) & (iou < 0.95))  # 61/67 px of overlap along x
    win_a = [
        w
        for w, s in zip(store.attrs.column("window").to_pylist(), src, strict=True)
        if "20100615" in s
    ]
    win_b = [
        w
        for w, s in zip(store.attrs.column("window").to_pylist(), src, strict=True)
        if "20200716" in s
    ]
    assert [win_a[k] for k in i] == [win_b[k] for k in j]  # each cell with its own cell
    # grid pairing alone leaves the shifted date out; auto adds it by overlap
    grid = store.changes(("2010-01-01", "2012-12-31"), ("2020-07-01", "2020-07-31"), pairing="grid")
    assert len(grid) == 0 and "no place" in grid.meta["reason"]
    auto = store.changes(("2010-01-01", "2012-12-31"), ("2020-07-01", "2020-07-31"))
    assert len(auto) == 16 and set(auto.to_pandas().pairing) == {"overlap"}
    top = auto.to_pandas().iloc[0]
    assert top.window == _changed_window_json()
    # in a period that also holds same-grid dates, the shifted chips join their place
    both = store.changes(BEFORE, AFTER).to_pandas()
    assert len(both) == 16 and set(both.pairing) == {"grid"}
    assert set(both.n_after) == {3} and set(both.n_before) == {3}
    only_grid = store.changes(BEFORE, AFTER, pairing="grid").to_pandas()
    assert set(only_grid.n_after) == {2}
    # the timeline of a place holds its own five dates and the overlapping shifted chip
    tl = store.timeline(top.place_id).to_pandas()
    assert len(tl) == 6 and tl.place_id.nunique() == 2
    assert store.timeline(top.place_id, min_iou=None).to_pandas().shape[0] == 5


# -- changes() --------------------------------------------------------------------------------
def test_changes_ranks_the_planted_change_first_with_both_thumbnails(series):
    from PIL import Image

    store = clay_search.connect(series["store"])
    res = store.changes(BEFORE, AFTER)
    df = res.to_pandas()
    assert len(df) == 16 and list(df["rank"]) == list(range(1, 17))
    assert np.all(np.diff(df.change.to_numpy()) <= 0)
    top = df.iloc[0]
    assert top.window == _changed_window_json()
    assert top.change > 2 * df.change.iloc[1:].median()
    assert (top.n_before, top.n_after) == (3, 2)
    assert top.datetime_before.year in (2010, 2011, 2012)
    assert top.datetime_after.year in (2019, 2020)
    # the thumbnails are the representative chips' own thumbnails, before and after
    chips = store.get([top.chip_id_before, top.chip_id_after]).to_pandas()
    assert top.thumbnail_before == chips.thumbnail[0]
    assert top.thumbnail_after == chips.thumbnail[1]
    b = np.asarray(Image.open(io.BytesIO(top.thumbnail_before)).convert("L"), np.float32)
    a = np.asarray(Image.open(io.BytesIO(top.thumbnail_after)).convert("L"), np.float32)
    h = b.shape[0]
    centre = slice(h // 4, 3 * h // 4)
    # the after thumbnail shows the bright roof, the before one the fields
    assert a[centre, centre].mean() > b[centre, centre].mean() + 30
    # every row: before chips from the before period, after chips from the after period
    for _, r in df.iterrows():
        assert "2010" <= str(r.datetime_before) < "2013" and str(r.datetime_after) >= "2019"
    assert res.meta["pairs"] == 16 and "mean" in res.meta["combine"]


def test_changes_k_bbox_and_normalised(series):
    store = clay_search.connect(series["store"])
    full = store.changes(BEFORE, AFTER)
    top3 = store.changes(BEFORE, AFTER, k=3)
    assert top3.to_pandas().place_id.tolist() == full.to_pandas().place_id.tolist()[:3]
    row = full.to_pandas().iloc[0]
    inside = store.changes(
        BEFORE, AFTER, bbox=(row.minx + 1e-5, row.miny + 1e-5, row.maxx - 1e-5, row.maxy - 1e-5)
    )
    assert inside.to_pandas().place_id.tolist() == [row.place_id]
    norm = store.changes(BEFORE, AFTER, method="normalised").to_pandas()
    assert norm.place_id.iloc[0] == row.place_id
    assert np.isfinite(norm.change).all()


@pytest.fixture(scope="module")
def patch_store(series, tmp_path_factory):
    from clay_search.ingest import run

    files = [f for f in series["files"] if "20200716" not in f.name]
    path = tmp_path_factory.mktemp("patches") / "store"
    run([str(f) for f in files], path, chip_size=CHIP, workers=0, patch_embeddings=True)
    return path


def test_patch_method_recomputes_tokens_without_the_column(series, patch_store):
    """A store ingested without --patch-embeddings: the tokens are recomputed from the sources
    and the scores equal those of the same chips ingested with them."""
    store = clay_search.connect(series["store"])
    assert "patch_embeddings" not in store.table.schema.names
    got = store.changes(BEFORE, AFTER, method="patch").to_pandas()
    want = clay_search.connect(patch_store).changes(BEFORE, AFTER, method="patch").to_pandas()
    assert got.window.iloc[0] == _changed_window_json()
    assert got.place_id.tolist() == want.place_id.tolist()
    np.testing.assert_allclose(got.change, want.change, rtol=1e-3, atol=1e-5)
    # a source that moved: the tokens cannot be recomputed, and the error says why
    src = Path(got.source_before.iloc[0])
    hidden = src.with_name(src.name + ".away")
    src.rename(hidden)
    try:
        with pytest.raises(QueryError, match="cannot be recomputed"):
            clay_search.connect(series["store"]).changes(BEFORE, AFTER, method="patch")
    finally:
        hidden.rename(src)


def test_patch_method(patch_store):
    store = clay_search.connect(patch_store)
    df = store.changes(BEFORE, AFTER, method="patch").to_pandas()
    assert df.window.iloc[0] == _changed_window_json()
    # raw patch tokens live on another scale than the standardised chip vector: compare ranks
    assert (df.change > 0).all() and df.change.iloc[0] > 10 * df.change.iloc[1:].median()
    assert res_meta_method(store) == "patch"
    # the value is the largest distance over the 8 x 8 grid of 128-dimensional patch tokens
    row = df.iloc[1]
    rows = store._rows_of([row.chip_id_before, row.chip_id_after])
    before_rows = store._rows_of(
        [
            c
            for c in store.timeline(row.place_id).chip_ids
            if c in set(store.chips(start=BEFORE[0], end=BEFORE[1]).chip_ids)
        ]
    )
    after_rows = np.setdiff1d(store._rows_of(store.timeline(row.place_id).chip_ids), before_rows)
    del rows
    tok = store.take_column("patch_embeddings", np.concatenate([before_rows, after_rows]))
    t = tok.flatten().to_numpy().reshape(len(before_rows) + len(after_rows), 64, 128)
    t = t / np.linalg.norm(t, axis=2, keepdims=True)
    mb = t[: len(before_rows)].mean(0)
    ma = t[len(before_rows) :].mean(0)
    mb /= np.linalg.norm(mb, axis=1, keepdims=True)
    ma /= np.linalg.norm(ma, axis=1, keepdims=True)
    assert row.change == pytest.approx(float(np.max(1 - np.sum(mb * ma, axis=1))), rel=1e-4)


def res_meta_method(store) -> str:
    return store.changes(BEFORE, AFTER, method="patch", k=1).meta["method"]


def test_timeline(series):
    store = clay_search.connect(series["store"])
    top = store.changes(BEFORE, AFTER, k=1).to_pandas().iloc[0]
    for key in (top.place_id, top.chip_id_after):
        tl = store.timeline(key).to_pandas()
        assert tl.place_id.unique().tolist() == [top.place_id]
        assert [d.year for d in tl.datetime] == [2010, 2011, 2012, 2019, 2020]
        assert tl.distance.iloc[0] == pytest.approx(0.0, abs=1e-6)
        # the jump comes with the construction
        assert tl.distance.iloc[3] > 3 * tl.distance.iloc[1:3].max()
        assert np.isnan(tl.distance_previous.iloc[0])
        assert tl.thumbnail.notna().all()
    ref = store.timeline(top.place_id, reference="2020-06-01").to_pandas()
    assert ref.distance.iloc[4] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UnknownChipError, match="neither a place id nor a chip id"):
        store.timeline("no-such-place")


def test_change_search_by_example(series):
    store = clay_search.connect(series["store"])
    df = store.changes(BEFORE, AFTER).to_pandas()
    planted = df.place_id.iloc[0]
    res = store.change_search([planted], before=BEFORE, after=AFTER, k=5)
    got = res.to_pandas()
    assert planted not in got.place_id.tolist()  # the example is left out
    assert len(got) == 5 and np.all(np.diff(got.score) <= 0)
    keep = store.change_search(
        [planted], before=BEFORE, after=AFTER, k=3, exclude_examples=False
    ).to_pandas()
    assert keep.place_id.iloc[0] == planted and keep.score.iloc[0] == pytest.approx(1.0)
    # a chip id of either date names its place; a negative moves the ranking
    by_chip = store.change_search(
        [df.chip_id_after.iloc[0]], before=BEFORE, after=AFTER, k=15
    ).to_pandas()
    assert by_chip.place_id.tolist() == got.place_id.tolist() + by_chip.place_id.tolist()[5:]
    other = got.place_id.iloc[0]
    neg = store.change_search([planted], [other], before=BEFORE, after=AFTER, k=15).to_pandas()
    assert other not in neg.place_id.tolist()
    assert neg.place_id.tolist() != by_chip.place_id.tolist()
    with pytest.raises(UnknownChipError):
        store.change_search(["nope"], before=BEFORE, after=AFTER)


# -- bad input --------------------------------------------------------------------------------
def test_bad_periods_and_empty_results(series, tmp_path):
    store = clay_search.connect(series["store"])
    with pytest.raises(QueryError, match="overlap"):
        store.changes(("2010-01-01", "2019-06-30"), AFTER)
    with pytest.raises(QueryError, match="swap"):
        store.changes(AFTER, BEFORE)
    with pytest.raises(QueryError, match="swap"):
        store.changes(("2012-12-31", "2010-01-01"), AFTER)
    with pytest.raises(QueryError, match="START/END"):
        store.changes("2010", AFTER)
    with pytest.raises(QueryError, match="method"):
        store.changes(BEFORE, AFTER, method="ndvi")
    empty = store.changes(BEFORE, ("2021-01-01", "2021-12-31"))
    assert len(empty) == 0 and "no chip in the after period" in empty.meta["reason"]
    one = _ingest(series["files"][:1], tmp_path / "one")
    with pytest.raises(QueryError, match="1 date"):
        clay_search.connect(one).changes(BEFORE, AFTER)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_changes_geojson_parquet_and_raster(series, tmp_path):
    store = clay_search.connect(series["store"])
    expect = store.changes(BEFORE, AFTER, k=4).to_pandas()
    period = ["--before", "/".join(BEFORE), "--after", "/".join(AFTER)]
    gj, pqf, tif = tmp_path / "c.geojson", tmp_path / "c.parquet", tmp_path / "c.tif"
    r = CliRunner().invoke(
        app,
        [
            "changes",
            "--store",
            str(series["store"]),
            *period,
            "-k",
            "4",
            "--out",
            str(gj),
            "--raster",
            str(tif),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(gj.read_text())
    props = [f["properties"] for f in doc["features"]]
    assert [p["place_id"] for p in props] == expect.place_id.tolist()
    assert "thumbnail_before" not in props[0] and props[0]["chip_id_before"]
    assert doc["features"][0]["geometry"]["type"] == "Polygon"
    r = CliRunner().invoke(
        app, ["changes", "--store", str(series["store"]), *period, "--out", str(pqf)]
    )
    assert r.exit_code == 0, r.output
    t = pq.read_table(pqf)
    assert b"geo" in t.schema.metadata and t.num_rows == 16
    assert {"thumbnail_before", "thumbnail_after", "change"} <= set(t.column_names)
    # the raster: 4 x 4 chip cells on the source grid, the planted cell the largest value
    with rasterio.open(tif) as ds, rasterio.open(series["files"][0]) as src:
        assert ds.crs == src.crs and ds.shape == (4, 4)
        assert ds.transform.c == pytest.approx(src.transform.c, abs=1e-3)
        assert ds.transform.f == pytest.approx(src.transform.f, abs=1e-3)
        assert ds.transform.a == pytest.approx(CHIP * src.transform.a, abs=1e-3)
        grid = ds.read(1)
    assert np.isfinite(grid).all()
    assert np.unravel_index(np.argmax(grid), grid.shape) == CHANGED_CELL
    assert grid[CHANGED_CELL] == pytest.approx(expect.change.iloc[0], rel=1e-5)


def test_cli_changes_like_and_errors(series, tmp_path):
    store = clay_search.connect(series["store"])
    planted = store.changes(BEFORE, AFTER, k=1).to_pandas().place_id.iloc[0]
    period = ["--before", "/".join(BEFORE), "--after", "/".join(AFTER)]
    out = tmp_path / "like.csv"
    r = CliRunner().invoke(
        app,
        [
            "changes",
            "--store",
            str(series["store"]),
            *period,
            "--like",
            planted,
            "-k",
            "3",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    expect = store.change_search([planted], before=BEFORE, after=AFTER, k=3).to_pandas()
    assert out.read_text().count("\n") == 4 and expect.place_id.iloc[0] in out.read_text()
    bad = CliRunner().invoke(
        app,
        [
            "changes",
            "--store",
            str(series["store"]),
            "--before",
            "2019-01-01/2020-12-31",
            "--after",
            "2010-01-01/2012-12-31",
            "--out",
            str(out),
        ],
    )
    assert bad.exit_code == 2 and "swap" in bad.output and "Traceback" not in bad.output
    none = CliRunner().invoke(app, ["changes", "--store", str(series["store"]), *period])
    assert none.exit_code == 2 and "--out" in none.output
    empty = CliRunner().invoke(
        app,
        [
            "changes",
            "--store",
            str(series["store"]),
            "--before",
            "/".join(BEFORE),
            "--after",
            "2021-01-01/2021-12-31",
            "--out",
            str(tmp_path / "e.geojson"),
        ],
    )
    assert empty.exit_code == 0 and "no changes: no chip in the after period" in empty.output
    assert json.loads((tmp_path / "e.geojson").read_text())["features"] == []


def test_result_thumbnails_follow_the_rank_order(series):
    """Regression: LanceDB's take_offsets answers in ascending offset order, so ranked results
    (rows not ascending) used to get other chips' thumbnails."""
    store = clay_search.connect(series["store"])
    ids = store.chips().chip_ids
    pick = [ids[9], ids[2], ids[5], ids[2]]
    got = store.get(pick).to_pandas().thumbnail.tolist()
    one_by_one = [store.get([c]).to_pandas().thumbnail[0] for c in pick]
    assert got == one_by_one and got[0] != got[1]
    res = store.search([ids[0]], k=10)
    assert res.to_pandas().thumbnail.tolist() == [
        store.get([c]).to_pandas().thumbnail[0] for c in res.chip_ids
    ]


def test_store_made_before_place_ids(series, tmp_path):
    """A store whose table has no place_id column takes new chips (the writer keeps the table's
    columns) and gets its place ids on read, the same as a new store's."""
    import lancedb
    import pyarrow as pa

    from clay_search.schema import TABLE_NAME
    from clay_search.store.layout import open_or_create_store

    new = clay_search.connect(series["store"])
    info = open_or_create_store(tmp_path / "old", new.model_id, new.dim)
    old_schema = pa.schema(
        [f for f in new.table.schema if f.name != "place_id"], metadata=new.table.schema.metadata
    )
    lancedb.connect(str(info.path / "lancedb")).create_table(TABLE_NAME, schema=old_schema)
    files = [f for f in series["files"] if "20200716" not in f.name]
    _ingest(files, tmp_path / "old")
    old = clay_search.connect(tmp_path / "old")
    assert "place_id" not in old.table.schema.names and len(old) == len(new)
    a = old.changes(BEFORE, AFTER).to_pandas()
    b = new.changes(BEFORE, AFTER).to_pandas()
    assert a.place_id.tolist() == b.place_id.tolist()
    assert np.allclose(a.change, b.change, atol=1e-5)
