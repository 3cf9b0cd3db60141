"""Every column of every result row is that chip's row in the table (issue: search results
carried other chips' thumbnails, because LanceDB's ``take_offsets`` answers in table order).

Checked on the sample store, written in 3 commits (3 fragments), for searches, refines, point
and image searches, browse pages and ``get``.
"""

from __future__ import annotations

import numpy as np
import pytest
from store_fixtures import EUROSAT_BANDS, eurosat_files

import clay_search
from clay_search.store import open_chips_table, read_store_info

SKIP = {"embedding", "patch_embeddings"}


@pytest.fixture(scope="module")
def store(sample_store, nano_weights):
    return clay_search.connect(sample_store, weights=nano_weights)


@pytest.fixture(scope="module")
def table_rows(sample_store) -> dict[str, dict]:
    table = open_chips_table(read_store_info(sample_store))
    cols = [c for c in table.schema.names if c not in SKIP]
    return {r["chip_id"]: r for r in table.to_arrow().select(cols).to_pylist()}


def _check(res, table_rows) -> None:
    got = res.to_arrow()
    assert "thumbnail" in got.column_names and got.num_rows > 0
    for row in got.to_pylist():
        want = table_rows[row["chip_id"]]
        for col, value in want.items():
            assert row[col] == value, (row["chip_id"], col)


def test_the_store_has_several_fragments(sample_store):
    table = open_chips_table(read_store_info(sample_store))
    meta = table.list_versions()[-1]["metadata"]
    assert int(meta["total_fragments"]) >= 3


def test_search_rows(store, table_rows):
    ids = store.attrs.column("chip_id").to_pylist()
    for pos in ([ids[0]], [ids[29], ids[4]], [ids[17]]):
        res = store.search(pos, k=20)
        assert res.chip_ids != sorted(res.chip_ids, key=ids.index)  # not in table order
        _check(res, table_rows)
    _check(store.search([ids[3]], [ids[8]], k=29, bbox=(-20, 30, 40, 70)), table_rows)


def test_refine_rows(store, table_rows):
    ids = store.attrs.column("chip_id").to_pylist()
    _check(store.refine(ids[:3], ids[20:24]), table_rows)
    _check(store.refine([ids[12]], k=9), table_rows)


def test_point_and_image_rows(store, table_rows, sample_dir):
    eng = store.engine
    lon, lat = (eng.minx[7] + eng.maxx[7]) / 2, (eng.miny[7] + eng.maxy[7]) / 2
    _check(store.search_point(lon, lat, k=15), table_rows)
    tif = eurosat_files(sample_dir)[12]
    _check(store.search_image(tif, k=12, bands=EUROSAT_BANDS), table_rows)


def test_browse_pages_and_get(store, table_rows):
    for offset in (0, 7, 21):
        _check(store.chips(limit=8, offset=offset), table_rows)
    _check(store.chips(label=["River", "Forest"]), table_rows)
    ids = store.attrs.column("chip_id").to_pylist()
    picked = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:12]]
    res = store.get([*picked, picked[0]])  # any order, repeats
    assert res.chip_ids == [*picked, picked[0]]
    _check(res, table_rows)


def test_head_of_results(store, table_rows):
    ids = store.attrs.column("chip_id").to_pylist()
    res = store.search([ids[2]], k=20)
    head = res.head(5)
    assert head.chip_ids == res.chip_ids[:5]
    _check(head, table_rows)
