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
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.json)


def _deck_ids(at: AppTest) -> set[str]:
    layer = next(x for x in _deck(at)["layers"] if x["id"] == "chips")
    return {row["chip_id"] for row in layer["data"]}


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
    layer = next(x for x in _deck(app)["layers"] if x["id"] == "chips")
    fills = {r["chip_id"]: tuple(r["fill"]) for r in layer["data"]}
    assert len(set(fills.values())) > 2  # coloured by score
    assert fills[ids[0]][3] == 0  # the example: outline only
    example = next(r for r in layer["data"] if r["chip_id"] == ids[0])
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
    app.radio(key="f-area").set_value("Map view (box)").run()
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
    app.radio(key="f-area").set_value("Drawn area (WKT / GeoJSON)").run()
    app.text_area(key="f-wkt").input("POLYGON((1 2, 3").run()
    _no_failure(app)
    assert "could not read the area" in app.error[0].value
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
