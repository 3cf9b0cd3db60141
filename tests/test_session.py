"""The find-features session (clay_search.session): classifiers, negatives, spatial CV, review,
session files across table versions, polygon/GeoJSON labelling, detection polygons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from test_overviews import _grid_store

import clay_search
from clay_search.errors import QueryError, StoreMismatchError
from clay_search.session import (
    NEGATIVE,
    POSITIVE,
    RoundResult,
    Session,
    detection_polygons,
    fit_classifier,
    kmeans_negatives,
    predict,
    random_negatives,
    spatial_cv,
    spatial_folds,
)


@pytest.fixture(scope="module")
def store(sample_store: Path):
    return clay_search.connect(str(sample_store))


def _blobs(n_per: int = 40, seed: int = 0):
    """Two classes in 16-D, each drawn in 5 places (lon/lat clusters)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n_per * 5)
    x = rng.normal(size=(len(y), 16)).astype(np.float32)
    x[y == 1, 0] += 4.0
    place = np.tile(np.repeat(np.arange(5), n_per), 2)
    lonlat = np.stack([place * 10.0 + rng.normal(0, 0.1, len(y)), rng.normal(45, 0.1, len(y))], 1)
    return x, y, lonlat


@pytest.mark.parametrize("kind", ["logreg", "lightgbm"])
def test_classifiers_separate_classes(kind: str) -> None:
    x, y, _ = _blobs()
    model = fit_classifier(kind, x, y, seed=0)
    p = predict(model, x)
    assert p.dtype == np.float32 and p[y == 1].mean() > 0.8 > 0.2 > p[y == 0].mean()
    again = predict(fit_classifier(kind, x, y, seed=0), x)
    assert np.array_equal(p, again)  # seeded
    with pytest.raises(QueryError, match="positive and negative"):
        fit_classifier(kind, x, np.ones(len(x)))
    with pytest.raises(QueryError, match="unknown classifier"):
        fit_classifier("svm", x, y)


def test_spatial_folds_keep_places_together() -> None:
    _, _, lonlat = _blobs()
    folds = spatial_folds(lonlat, 5)
    place = (lonlat[:, 0] / 10).round().astype(int)
    for p in range(5):  # every place lies in exactly one fold, and each fold is one place
        assert len(np.unique(folds[place == p])) == 1
    assert len(np.unique(folds)) == 5
    nan = spatial_folds(np.array([[np.nan, np.nan], [1.0, 2.0], [np.nan, np.nan]]), 2)
    assert len(nan) == 3


def test_spatial_cv_precision() -> None:
    x, y, lonlat = _blobs()
    good = spatial_cv("logreg", x, y, lonlat)
    assert good["folds"] == 5 and good["tested"] == len(y)
    assert good["precision"] >= 0.95 and good["recall"] >= 0.95 and good["average_precision"] > 0.95
    # labels that follow the place, not the pixels: a spatial CV sees through it
    y_place = (lonlat[:, 0] < 25).astype(int)
    leak = spatial_cv("logreg", x, y_place, lonlat)
    assert leak["average_precision"] is None or leak["average_precision"] < 0.9
    one_place = spatial_cv("logreg", x, y, np.zeros((len(y), 2)))
    assert one_place["precision"] is None and "more places" in one_place["note"]


def test_negative_strategies() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16)) * 10
    vecs = np.vstack([c + rng.normal(size=(200, 16)) for c in centres]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exclude = np.arange(0, 1000, 7)
    r = random_negatives(len(vecs), exclude, 50, seed=0)
    assert len(r) == 50 and not np.isin(r, exclude).any()
    pos = vecs[:3]  # positives from cluster 0
    k = kmeans_negatives(vecs, exclude, 4, pos, seed=0)
    assert len(k) == 4 and not np.isin(k, exclude).any()
    clusters = set((k // 200).tolist())
    assert len(clusters) == 4  # one per other cluster: the store's variety
    many = kmeans_negatives(vecs, exclude, 8, pos, seed=0)
    near = np.argsort(-(vecs @ pos.mean(0)))[:16]
    assert not np.isin(many, near).any()  # never the chips most like the positives
    # a store smaller than the request still gives negatives (half of it at most is left out)
    small = kmeans_negatives(vecs[:30], np.array([0, 1]), 20, vecs[:2], seed=0)
    assert 0 < len(small) <= 14 and not np.isin(small, [0, 1]).any()


def test_session_rounds_review_and_strategies(store) -> None:
    ids = store.chips().chip_ids
    labels = store.chips().to_pandas().set_index("chip_id")["label"]
    river = [c for c in ids if labels[c] == "River"]
    s = Session.start(store, negatives_per_positive=5)
    s.label(river[0], POSITIVE, how="gallery")
    rnd = s.run_round(store, k=10)
    assert len(rnd.results) == 10 and river[0] not in rnd.results.chip_ids
    df = rnd.results.to_pandas()
    assert list(df["rank"]) == list(range(1, 11))
    assert np.all(np.diff(df["score"].to_numpy()) <= 0) and len(rnd.chip_ids) == 29
    assert rnd.record.background == 5 and rnd.record.classifier == "logreg"
    assert set(rnd.metrics) >= {"precision", "recall", "average_precision", "folds"}
    # review: confirm one, reject one (weighted); then each classifier and negative strategy
    s.review(rnd.results.chip_ids[0], confirm=True)
    s.review(rnd.results.chip_ids[1], confirm=False)
    assert s.labels[rnd.results.chip_ids[1]].weight == s.correction_weight == 3.0
    assert s.labels[rnd.results.chip_ids[1]].label == NEGATIVE
    for classifier in ("logreg", "lightgbm"):
        for neg in ("random", "kmeans", "hard"):
            s.classifier, s.negatives = classifier, neg
            r = s.run_round(store, k=5)
            assert len(r.results) == 5 and not set(r.results.chip_ids) & set(s.labels)
            assert ((r.scores >= 0) & (r.scores <= 1)).all()
    assert [x.round for x in s.rounds] == list(range(1, 8))
    hard = s.training_set(store)
    s.negatives = "random"
    rand = s.training_set(store)
    assert hard["background"] >= rand["background"]  # + the last round's unlabelled chips
    with pytest.raises(QueryError, match="unknown negatives"):
        Session.start(store, negatives="nearest")


def test_filters_limit_the_round(store) -> None:
    from clay_search.filters import Filters

    ids = store.chips().chip_ids
    s = Session.start(store)
    s.label(ids[0], POSITIVE)
    forest = store.chips(label="Forest").chip_ids
    rnd = s.run_round(store, k=50, filters=Filters(label="Forest"))
    assert set(rnd.chip_ids) == set(forest) - {ids[0]}


def test_label_by_polygon_and_geojson(store, tmp_path: Path) -> None:
    df = store.chips().to_pandas()
    row = df.iloc[4]
    s = Session.start(store)
    inside = shapely.box(row.minx, row.miny, row.maxx, row.maxy)
    assert s.label_area(store, inside, POSITIVE) >= 1 and s.labels[row.chip_id].how == "polygon"
    other = df.iloc[9]
    centre = [(other.minx + other.maxx) / 2, (other.miny + other.maxy) / 2]
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": centre}}
    doc = {"type": "FeatureCollection", "features": [{**feature, "properties": {}}]}
    (tmp_path / "sites.geojson").write_text(json.dumps(doc))
    assert s.label_geojson(store, tmp_path / "sites.geojson") == 1
    assert s.labels[other.chip_id].how == "geojson" and s.labels[other.chip_id].label == POSITIVE
    with pytest.raises(QueryError, match="no geometries"):
        s.label_geojson(store, {"type": "FeatureCollection", "features": []})


@pytest.mark.parametrize("suffix", [".parquet", ".geojson"])
def test_session_save_load_across_versions(store, tmp_path: Path, suffix: str) -> None:
    ids = store.chips().chip_ids
    s = Session.start(store, classifier="lightgbm", negatives="kmeans", negatives_per_positive=4)
    s.label(ids[:2], POSITIVE)
    s.label(ids[2], NEGATIVE, how="review", weight=3.0)
    s.run_round(store, k=5)
    path = s.save(tmp_path / f"session{suffix}", store)
    gdf = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path)
    assert len(gdf) == 3 and gdf.crs.to_epsg() == 4326 and gdf.geometry.notna().all()
    back, notes = Session.load(path, store)
    assert notes == []
    assert {c: (x.label, x.weight, x.how) for c, x in back.labels.items()} == {
        c: (x.label, x.weight, x.how) for c, x in s.labels.items()
    }
    settings = (back.classifier, back.negatives, back.negatives_per_positive)
    assert settings == ("lightgbm", "kmeans", 4)
    assert [r.metrics for r in back.rounds] == [r.metrics for r in s.rounds]
    assert np.allclose(back.embeddings[ids[0]], store.vectors[0], atol=1e-6)

    # a newer table version without one labelled chip: the session still runs, and says so
    newer = tmp_path / "newer"
    shutil.copytree(store.path, newer)
    from clay_search.store import open_chips_table
    from clay_search.store.layout import read_store_info

    table = open_chips_table(read_store_info(newer), create=False)
    table.delete(f"chip_id = '{ids[0]}'")
    store2 = clay_search.connect(str(newer))
    assert store2.version != store.version
    again, notes = Session.load(path, store2)
    assert any(f"table version {store.version}" in n for n in notes), notes
    assert any("1 labelled chip(s) are not in table version" in n for n in notes), notes
    rnd = again.run_round(store2, k=5)
    assert len(rnd.results) == 5 and again.table_version == store2.version

    # another model's session is refused
    bad = json.loads(json.dumps(s.meta()))
    s.model_id = "another-model"
    s.save(tmp_path / f"other{suffix}")
    with pytest.raises(StoreMismatchError, match="another-model"):
        Session.load(tmp_path / f"other{suffix}", store)
    assert bad["format"] == "clay-search-session"
    with pytest.raises(QueryError, match="parquet"):
        s.save(tmp_path / "x.txt")


def test_detection_polygons_dissolve_touching_chips(tmp_path: Path) -> None:
    st = clay_search.connect(str(_grid_store(tmp_path / "g", sources=2)))
    ids = np.array(st.chips().chip_ids, dtype=object)  # s0-*: a 2x2 block, s1-*: another
    scores = np.array([0.9, 0.8, 0.95, 0.7, 0.99, 0.2, 0.1, 0.3], np.float32)
    rnd = RoundResult(None, ids, scores, {}, None)
    gdf = detection_polygons(st, rnd, threshold=0.5)
    assert len(gdf) == 2 and gdf.crs.to_epsg() == 4326
    block = gdf.iloc[0] if gdf.iloc[0]["chips"] == 4 else gdf.iloc[1]
    assert block["chips"] == 4 and block.geometry.geom_type == "Polygon"
    assert np.isclose(block.geometry.area, 0.02 * 0.02)
    assert block["score_max"] == pytest.approx(0.95) and block["score_min"] == pytest.approx(0.7)
    assert gdf.iloc[0]["score_max"] == pytest.approx(0.99) and list(gdf["rank"]) == [1, 2]
    path = tmp_path / "det.geojson"
    gdf.to_file(path)
    assert len(gpd.read_file(path)) == 2
    assert len(detection_polygons(st, rnd, threshold=0.999)) == 0


def test_uncertain_chips_are_nearest_the_boundary(store) -> None:
    """Active learning: the least sure chips (score nearest 0.5) first, labelled ones left out;
    on a real round they are the round's own scores, not its top results."""
    ids = np.array(["a", "b", "c", "d", "e", "f"], object)
    scores = np.array([0.99, 0.8, 0.55, 0.45, 0.3, 0.01], np.float32)
    rnd = RoundResult(None, ids, scores, {}, None)
    got, s = rnd.uncertain(3)
    assert list(got) == ["c", "d", "e"] and np.allclose(s, [0.55, 0.45, 0.3])
    got, _ = rnd.uncertain(2, exclude=["c"])
    assert list(got) == ["d", "e"]
    assert len(rnd.uncertain(0)[0]) == 0 and len(rnd.uncertain(50)[0]) == 6
    with pytest.raises(QueryError, match="n must be"):
        rnd.uncertain(-1)
    chips = store.chips().chip_ids
    sess = Session.start(store, negatives_per_positive=5)
    sess.label(chips[:2], POSITIVE)
    real = sess.run_round(store, k=5)
    picked, ps = real.uncertain(5)
    margin = np.abs(real.scores - 0.5)
    assert np.allclose(np.sort(np.abs(ps - 0.5)), np.sort(margin)[:5])
    assert not set(picked) & set(sess.labels)
    sess.label(picked[:2], NEGATIVE, how="active")
    assert sess.labels[picked[0]].how == "active"
