"""The ``ivf-sq8`` index: 8-bit codes find candidates, the table's exact vectors rank them.

What a store of 10^7 x 1,024 needs to fit 24 GB (1 byte a dimension in memory, not 4), without
giving up exact scores: every score a search returns is the cosine of the table's vector.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import clay_search
from clay_search.index.faiss_index import (
    RERANK,
    SQ8_THRESHOLD,
    build_index,
    candidates,
    choose_kind,
    exact_topk,
    recall,
)
from clay_search.index.vectors import l2_normalise
from clay_search.schema import chips_schema
from clay_search.store import (
    check_index,
    load_index,
    open_chips_table,
    open_or_create_store,
    sync_index,
)

DIM = 32


def _clustered(n: int, seed: int, start: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((30, DIM))
    vec = (centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, DIM))).astype(np.float32)
    schema = chips_schema(DIM)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols["chip_id"] = pa.array([f"c{i}" for i in range(start, start + n)])
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM)
    cols["model_id"] = pa.array(["m"] * n)
    return pa.table(cols, schema=schema), l2_normalise(vec)


@pytest.fixture
def sq8_store(tmp_path):
    info = open_or_create_store(tmp_path / "s", "m", DIM)
    table = open_chips_table(info)
    rows, vecs = _clustered(6_000, 1)
    table.add(rows)
    report = sync_index(info.path, kind="ivf-sq8")
    return info, table, vecs, report


def test_auto_chooses_codes_only_above_the_threshold():
    assert choose_kind(SQ8_THRESHOLD) == "ivf"
    assert choose_kind(SQ8_THRESHOLD + 1) == "ivf-sq8"
    assert candidates("ivf-sq8", 50) == RERANK * 50 and candidates("ivf", 50) == 50


def test_the_index_holds_codes_a_quarter_of_the_float_index(sq8_store, tmp_path):
    info, _, vecs, report = sq8_store
    assert report.kind == "ivf-sq8" and report.params["rerank"] == RERANK
    assert report.params["tuned_recall"] >= 0.97  # measured after the re-ranking it will get
    loaded = load_index(info.path)
    # the index gives back approximations (8-bit codes), not the vectors
    approx = loaded.index.reconstruct_n(0, 200)
    assert 1e-4 < np.abs(approx - vecs[:200]).max() < 0.05
    import faiss

    flat, _ = build_index(vecs, "ivf", seed=0)
    faiss.write_index(flat, str(tmp_path / "ivf.faiss"))
    faiss.write_index(loaded.index, str(tmp_path / "sq8.faiss"))
    size = {k: (tmp_path / f"{k}.faiss").stat().st_size for k in ("ivf", "sq8")}
    assert size["sq8"] < 0.45 * size["ivf"], size  # 32 + 8 bytes a row instead of 128 + 8


def test_search_scores_are_exact_and_recall_holds(sq8_store):
    info, _, vecs, _ = sq8_store
    st = clay_search.connect(info.path)
    queries = l2_normalise(vecs[:20] + np.random.default_rng(5).normal(0, 0.1, (20, DIM)))
    truth = exact_topk(vecs, queries.astype(np.float32), 10)
    found = []
    for q in queries:
        res = st.search_vector(q, k=10)
        assert res.meta["index"] == "ivf-sq8" and res.meta["reranked"] >= 10
        df = res.to_pandas()
        rows = np.array([int(c[1:]) for c in df["chip_id"]])
        # every score is the table vector's cosine, in descending order
        np.testing.assert_allclose(df["score"], vecs[rows] @ (q / np.linalg.norm(q)), atol=1e-5)
        assert (np.diff(df["score"].to_numpy()) <= 1e-7).all()
        found.append(rows)
    assert recall(np.array(found), truth) >= 0.95


def test_example_and_filter_vectors_come_exact_from_the_table(sq8_store):
    info, _, vecs, _ = sq8_store
    st = clay_search.connect(info.path)
    rows = np.array([5, 4_000, 17, 5])  # any order, repeats
    np.testing.assert_array_equal(st.vectors_of(rows), vecs[rows])
    np.testing.assert_array_equal(st.vectors, vecs)  # the whole matrix too: the table's
    res = st.search(["c17"], k=5)
    assert "c17" not in res.to_pandas()["chip_id"].tolist()  # the example is left out
    assert res.to_pandas()["score"].iloc[0] == pytest.approx(
        float(np.sort(vecs @ vecs[17])[-2]), abs=1e-5
    )


def test_append_check_and_stale_rows(sq8_store):
    info, table, _, _ = sq8_store
    assert check_index(info.path).ok  # codes within one quantisation step of the table
    more, _ = _clustered(300, 2, start=6_000)
    table.add(more)
    report = sync_index(info.path)
    assert (report.kind, report.action, report.count) == ("ivf-sq8", "added", 6_300)
    assert check_index(info.path).ok
    table.update(where="chip_id = 'c3'", values={"embedding": [1.0] * DIM})
    assert check_index(info.path).stale == ["c3"]


def test_refine_scores_every_row_block_by_block_without_the_matrix(sq8_store, monkeypatch):
    """A refine over the whole store (the session's loop) reads the table's exact vectors a
    block at a time: the same ranking and scores as over the whole matrix, which is never
    built (10^7 x 1,024 would be 41 GB)."""
    import clay_search.store.store as store_mod

    info, _, _, _ = sq8_store
    monkeypatch.setattr(store_mod, "_SCORE_BLOCK", 1_000)  # 6 blocks of this store
    st = clay_search.connect(info.path)
    got = st.refine(["c1", "c2", "c3"], ["c40"], k=25).to_pandas()
    assert st._vectors is None  # the whole matrix was never read
    ref = clay_search.connect(info.path, index="exact").refine(["c1", "c2", "c3"], ["c40"], k=25)
    ref_df = ref.to_pandas()
    assert got["chip_id"].tolist() == ref_df["chip_id"].tolist()
    np.testing.assert_allclose(got["score"], ref_df["score"], atol=1e-6)
    # an exact-in-filter search's many candidates: scored the same way
    rows = np.arange(0, 6_000, 2)
    q = st.vectors_of([7])[0]
    scores = st.scores_of(rows, lambda v: v @ q)
    assert st._vectors is None
    np.testing.assert_allclose(scores, st.vectors_of(rows) @ q, atol=1e-6)


@pytest.mark.parametrize("negatives", ["kmeans", "random"])
def test_a_session_round_on_codes_never_builds_the_matrix(sq8_store, monkeypatch, negatives):
    """The find-features loop (k-means negatives, scoring every chip) on a store of codes:
    the same results as on the exact matrix, without building it."""
    import clay_search.store.store as store_mod
    from clay_search.session import POSITIVE, Session

    info, _, _, _ = sq8_store
    monkeypatch.setattr(store_mod, "_SCORE_BLOCK", 1_000)
    results = []
    for index in ("auto", "exact"):
        st = clay_search.connect(info.path, index=index)
        s = Session.start(st, negatives_per_positive=4, negatives=negatives)
        s.label(["c1", "c2"], POSITIVE)
        rnd = s.run_round(st, k=10, cv_folds=0)
        results.append(rnd.results.to_pandas())
        if index == "auto":
            assert st._vectors is None
    assert results[0]["chip_id"].tolist() == results[1]["chip_id"].tolist()
    np.testing.assert_allclose(results[0]["score"], results[1]["score"], atol=1e-5)
