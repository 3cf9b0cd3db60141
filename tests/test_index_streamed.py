"""The index built block by block from the table (what `sync_index` does on a rebuild, so the
embedding matrix is never held whole) equals the one built from the matrix: same training
sample, same tuning queries and truth, same parameters and answers."""

from __future__ import annotations

import numpy as np
import pytest

from clay_search.errors import IndexStaleError
from clay_search.index.faiss_index import (
    build_index,
    build_index_streamed,
    exact_topk,
    recall,
)
from clay_search.index.vectors import l2_normalise


def _clustered(n: int, dim: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, dim))
    return l2_normalise(x.astype(np.float32))


def _blocks(vecs: np.ndarray, size: int):
    calls = []

    def blocks():
        calls.append(1)
        return (vecs[s : s + size] for s in range(0, len(vecs), size))

    return blocks, calls


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_streamed_build_equals_the_matrix_build(kind):
    vecs = _clustered(9_000, 32)
    queries = _clustered(30, 32, seed=9)
    ref, ref_params = build_index(vecs, kind, seed=5)
    blocks, calls = _blocks(vecs, 777)  # blocks that do not divide the rows
    got, params = build_index_streamed(blocks, len(vecs), 32, kind, seed=5)
    assert params == ref_params
    assert got.ntotal == ref.ntotal == len(vecs)
    d_ref, i_ref = ref.search(queries, 20)
    d_got, i_got = got.search(queries, 20)
    np.testing.assert_array_equal(i_got, i_ref)
    np.testing.assert_allclose(d_got, d_ref, rtol=0, atol=1e-6)
    assert len(calls) == (1 if kind == "flat" else 2)  # flat: no sample pass


def test_streamed_hnsw_is_tuned_on_the_same_truth():
    vecs = _clustered(4_000, 16)
    blocks, _ = _blocks(vecs, 500)
    index, params = build_index_streamed(blocks, len(vecs), 16, "hnsw", seed=1)
    assert index.ntotal == len(vecs) and params["ef_search"] >= 50
    q = _clustered(40, 16, seed=4)
    _, found = index.search(q, 50)
    assert recall(found, exact_topk(vecs, q, 50)) >= 0.9


def test_rows_that_change_between_passes_are_refused():
    vecs = _clustered(3_000, 8)
    passes = []

    def blocks():  # the second pass sees a row more: the table moved on meanwhile
        passes.append(1)
        end = len(vecs) if len(passes) == 1 else len(vecs) + 1
        grown = np.vstack([vecs, vecs[:1]])[:end]
        return (grown[s : s + 1000] for s in range(0, end, 1000))

    with pytest.raises(IndexStaleError, match="changed while indexing"):
        build_index_streamed(blocks, len(vecs), 8, "ivf")
