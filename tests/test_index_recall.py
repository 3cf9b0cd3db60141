"""Approximate indexes against exact search on real embeddings (recall@50 >= 0.95).

Vectors: patch embeddings of the EuroSAT MS chips (real imagery through a Clay nano encoder),
64 per chip. Queries are the patches of held-out chips, not in the index.
"""

from __future__ import annotations

import numpy as np
import pytest
from store_fixtures import USE_BANDS, eurosat_files, read_chips

from clay_search.index.faiss_index import build_index, exact_topk, recall
from clay_search.index.vectors import l2_normalise

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def patch_vectors(shared_data, nano_embedder):
    raw, _ = read_chips(eurosat_files(shared_data))
    emb = nano_embedder  # one torch thread while in use, restored by the fixture
    out = []
    for s in range(0, len(raw), 64):
        batch = emb.embed_raw(
            raw[s : s + 64].astype(np.float32), "sentinel-2-l2a", USE_BANDS, patches=True
        )
        out.append(batch.patches.reshape(-1, emb.dim))
    return l2_normalise(np.vstack(out))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_recall_at_50(patch_vectors, kind):
    n_query_chips = 10 * 64
    base, queries = patch_vectors[:-n_query_chips], patch_vectors[-n_query_chips:][::4]
    index, params = build_index(base, kind)
    _, found = index.search(np.ascontiguousarray(queries), 50)
    truth = exact_topk(base, queries, 50)
    r = recall(found, truth)
    assert r >= 0.95, (kind, params, r)
    assert len(base) > 10_000


def test_flat_is_exact(patch_vectors):
    base, queries = patch_vectors[:5000], patch_vectors[5000:5050]
    index, _ = build_index(base, "flat")
    _, found = index.search(queries, 50)
    assert recall(found, exact_topk(base, queries, 50)) == 1.0
