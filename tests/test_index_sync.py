"""The FAISS index follows the table: incremental adds, rebuilds, checks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from clay_search.schema import chips_schema
from clay_search.store import (
    check_index,
    load_index,
    open_chips_table,
    open_or_create_store,
    sync_index,
)

DIM = 16


def _rows(start: int, stop: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    schema = chips_schema(DIM)
    n = stop - start
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols["chip_id"] = pa.array([f"c{i}" for i in range(start, stop)])
    vec = rng.normal(size=(n, DIM)).astype(np.float32)
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM)
    cols["model_id"] = pa.array(["m"] * n)
    return pa.table(cols, schema=schema)


@pytest.fixture
def store(tmp_path):
    info = open_or_create_store(tmp_path / "s", "m", DIM)
    return info, open_chips_table(info)


def test_incremental_add_then_rebuild_after_delete(store):
    info, table = store
    table.add(_rows(0, 100, 1))
    first = sync_index(info.path)
    assert (first.action, first.count, first.kind) == ("rebuilt", 100, "flat")
    table.add(_rows(100, 130, 2))
    grown = sync_index(info.path)
    assert (grown.action, grown.added, grown.count) == ("added", 30, 130)
    assert grown.table_version == table.version
    assert sync_index(info.path).action == "unchanged"
    loaded = load_index(info.path)
    assert loaded.ids.to_pylist() == [f"c{i}" for i in range(130)]
    assert check_index(info.path).ok

    table.delete("chip_id = 'c7'")
    report = check_index(info.path)
    assert not report.ok and report.extra == ["c7"] and report.index_version < report.table_version
    after = sync_index(info.path)
    assert after.action == "rebuilt" and after.count == 129
    assert check_index(info.path).ok


def test_check_finds_missing_and_stale_rows(store):
    info, table = store
    table.add(_rows(0, 50, 1))
    sync_index(info.path)
    table.add(_rows(50, 60, 2))  # not synced: missing
    # an in-place update of c3's embedding: stale
    table.update(where="chip_id = 'c3'", values={"embedding": [1.0] * DIM})
    report = check_index(info.path)
    assert set(report.missing) == {f"c{i}" for i in range(50, 60)}
    assert report.stale == ["c3"]
    assert sync_index(info.path).action == "rebuilt"  # an update is not an append
    assert check_index(info.path).ok


def test_index_kind_override_is_kept(store):
    info, table = store
    table.add(_rows(0, 200, 3))
    assert sync_index(info.path, kind="hnsw").kind == "hnsw"
    table.add(_rows(200, 220, 4))
    report = sync_index(info.path)
    assert (report.kind, report.action) == ("hnsw", "added")
    assert check_index(info.path).ok


def test_commits_that_keep_every_row_do_not_rebuild(store):
    """Columns added (predictions, place ids) and commits that change nothing keep the index:
    ``sync_index`` reports it unchanged and a Store at the new version uses it."""
    import clay_search
    from clay_search.index import covers_version, read_index_meta

    info, table = store
    table.add(_rows(0, 40, 5))
    assert sync_index(info.path).action == "rebuilt"
    built = table.version
    table.add_columns({"pred_score": "cast(0.5 as float)"})
    table.delete("chip_id = 'no-such-chip'")  # deletes nothing
    assert table.version > built
    meta = read_index_meta(info.index_path)
    assert covers_version(table, meta, table.version)
    st = clay_search.connect(info.path)
    assert st.search(["c1"], k=3).meta["index"] == "flat"  # no warning, no exact fallback
    report = sync_index(info.path)
    assert (report.action, report.table_version) == ("unchanged", table.version)
    assert check_index(info.path).ok
    table.delete("chip_id = 'c5'")  # this one removes a row: the index no longer covers it
    assert not covers_version(table, read_index_meta(info.index_path), table.version)
    assert sync_index(info.path).action == "rebuilt"


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-sq8"])
def test_rows_rewritten_with_the_same_embeddings_are_reordered_not_rebuilt(store, kind):
    """Predictions written with ``update`` rewrite rows (new order, deletion files) but keep
    ids and embeddings: the index re-adds the vectors in the new order, without retraining."""
    import clay_search

    info, table = store
    table.add(_rows(0, 300, 6))
    built = sync_index(info.path, kind=kind)
    assert built.action == "rebuilt"
    table.add_columns({"pred_label": "cast(NULL as string)"})
    table.update(where="chip_id IN ('c3', 'c200', 'c7')", values={"pred_label": "water"})
    report = sync_index(info.path)
    assert (report.action, report.kind, report.count) == ("reordered", kind, 300)
    assert report.params == built.params  # no retraining or tuning
    assert check_index(info.path).ok
    st = clay_search.connect(info.path)
    assert st.search(["c3"], k=5).meta["index"] == kind
    table.update(where="chip_id = 'c9'", values={"embedding": [0.5] * DIM})  # a real change
    assert sync_index(info.path).action == "rebuilt"
    assert check_index(info.path).ok


def test_read_ids_and_vectors_batch_by_batch_matches_whole_table(store):
    """Several fragments and an offset: the streamed read equals the whole-table read."""
    from clay_search.index.vectors import l2_normalise, read_ids_and_vectors

    _, table = store
    for s in range(0, 3000, 1000):  # three fragments
        table.add(_rows(s, s + 1000, seed=s))
    whole = table.search().select(["chip_id", "embedding"]).limit(None).to_arrow()
    want = l2_normalise(np.stack(whole.column("embedding").to_numpy(zero_copy_only=False)))
    for offset in (0, 1500):
        ids, vecs = read_ids_and_vectors(table, DIM, offset=offset)
        assert ids.to_pylist() == whole.column("chip_id").to_pylist()[offset:]
        assert vecs.shape == (3000 - offset, DIM) and vecs.dtype == np.float32
        np.testing.assert_allclose(vecs, want[offset:], rtol=0, atol=1e-6)
    ids, vecs = read_ids_and_vectors(table, DIM, offset=3000)
    assert len(ids) == 0 and vecs.shape == (0, DIM)
