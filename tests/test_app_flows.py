"""The Streamlit app driven with AppTest over a real store built from the shipped sample.

Flows: store states (none, missing, empty), pick + search, refine rounds, filters, export,
query by upload (good and bad files).
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from store_fixtures import eurosat_files, read_chips, rows_table
from streamlit.testing.v1 import AppTest

from clay_search.app import exports
from clay_search.store import open_chips_table, open_or_create_store

SCRIPT = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


@pytest.fixture(scope="module")
def store_path(sample_store: Path) -> Path:
    """30 real EuroSAT MS chips (3 per class) with nano-encoder embeddings."""
    return sample_store


@pytest.fixture(scope="module")
def weights(nano_weights: Path) -> Path:
    """The weights the store was embedded with (for uploads)."""
    return nano_weights


@pytest.fixture
def app(store_path: Path, weights: Path, monkeypatch) -> AppTest:
    """The app on the sample store, after its first run."""
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(store_path))
    monkeypatch.setenv("CLAY_SEARCH_WEIGHTS", str(weights))
    at = AppTest.from_file(str(SCRIPT), default_timeout=120).run()
    _no_failure(at)
    return at


def _no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _browse_ids(at: AppTest) -> list[str]:
    return [b.key.removeprefix("browse-pos-") for b in at.button if b.key.startswith("browse-pos-")]


def _deck(at: AppTest) -> dict:
    """The arguments the map component was drawn with (chips, overviews, thumbnails, ...)."""
    charts = at.get("component_instance")
    assert len(charts) == 1
    return json.loads(charts[0].proto.json_args)


def _deck_ids(at: AppTest) -> set[str]:
    return {row["chip_id"] for row in _deck(at)["chips"]}


def _search(at: AppTest, positives: list[str], negatives: list[str] = ()) -> AppTest:
    for c in positives:
        at.button(key=f"browse-pos-{c}").click().run()
    for c in negatives:
        at.button(key=f"browse-neg-{c}").click().run()
    at.button(key="search").click().run()
    _no_failure(at)
    return at


def test_no_store_and_missing_store(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAY_SEARCH_STORE", raising=False)
    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    _no_failure(at)
    assert "No store given" in at.info[0].value
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(tmp_path / "nowhere"))
    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    _no_failure(at)
    assert "No store at" in at.warning[0].value
    assert "clay-search ingest" in at.info[0].value


def test_empty_store(monkeypatch, tmp_path: Path) -> None:
    info = open_or_create_store(tmp_path / "empty", "some-model", 32)
    open_chips_table(info, create=True)
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(tmp_path / "empty"))
    at = AppTest.from_file(str(SCRIPT), default_timeout=60).run()
    _no_failure(at)
    assert any("holds no chips" in i.value for i in at.info)
    assert at.metric[0].value == "0"


def test_overview_and_browse(app: AppTest) -> None:
    assert [m.label for m in app.metric] == ["Chips", "Table version"]
    assert app.metric[0].value == "30"
    side = " ".join(m.value for m in app.sidebar.markdown)
    assert "sentinel-2-l2a" in side and "2018" in side
    ids = _browse_ids(app)
    assert len(ids) == 24  # first gallery page of the 30 chips
    assert len(_deck_ids(app)) == 30  # every footprint on the map
    assert len(app.get("image")) == 24  # thumbnails
    deck = _deck(app)
    # offline imagery: one overview per source (each sample chip is its own file), thumbnails
    assert len(deck["overviews"]) == 30 and len(deck["thumbnails"]) == 30
    assert all(o["image"].startswith("data:image/png;base64,") for o in deck["overviews"])
    assert deck["basemap_url"] is None


def test_pick_and_search(app: AppTest, store_path: Path) -> None:
    ids = _browse_ids(app)
    app.slider(key="k").set_value(10).run()
    _search(app, [ids[0]])
    ss = app.session_state
    assert ss["labels"] == {ids[0]: 1}
    df = ss["results_df"]
    assert len(df) == 10 and ids[0] not in set(df["chip_id"])
    assert np.all(np.diff(df["score"].to_numpy()) <= 1e-6)  # best first
    assert "10 results" in app.success[0].value
    assert _deck_ids(app) == set(df["chip_id"]) | {ids[0]}  # results + the example
    chips = _deck(app)["chips"]
    fills = {r["chip_id"]: tuple(r["fill"]) for r in chips}
    assert len(set(fills.values())) > 2  # coloured by score
    assert fills[ids[0]][3] == 0  # the example: outline only
    example = next(r for r in chips if r["chip_id"] == ids[0])
    assert example["line"][:3] == [0, 200, 83] and "(example)" in example["tip"]
    assert app.button(key=f"results-pos-{df['chip_id'].iat[0]}")  # gallery of results
    # the same query through the Python API gives the same ranking
    import clay_search

    api = clay_search.connect(str(store_path)).search([ids[0]], k=10)
    assert api.chip_ids == list(df["chip_id"])


def test_search_without_positives_says_what_to_do(app: AppTest) -> None:
    app.button(key="search").click().run()
    _no_failure(app)
    assert "Mark at least one chip Positive" in app.warning[0].value
    assert app.session_state["results_df"] is None


def test_refine_rounds_keep_labels(app: AppTest) -> None:
    ids = _browse_ids(app)
    _search(app, [ids[0], ids[1]])
    first = app.session_state["results_df"]
    worst = first["chip_id"].iat[23]  # last card of gallery page 1
    app.button(key=f"results-neg-{worst}").click().run()
    app.button(key="refine").click().run()
    _no_failure(app)
    second = app.session_state["results_df"]
    assert worst not in set(second["chip_id"])  # labelled chips leave the ranking
    assert ((second["score"] >= 0) & (second["score"] <= 1)).all()  # classifier probabilities
    best = second["chip_id"].iat[0]
    app.button(key=f"results-pos-{best}").click().run()
    app.button(key=f"results-pos-{best}").click().run()  # a second click clears the label
    assert best not in app.session_state["labels"]
    app.button(key=f"results-pos-{best}").click().run()
    app.button(key="refine").click().run()
    _no_failure(app)
    rounds = app.session_state["rounds"]
    assert [r["kind"] for r in rounds] == ["search", "refine", "refine"]
    assert [(r["positives"], r["negatives"]) for r in rounds] == [(2, 0), (2, 1), (3, 1)]
    # labelled chips leave the results; the labels panel removes one label
    app.selectbox(key="unlabel-pick").set_value(best).run()
    app.button(key="unlabel").click().run()
    _no_failure(app)
    assert best not in app.session_state["labels"] and len(app.session_state["labels"]) == 3


def test_filters_label_date_area(app: AppTest) -> None:
    app.multiselect(key="f-label").set_value(["Forest"]).run()
    _no_failure(app)
    ids = _browse_ids(app)
    assert len(ids) == 3 and len(_deck_ids(app)) == 3
    _search(app, [ids[0]])
    df = app.session_state["results_df"]
    assert len(df) == 2 and set(df["label"]) == {"Forest"}
    app.multiselect(key="f-label").set_value([]).run()
    app.button(key="clear-results").click().run()
    # date range: only 2019
    app.checkbox(key="f-date-on").check().run()
    app.date_input(key="f-date").set_value((date(2019, 1, 1), date(2019, 12, 31))).run()
    _no_failure(app)
    app.button(key="search").click().run()
    df = app.session_state["results_df"]
    assert len(df) > 0 and all(d.year == 2019 for d in df["datetime"])
    app.checkbox(key="f-date-on").uncheck().run()
    # area: a box around one chip's footprint
    row = df.iloc[0]
    app.radio(key="f-area").set_value("Box (lon/lat)").run()
    for key, v in (("f-w", row.minx), ("f-s", row.miny), ("f-e", row.maxx), ("f-n", row.maxy)):
        app.number_input(key=key).set_value(float(v)).run()
    app.button(key="search").click().run()
    _no_failure(app)
    df2 = app.session_state["results_df"]
    assert 1 <= len(df2) < 30
    assert ((df2["maxx"] >= row.minx) & (df2["minx"] <= row.maxx)).all()
    # an impossible box is explained, not a crash
    app.number_input(key="f-e").set_value(float(row.minx) - 1).run()
    _no_failure(app)
    assert "Filter problem" in app.error[0].value


def test_drawn_area_bad_and_good(app: AppTest) -> None:
    app.radio(key="f-area").set_value("Pasted area (WKT / GeoJSON)").run()
    app.text_area(key="f-wkt").input("POLYGON((1 2, 3").run()
    _no_failure(app)
    assert "could not read the query geometry" in app.error[0].value
    app.text_area(key="f-wkt").input("POLYGON((-20 30, 40 30, 40 70, -20 70, -20 30))").run()
    _no_failure(app)
    assert not app.error and len(_browse_ids(app)) == 24


def test_export_results_and_labels(app: AppTest, tmp_path: Path) -> None:
    ids = _browse_ids(app)
    _search(app, [ids[3]])
    keys = {b.key for b in app.get("download_button")}
    assert {"dl-geojson", "dl-geoparquet", "dl-labels-json", "dl-labels-csv"} <= keys
    res = app.session_state["results"]
    gj = json.loads(exports.results_bytes(res, "GeoJSON"))
    assert len(gj["features"]) == 50 - 21  # k=50 over 29 other chips
    assert gj["features"][0]["geometry"]["type"] == "Polygon"
    (tmp_path / "r.parquet").write_bytes(exports.results_bytes(res, "GeoParquet"))
    gdf = gpd.read_parquet(tmp_path / "r.parquet")
    assert (
        len(gdf) == 29
        and gdf.crs.is_geographic
        and "WGS 84" in gdf.crs.name
        and "score" in gdf.columns
    )
    with pytest.raises(ValueError, match="unknown export format"):
        exports.results_bytes(res, "KML")


def test_bad_uploads_never_crash(app: AppTest) -> None:
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 120, 30)).save(png, format="PNG")
    cases = [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a readable PNG"),
        ("renamed.tif", png.getvalue(), "holds a PNG"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (6 * 1024 * 1024), "limit is 5 MB"),
    ]
    for name, data, words in cases:
        app.file_uploader(key="upload-file").set_value((name, data, "image/png")).run()
        _no_failure(app)
        assert words in app.error[0].value, (name, app.error[0].value)
        assert app.session_state["upload"] is None
    app.button(key="search").click().run()  # the rest of the page still works
    _no_failure(app)


def test_query_by_upload(app: AppTest, sample_dir: Path) -> None:
    tif = sorted((sample_dir / "eurosat_ms" / "River").glob("*.tif"))[0]
    app.file_uploader(key="upload-file").set_value((tif.name, tif.read_bytes(), "image/tiff")).run()
    _no_failure(app)
    assert not app.error and "13 band(s)" in app.caption[0].value
    bands = "B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A"
    app.text_input(key="upload-bands").input(bands).run()
    app.button(key="search-upload").click().run()
    _no_failure(app)
    assert not app.error, [e.value for e in app.error]
    df = app.session_state["results_df"]
    assert len(df) == 30 and df["label"].iat[0] == "River"  # the chip finds itself first


@pytest.fixture(scope="module")
def half_dated_store(sample_dir: Path, tmp_path_factory) -> Path:
    """The 30 sample chips with no acquisition date on 20 of them (random vectors)."""
    _, rows = read_chips(eurosat_files(sample_dir))
    for r in rows[:20]:
        r["datetime"] = None
    vecs = np.random.default_rng(0).normal(size=(len(rows), 16)).astype(np.float32)
    info = open_or_create_store(tmp_path_factory.mktemp("undated") / "s", "test-model", 16)
    open_chips_table(info, create=True).add(rows_table(rows, vecs, "test-model"))
    return info.path


def test_date_filter_says_what_it_removed(half_dated_store: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(half_dated_store))
    at = AppTest.from_file(str(SCRIPT), default_timeout=120).run()
    _no_failure(at)
    assert len(_browse_ids(at)) == 24 and not at.info
    at.checkbox(key="f-date-on").check().run()
    _no_failure(at)
    msgs = [i.value for i in at.info]
    assert any("The date filter removed 20 of 30 chips: 20 have no acquisition date." in m
               for m in msgs), msgs  # fmt: skip
    assert len(_browse_ids(at)) == 10
    # keep the undated chips: all 30 again, and nothing is said to be removed
    at.checkbox(key="f-undated").check().run()
    _no_failure(at)
    assert len(_browse_ids(at)) == 24 and not at.info
    at.checkbox(key="f-undated").uncheck().run()
    # a label whose chips are all undated: the empty page says why, not just "no chips"
    at.multiselect(key="f-label").set_value(["Forest"]).run()
    _no_failure(at)
    warn = at.warning[0].value
    assert "No chips match the filters." in warn
    assert "The date filter removed 3 of 3 chips: 3 have no acquisition date." in warn


def test_session_round_review_area_geojson_and_files(app: AppTest, tmp_path: Path) -> None:
    """A classifier round with trees and k-means negatives, review, area and GeoJSON labels,
    then the session file saved and opened again."""
    from clay_search.app import session_panel as SP

    ids = _browse_ids(app)
    app.selectbox(key="s-classifier").set_value("lightgbm").run()
    app.selectbox(key="s-negatives").set_value("kmeans").run()
    app.number_input(key="s-per-positive").set_value(5).run()
    app.button(key=f"browse-pos-{ids[0]}").click().run()
    app.button(key=f"browse-pos-{ids[1]}").click().run()
    app.button(key="refine").click().run()
    _no_failure(app)
    assert "refine round 1: gradient-boosted trees on 2 positive" in app.success[0].value
    rnd = app.session_state[SP.ROUND]
    assert rnd.record.classifier == "lightgbm" and rnd.record.negatives == "kmeans"
    assert 0 < rnd.record.background <= 10  # k-means: at most 5 per positive
    row = app.session_state["rounds"][-1]
    assert row["classifier"] == "lightgbm" and "cv_precision" in row
    assert any("spatial CV" in c.value for c in app.caption)
    # the confidence slider pages only the detections above it
    df = app.session_state["results_df"]
    thr = float(np.median(df["score"]))
    app.slider(key="confidence").set_value(round(thr, 2)).run()
    shown = [b.key.removeprefix("results-pos-") for b in app.button
             if b.key.startswith("results-pos-")]  # fmt: skip
    expect = df[df["score"] >= round(thr, 2)]["chip_id"].tolist()[:24]
    assert sorted(shown) == sorted(expect) and len(shown) < len(df)
    # reject a detection: a weighted negative; confirm one: a positive from the review
    app.button(key=f"results-neg-{shown[0]}").click().run()
    app.button(key=f"results-pos-{shown[1]}").click().run()
    assert app.session_state[SP.WEIGHTS][shown[0]] == 3.0
    assert app.session_state[SP.HOW][shown[1]] == "review"
    app.button(key="refine").click().run()
    _no_failure(app)
    s = app.session_state[SP.SESSION]
    assert s.labels[shown[0]].weight == 3.0 and s.labels[shown[0]].label == 0
    assert len(s.rounds) == 2
    # label every chip under a drawn polygon
    row0 = df.iloc[-1]
    box = shapely.box(row0.minx, row0.miny, row0.maxx, row0.maxy)
    app.session_state["drawn"] = shapely.geometry.mapping(box)
    app.run()
    app.button(key="area-pos").click().run()
    _no_failure(app)
    assert app.session_state["labels"][row0.chip_id] == 1
    assert app.session_state[SP.HOW][row0.chip_id] == "polygon"
    # bulk labels from a GeoJSON of points
    row1 = df.iloc[-2]
    centre = [(row1.minx + row1.maxx) / 2, (row1.miny + row1.maxy) / 2]
    pt = {"type": "Point", "coordinates": centre}
    feature = {"type": "Feature", "geometry": pt, "properties": {}}
    doc = json.dumps({"type": "FeatureCollection", "features": [feature]})
    upload = ("sites.geojson", doc.encode(), "application/json")
    app.file_uploader(key="labels-geojson").set_value(upload).run()
    _no_failure(app)
    assert app.session_state["labels"][row1.chip_id] == 1
    # save the session, clear, open it again
    settings = SP.SessionSettings("lightgbm", "kmeans", 5, 3.0)
    data = SP._session_bytes(_store(app), app.session_state, settings, "parquet")
    labels = dict(app.session_state["labels"])
    app.button(key="clear-labels").click().run()
    assert app.session_state["labels"] == {}
    upload = ("s.parquet", data, "application/octet-stream")
    app.file_uploader(key="session-file").set_value(upload).run()
    _no_failure(app)
    assert app.session_state["labels"] == labels
    assert any("Opened s.parquet" in m.value for m in app.success)
    assert app.session_state[SP.WEIGHTS][shown[0]] == 3.0


def _store(app: AppTest):
    """The Store the app shows (what its Save session download writes from)."""
    import clay_search

    return clay_search.connect(app.session_state["store-uri"])


def test_upload_search_with_the_sensor_filter_set(app: AppTest, sample_dir: Path) -> None:
    """The image's sensor and the sensor filter are two things (was: 'multiple values for
    keyword argument sensor')."""
    tif = sorted((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))[0]
    app.multiselect(key="f-sensor").set_value(["sentinel-2-l2a"]).run()
    app.file_uploader(key="upload-file").set_value((tif.name, tif.read_bytes(), "image/tiff")).run()
    app.selectbox(key="upload-sensor").set_value("sentinel-2-l2a").run()
    bands = "B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A"
    app.text_input(key="upload-bands").input(bands).run()
    app.button(key="search-upload").click().run()
    _no_failure(app)
    assert not app.error, [e.value for e in app.error]
    df = app.session_state["results_df"]
    assert len(df) == 30 and set(df["sensor"]) == {"sentinel-2-l2a"}
    assert df["label"].iat[0] == "Forest"
