"""The Python query API over a real store (the sample's EuroSAT MS chips, Clay nano
embeddings): runs on what the repository ships."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from store_fixtures import EUROSAT_BANDS, build_store, eurosat_files

import clay_search
from clay_search.errors import (
    QueryError,
    SourceNotFoundError,
    StoreMismatchError,
    StoreNotFoundError,
    UnknownChipError,
)
from clay_search.search import query_vector


@pytest.fixture(scope="module")
def store_path(sample_store):
    return sample_store


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
    pos, neg = [ids[0], ids[5]], [ids[20]]
    res = store.search(pos, neg, k=20)
    q = query_vector(store.vectors[[0, 5]], store.vectors[[20]])
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


def test_search_image_finds_its_own_chip(store_path, sample_dir, nano_weights):
    st = clay_search.connect(store_path, weights=nano_weights)
    tif = eurosat_files(sample_dir)[12]
    bands = EUROSAT_BANDS  # the file's band order
    chips = st.chips().to_pandas().set_index("source")
    own, when = chips.loc[str(tif), "chip_id"], chips.loc[str(tif), "datetime"]
    res = st.search_image(tif, k=3, bands=bands, when=when.to_pydatetime())
    assert res.chip_ids[0] == own  # same pixels, bands, location: the nearest chip
    assert res.meta["query"] == "image"
    with pytest.raises(SourceNotFoundError):
        st.search_image(tif.parent / "missing.tif", bands=bands)
    # the image's sensor is image_sensor=; sensor= is the filter, as everywhere
    other = st.search_image(tif, k=3, bands=bands, image_sensor="sentinel-2-l2a",
                            sensor="naip")  # fmt: skip
    assert len(other) == 0 and other.meta["filters"]["sensor"] == ["naip"]
    with pytest.raises(QueryError, match="unknown filter"):
        st.search_image(tif, bands=bands, sensors="naip")


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


def _index_files(path):
    return {p.name: p.read_bytes() for p in sorted((path / "index").glob("*"))}


def test_queries_never_write_and_sync_is_explicit(sample_dir, nano_weights, tmp_path):
    from clay_search.store import open_chips_table, read_store_info, sync_index

    path = build_store(tmp_path / "s", sample_dir, nano_weights, per_class=2, batches=2,
                       sync=False)  # fmt: skip
    st = clay_search.connect(path)  # no index yet: exact search, said so, nothing written
    some = st.attrs.column("chip_id")[0].as_py()
    with pytest.warns(UserWarning, match="does not match"):
        first = st.search([some], k=3)
    assert first.meta["index"] == "exact" and "index --sync" in first.meta["index_note"]
    assert _index_files(path) == {}
    report = st.sync()
    assert report.action == "rebuilt" and st.search([some], k=3).meta["index"] == "flat"
    old_version = st.version

    # a writer adds chips without syncing: queries answer exactly and leave the index alone
    more = build_store(tmp_path / "s2", sample_dir, nano_weights, per_class=3, sync=False)
    extra = open_chips_table(read_store_info(more)).to_arrow()
    known = set(st.attrs.column("chip_id").to_pylist())
    table = open_chips_table(read_store_info(path))
    table.add(extra.filter(np.array([c not in known for c in extra.column("chip_id").to_pylist()])))
    before = _index_files(path)
    latest = clay_search.connect(path)
    assert len(latest) > len(st)
    with pytest.warns(UserWarning, match="does not match"):
        res = latest.search([some], k=3)
    assert res.meta["index"] == "exact" and _index_files(path) == before
    pinned = clay_search.connect(path, version=old_version)  # the index matches the old one
    again = pinned.search([some], k=3)
    assert again.chip_ids == first.chip_ids and again.version == old_version
    assert again.meta["index"] == "flat"
    assert latest.sync().action == "added" and latest.search([some], k=3).meta["index"] == "flat"

    # columns added (predictions) and no-op commits keep the index valid: no rebuild
    table.add_columns({"pred_score": "cast(0.25 as float)"})
    table.add_columns({"pred_label": "cast('x' as string)"})
    cols = clay_search.connect(path)
    assert cols.version > latest.version
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cols.search([some], k=3).meta["index"] == "flat"
    assert sync_index(path).action == "unchanged"
    with pytest.raises(QueryError, match="does not exist"):
        clay_search.connect(path, version=999)


def test_chip_id_prefixes(store):
    ids = sorted(store.attrs.column("chip_id").to_pylist())
    full = ids[0]
    assert store.get(full[:8]).chip_ids == [full]
    assert store.resolve_ids([full[:6], ids[1]]) == [full, ids[1]]
    assert store.search([full[:8]], k=3).chip_ids == store.search([full], k=3).chip_ids
    # an ambiguous prefix names its candidates
    from clay_search.errors import AmbiguousChipError

    shared = next(
        (a[:n] for a, b in itertools.pairwise(ids) for n in (4, 3) if a[:n] == b[:n]),
        None,
    )
    if shared is not None and len(shared) >= 4:
        with pytest.raises(AmbiguousChipError, match="give more characters"):
            store.get(shared)
    with pytest.raises(UnknownChipError, match="clay-search chips --store"):
        store.get("zzzzzzzz")
    with pytest.raises(UnknownChipError):
        store.get(full[:3])  # too short to count as a prefix


def test_ambiguous_prefix_lists_candidates(tmp_path, nano_weights, sample_dir):
    import pyarrow as pa

    from clay_search.errors import AmbiguousChipError
    from clay_search.store import open_chips_table, read_store_info

    path = build_store(tmp_path / "s", sample_dir, nano_weights, per_class=1)
    table = open_chips_table(read_store_info(path))
    row = table.search().limit(2).to_arrow()
    table.add(row.set_column(0, "chip_id", pa.array(["abcd0001", "abcd0002"])))
    st = clay_search.connect(path, index="exact")
    with pytest.raises(AmbiguousChipError, match="abcd0001, abcd0002"):
        st.search(["abcd"])
    assert st.get("abcd0002").chip_ids == ["abcd0002"]


def test_fluent_query(store):
    ids = store.attrs.column("chip_id").to_pylist()
    q = store.query().where(bbox=(-20, 30, 40, 70)).where(start="2018-01-01")
    direct = store.search([ids[0]], [ids[1]], 5, bbox=(-20, 30, 40, 70), start="2018-01-01")
    res = q.positives(ids[0]).negatives([ids[1]]).limit(5).to_results()
    assert res.chip_ids == direct.chip_ids
    gdf = q.positives(ids[0]).limit(5).to_geopandas()
    assert len(gdf) == 5 and gdf.crs == "EPSG:4326"
    assert (
        q.limit(4).to_pandas()["chip_id"].tolist()
        == store.chips(bbox=(-20, 30, 40, 70), start="2018-01-01", limit=4).chip_ids
    )
    refined = store.query().positives(ids[:2]).refine().limit(3).to_results()
    assert refined.chip_ids == store.refine(ids[:2], k=3).chip_ids


def test_vectors_outlive_their_store(sample_store):
    """``connect(...).vectors`` of a flat index stays valid after the store is gone (it was a
    raw view into the freed FAISS index before) and cannot be written into."""
    import gc
    import json

    path = sample_store
    meta = json.loads(next(path.rglob("index.json")).read_text())
    assert meta["kind"] == "flat"  # the zero-copy path
    with_store = clay_search.connect(path)
    expected = np.array(with_store.vectors, copy=True)
    del with_store
    vecs = clay_search.connect(path).vectors  # the store object is dropped at once
    gc.collect()
    junk = [
        np.random.default_rng(i).random((len(expected), expected.shape[1])) for i in range(20)
    ]  # reuse freed memory
    np.testing.assert_array_equal(vecs, expected)
    assert np.isfinite(vecs).all() and len(junk) == 20
    with pytest.raises(ValueError, match="read-only"):
        vecs[0, 0] = 1.0


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_index_backed_store_reads_no_embeddings_from_the_table(
    sample_store, tmp_path, kind
) -> None:
    """With an IVF or HNSW index the Store takes the vectors from the index (the same
    normalised floats the table holds) and ``overview()`` does not read the index's vectors."""
    import shutil

    from clay_search.index.vectors import read_ids_and_vectors
    from clay_search.store import sync_index

    path = tmp_path / "s"
    shutil.copytree(sample_store, path)
    sync_index(path, kind=kind, rebuild=True)
    store = clay_search.connect(path)
    info = store.overview()
    assert info["index"]["kind"] == kind and info["index_note"] is None
    assert store._index is None  # the first query reads it, not the first page
    _, table_vecs = read_ids_and_vectors(store.table, store.dim)
    rows = np.array([7, 0, 7, 21])
    assert np.allclose(store.vectors_of(rows), table_vecs[rows], atol=1e-6)
    assert store._vectors is None  # the rows came from the index, not the whole matrix
    ids = store.attrs.column("chip_id").to_pylist()
    res = store.search([ids[7]], k=5)
    assert res.meta["index"] == kind and ids[7] not in res.chip_ids
    assert store.load() is store and store._index is not None
    assert np.allclose(store.vectors, table_vecs, atol=1e-6)
    assert not store.vectors.flags.writeable


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_filtered_search_on_an_index_reads_only_the_filters_rows(
    sample_store, tmp_path, kind
) -> None:
    """A filtered search (exact within the filter) and a filtered refine on an IVF/HNSW store
    take the filter's rows from the index, not the whole matrix, and answer exactly as the
    same store searched without an index."""
    import shutil

    from clay_search.store import sync_index

    path = tmp_path / "s"
    shutil.copytree(sample_store, path)
    sync_index(path, kind=kind, rebuild=True)
    store = clay_search.connect(path)
    exact = clay_search.connect(path, index="exact")
    ids = store.attrs.column("chip_id").to_pylist()
    minx = store.attrs.column("minx").to_numpy()
    cut = float(np.sort(minx)[len(minx) // 3])  # about a third of the chips reach west of it
    box = (-180.0, -90.0, cut, 90.0)
    west = [i for i, x in zip(ids, minx, strict=True) if x <= cut]
    assert 0 < len(west) <= len(ids) // 2
    got = store.search([ids[0]], k=50, bbox=box)
    want = exact.search([ids[0]], k=50, bbox=box)
    assert got.meta["index"] == "exact-in-filter"
    assert got.chip_ids == want.chip_ids and set(got.chip_ids) <= set(west)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    refined = store.refine([ids[0], ids[1]], [ids[2]], k=20, bbox=box)
    assert refined.chip_ids == exact.refine([ids[0], ids[1]], [ids[2]], k=20, bbox=box).chip_ids
    assert store._vectors is None  # never the whole matrix
