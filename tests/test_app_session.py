"""The app's labelling session with AppTest on real stores: active learning (the least sure
chips to label next) and the patch heatmap over the gallery's and the map's thumbnails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_patches import planted  # noqa: F401 - the planted-feature GeoTIFF fixture

import clay_search
from clay_search.app import session_panel as SP
from clay_search.app.map_component import data_url
from clay_search.ingest import run
from clay_search.patches import heatmap_png, patch_similarity, patch_tokens

SCRIPT = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


def _open(monkeypatch, store: Path, weights: Path) -> AppTest:
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(store))
    monkeypatch.setenv("CLAY_SEARCH_WEIGHTS", str(weights))
    at = AppTest.from_file(str(SCRIPT), default_timeout=180).run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _keys(at: AppTest, prefix: str) -> list[str]:
    return [b.key.removeprefix(prefix) for b in at.button if b.key.startswith(prefix)]


def test_active_learning_shows_the_least_sure_chips(sample_store, nano_weights, monkeypatch):
    at = _open(monkeypatch, sample_store, nano_weights)
    ids = _keys(at, "browse-pos-")
    at.number_input(key="s-per-positive").set_value(5).run()
    for c in ids[:2]:
        at.button(key=f"browse-pos-{c}").click().run()
    at.button(key="refine").click().run()
    _ok(at)
    assert not _keys(at, "active-pos-")  # optional: off until asked for
    at.checkbox(key=SP.ACTIVE).check().run()
    _ok(at)
    rnd = at.session_state[SP.ROUND]
    want, _ = rnd.uncertain(SP.ACTIVE_COUNT, exclude=at.session_state["labels"])
    shown = _keys(at, "active-pos-")
    assert sorted(shown) == sorted(want) and len(shown) == min(SP.ACTIVE_COUNT, 28)
    frame = SP.uncertain_frame(clay_search.connect(sample_store), at.session_state)
    assert list(frame["chip_id"]) == list(want)  # least sure first (cards go column by column)
    assert any("least sure chips of round 1" in c.value for c in at.caption)
    # a label from that list is recorded as active learning and leaves the list
    at.button(key=f"active-neg-{shown[0]}").click().run()
    _ok(at)
    assert at.session_state["labels"][shown[0]] == -1
    assert at.session_state[SP.HOW][shown[0]] == "active"
    assert at.session_state[SP.WEIGHTS][shown[0]] == 1.0  # not a rejected detection
    assert shown[0] not in _keys(at, "active-pos-")
    at.button(key="refine").click().run()
    _ok(at)
    s = at.session_state[SP.SESSION]
    assert s.labels[shown[0]].how == "active" and len(s.rounds) == 2


@pytest.fixture(scope="module")
def planted_store(planted, nano_embedder, tmp_path_factory) -> Path:  # noqa: F811
    """The planted NAIP crop ingested without patch embeddings (the heatmap recomputes)."""
    store = tmp_path_factory.mktemp("app_planted") / "store"
    report = run([planted], store, embedder=nano_embedder, chip_size=64, sensor="naip", workers=0)
    assert report.ok and report.chips_written == 4
    return store


def test_patch_heatmap_over_gallery_and_map(planted_store, nano_weights, monkeypatch):
    at = _open(monkeypatch, planted_store, nano_weights)
    store = clay_search.connect(planted_store, weights=nano_weights)
    wins = {
        tuple(json.loads(w)[k] for k in ("col_off", "row_off")): c
        for c, w in zip(
            store.attrs.column("chip_id").to_pylist(),
            store.attrs.column("window").to_pylist(),
            strict=True,
        )
    }
    query, hit = wins[(0, 0)], wins[(64, 64)]
    at.button(key=f"browse-pos-{query}").click().run()
    at.button(key="search").click().run()
    _ok(at)
    deck = json.loads(at.get("component_instance")[0].proto.json_args)
    plain = {t["chip_id"]: t["image"] for t in deck["thumbnails"]}
    at.checkbox(key=SP.HEATMAP).check().run()
    _ok(at)
    deck = json.loads(at.get("component_instance")[0].proto.json_args)
    heated = {t["chip_id"]: t["image"] for t in deck["thumbnails"]}
    results = at.session_state["results_df"]["chip_id"].tolist()
    assert hit in results and set(heated) == set(plain)
    # the map's in-place image of each result is its thumbnail with the heatmap drawn over it
    tokens = patch_tokens(store, results)
    heat = patch_similarity(patch_tokens(store, [query]), tokens)
    thumbs = store.get(results).to_arrow().column("thumbnail").to_pylist()
    for c, t, h in zip(results, thumbs, heat, strict=True):
        assert heated[c] == data_url(heatmap_png(t, h)) != plain[c]
    i = results.index(hit)  # and on the hit it peaks where the planted feature is
    peak = tuple(int(v) for v in np.unravel_index(int(heat[i].argmax()), heat[i].shape))
    assert peak in {(6, 2), (6, 3), (7, 2), (7, 3)}
