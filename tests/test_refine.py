"""refine(): a logistic regression on labelled chips ranks the rest."""

from __future__ import annotations

import numpy as np
import pytest
from store_fixtures import cached_store

import clay_search
from clay_search.errors import QueryError

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory):
    return clay_search.connect(cached_store(tmp_path_factory, shared_data))


def _ids(store, label):
    df = store.chips().to_pandas()
    return list(df.loc[df["label"] == label, "chip_id"])


def test_refine_ranks_the_labelled_class_first(store):
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


def test_refine_with_filters_and_background(store):
    water = _ids(store, "SeaLake")
    res = store.refine(water[:3], k=5, start="2019-01-01", end="2020-12-31")
    assert len(res) == 5 and res.meta["background"] == 30
    allowed = set(store.chips(start="2019-01-01", end="2020-12-31").chip_ids)
    assert set(res.chip_ids) <= allowed


def test_refine_errors(store):
    with pytest.raises(QueryError, match="no positives"):
        store.refine([], [store.chips().chip_ids[0]])
    with pytest.raises(QueryError, match="k must"):
        store.refine(_ids(store, "SeaLake")[:2], k=0)
