"""The Python query API over a real store (EuroSAT MS chips, Clay nano embeddings)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from store_fixtures import EUROSAT_BANDS, build_store, cached_store, eurosat_files, nano_weights

import clay_search
from clay_search.errors import (
    QueryError,
    SourceNotFoundError,
    StoreMismatchError,
    StoreNotFoundError,
    UnknownChipError,
)
from clay_search.search import query_vector

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def store_path(shared_data, tmp_path_factory):
    return cached_store(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def store(store_path):
    return clay_search.connect(store_path)


def _brute(store, q, exclude=()):
    ids = np.array(store.attrs.column("chip_id").to_pylist())
    s = store.vectors @ q
    keep = ~np.isin(ids, list(exclude))
    return list(ids[keep][np.argsort(-s[keep], kind="stable")])


def test_search_by_ids_matches_brute_force(store):
    ids = store.attrs.column("chip_id").to_pylist()
    pos, neg = [ids[0], ids[5]], [ids[100]]
    res = store.search(pos, neg, k=20)
    q = query_vector(store.vectors[[0, 5]], store.vectors[[100]])
    assert res.chip_ids == _brute(store, q, pos + neg)[:20]
    assert not set(pos + neg) & set(res.chip_ids)
    assert res.version == store.version and res.meta["index"] == "flat"
    assert list(res.scores) == sorted(res.scores, reverse=True)
    assert res.to_arrow().column("rank").to_pylist() == list(range(1, 21))
    # negatives move the query away from them
    plain = store.search(pos, k=len(store) - 2).chip_ids
    assert res.chip_ids != plain[:20]


def test_search_vector_and_point(store):
    v = store.vectors[3] * 7.0  # scale does not matter: cosine
    res = store.search_vector(v, k=5)
    assert res.chip_ids[0] == store.attrs.column("chip_id")[3].as_py()
    eng = store.engine
    lon, lat = (eng.minx[10] + eng.maxx[10]) / 2, (eng.miny[10] + eng.maxy[10]) / 2
    pt = store.search_point(lon, lat, k=5)
    assert pt.meta["query_chips"] == [store.attrs.column("chip_id")[10].as_py()]
    assert pt.meta["query_chips"][0] not in pt.chip_ids
    with pytest.raises(QueryError, match="no chip"):
        store.search_point(-170.0, -80.0)


def test_search_image_finds_its_own_chip(store_path, shared_data, tmp_path_factory):
    weights = nano_weights(tmp_path_factory.getbasetemp() / "nano_weights")
    st = clay_search.connect(store_path, weights=weights)
    tif = eurosat_files(shared_data)[42]
    bands = EUROSAT_BANDS  # the file's band order
    chips = st.chips().to_pandas().set_index("source")
    own, when = chips.loc[str(tif), "chip_id"], chips.loc[str(tif), "datetime"]
    res = st.search_image(tif, k=3, bands=bands, when=when.to_pydatetime())
    assert res.chip_ids[0] == own  # same pixels, bands, location: the nearest chip
    assert res.meta["query"] == "image"
    with pytest.raises(SourceNotFoundError):
        st.search_image(tif.parent / "missing.tif", bands=bands)


def test_image_with_other_model_is_refused(store_path, tmp_path):
    import torch

    from clay_search.model.checkpoints import save_weights
    from clay_search.model.clay import ClayEncoder, get_config

    torch.manual_seed(1)
    save_weights(ClayEncoder.from_config(get_config("nano")), get_config("nano"), tmp_path / "w")
    st = clay_search.connect(store_path, weights=tmp_path / "w")
    with pytest.raises(StoreMismatchError, match="store's weights"):
        st.search_image(np.zeros((3, 64, 64), np.float32) + 1000)


def test_bad_queries(store):
    some = store.attrs.column("chip_id")[0].as_py()
    with pytest.raises(UnknownChipError, match="not-a-chip"):
        store.search(["not-a-chip"])
    with pytest.raises(QueryError, match="no positives"):
        store.search([], [some])
    with pytest.raises(QueryError, match="128-dimensional"):
        store.search_vector(np.ones(64))
    with pytest.raises(QueryError, match="k must"):
        store.search([some], k=0)
    with pytest.raises(QueryError, match="antimeridian"):
        store.search([some], bbox=(10, 0, 0, 10))
    with pytest.raises(QueryError, match="after end"):
        store.search([some], start="2021-01-01", end="2020-01-01")
    with pytest.raises(StoreNotFoundError):
        clay_search.connect("/nonexistent/store")


def test_version_pinning_and_stale_index(shared_data, tmp_path):
    weights = nano_weights(tmp_path / "w")
    path = build_store(tmp_path / "s", shared_data, weights, per_class=4, batches=2, sync=False)
    st = clay_search.connect(path)  # no index yet: synced on first search, and said so
    with pytest.warns(UserWarning, match="synced"):
        first = st.search([st.attrs.column("chip_id")[0].as_py()], k=3)
    old_version = st.version
    # a second store version adds chips
    shutil.rmtree(tmp_path / "s2", ignore_errors=True)
    more = build_store(tmp_path / "s2", shared_data, weights, per_class=6, sync=False)
    from clay_search.store import open_chips_table, read_store_info

    extra = open_chips_table(read_store_info(more)).to_arrow()
    known = set(st.attrs.column("chip_id").to_pylist())
    table = open_chips_table(read_store_info(path))
    table.add(extra.filter(np.array([c not in known for c in extra.column("chip_id").to_pylist()])))
    latest = clay_search.connect(path)
    assert len(latest) > len(st)
    with pytest.warns(UserWarning, match="synced"):
        latest.search([st.attrs.column("chip_id")[0].as_py()], k=3)
    pinned = clay_search.connect(path, version=old_version)
    assert len(pinned) == len(st) and pinned.version == old_version
    with pytest.warns(UserWarning, match="does not match"):
        again = pinned.search([st.attrs.column("chip_id")[0].as_py()], k=3)
    assert again.chip_ids == first.chip_ids and again.version == old_version
    with pytest.raises(QueryError, match="does not exist"):
        clay_search.connect(path, version=999)


def test_vectors_outlive_their_store(sample_dir, tmp_path_factory):
    """``connect(...).vectors`` of a flat index stays valid after the store is gone (it was a
    raw view into the freed FAISS index before) and cannot be written into."""
    import gc
    import json

    path = cached_store(tmp_path_factory, sample_dir)
    meta = json.loads(next(path.rglob("index.json")).read_text())
    assert meta["kind"] == "flat"  # the zero-copy path
    with_store = clay_search.connect(path)
    expected = np.array(with_store.vectors, copy=True)
    del with_store
    vecs = clay_search.connect(path).vectors  # the store object is dropped at once
    gc.collect()
    junk = [np.random.default_rng(i).random((len(expected), expected.shape[1]))
            for i in range(20)]  # reuse freed memory
    np.testing.assert_array_equal(vecs, expected)
    assert np.isfinite(vecs).all() and len(junk) == 20
    with pytest.raises(ValueError):
        vecs[0, 0] = 1.0
