"""refine(): a logistic regression on labelled chips ranks the rest."""

from __future__ import annotations

import numpy as np
import pytest

import clay_search
from clay_search.errors import QueryError


@pytest.fixture(scope="module")
def store(sample_store):
    """The sample store the repository ships (3 chips per class)."""
    return clay_search.connect(sample_store)


@pytest.fixture(scope="module")
def shared(shared_store):
    """Every EuroSAT MS chip of ../shared/data (the extra, stronger ranking check)."""
    return clay_search.connect(shared_store)


def _ids(store, label):
    df = store.chips().to_pandas()
    return list(df.loc[df["label"] == label, "chip_id"])


@pytest.mark.shared_data
def test_refine_ranks_the_labelled_class_first(shared):
    store = shared
    water, forest = _ids(store, "SeaLake"), _ids(store, "Forest")
    others = [c for c in store.chips().chip_ids if c not in set(water)]
    rng = np.random.default_rng(0)
    pos = water[:5]
    neg = list(rng.choice(others, 15, replace=False))
    res = store.refine(pos, neg)
    assert len(res) == len(store) - 20  # every unlabelled chip scored
    assert not set(pos + neg) & set(res.chip_ids)
    s = res.scores
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) <= 0)
    top = res.chip_ids[:10]
    base_rate = (len(water) - 5) / len(res)
    hit_rate = len(set(top) & set(water)) / 10
    assert hit_rate >= 3 * base_rate, (hit_rate, base_rate)
    assert forest  # the store holds other classes too


def test_refine_scores_every_unlabelled_chip(store):
    water = _ids(store, "SeaLake")
    others = [c for c in store.chips().chip_ids if c not in set(water)]
    pos, neg = water[:2], others[:6]
    res = store.refine(pos, neg)
    assert len(res) == len(store) - 8 and not set(pos + neg) & set(res.chip_ids)
    s = res.scores
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) <= 0)
    labelled = store.refine(pos, neg, exclude_examples=False).to_pandas().set_index("chip_id")
    assert labelled.loc[pos, "score"].mean() > labelled.loc[neg, "score"].mean()


def test_refine_with_filters_and_background(store):
    water = _ids(store, "SeaLake")
    res = store.refine(water[:2], k=5, start="2019-01-01", end="2021-12-31")
    assert len(res) == 5 and res.meta["background"] == 20
    allowed = set(store.chips(start="2019-01-01", end="2021-12-31").chip_ids)
    assert set(res.chip_ids) <= allowed


def test_refine_adds_background_beside_labelled_negatives(store):
    """A few labelled negatives cannot stand for everything else: random background chips
    (never labelled ones) join them unless ``background=0``."""
    water = _ids(store, "SeaLake")
    others = [c for c in store.chips().chip_ids if c not in set(water)]
    res = store.refine(water[:2], others[:3])
    assert res.meta["negatives"] == 3 and res.meta["background"] == 20
    only = store.refine(water[:2], others[:3], background=0)
    assert only.meta["background"] == 0
    assert not np.allclose(
        res.to_pandas().set_index("chip_id").loc[only.chip_ids, "score"], only.scores
    )


def test_refine_errors(store):
    with pytest.raises(QueryError, match="no positives"):
        store.refine([], [store.chips().chip_ids[0]])
    with pytest.raises(QueryError, match="k must"):
        store.refine(_ids(store, "SeaLake")[:2], k=0)
