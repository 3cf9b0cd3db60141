"""The app colours the map by predicted class (with a legend) when the store has ``pred_label``
(written by ``clay-search predict --store``; here the columns are written the same way, with the
chips' own labels as the predictions), and by score/grey again when the toggle is off."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from clay_search.app import layers
from clay_search.store import open_chips_table, sync_index
from clay_search.store.layout import read_store_info

SCRIPT = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


@pytest.fixture(scope="module")
def predicted_store(sample_store: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pred") / "store"
    shutil.copytree(sample_store, path)
    info = read_store_info(path)
    table = open_chips_table(info, create=False)
    t = table.search().select(["chip_id", "label"]).limit(None).to_arrow()
    ids = t.column("chip_id").to_pylist()
    labels = t.column("label").to_pylist()
    preds = [lab if i % 5 else None for i, lab in enumerate(labels)]  # every 5th: no prediction
    table.add_columns([pa.field("pred_label", pa.string()), pa.field("pred_score", pa.float32())])
    new = pa.table(
        {
            "chip_id": pa.array(ids, pa.string()),
            "pred_label": pa.array(preds, pa.string()),
            "pred_score": pa.array([0.9 if p else None for p in preds], pa.float32()),
        }
    )
    table.merge_insert("chip_id").when_matched_update_all().execute(new)
    sync_index(path)
    return path


def _chips(at: AppTest) -> list[dict]:
    charts = at.get("component_instance")
    assert len(charts) == 1
    return json.loads(charts[0].proto.json_args)["chips"]


def test_map_coloured_by_predicted_class(predicted_store, nano_weights, monkeypatch):
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(predicted_store))
    monkeypatch.setenv("CLAY_SEARCH_WEIGHTS", str(nano_weights))
    at = AppTest.from_file(str(SCRIPT), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    table = open_chips_table(read_store_info(predicted_store), create=False).to_arrow()
    pred = dict(
        zip(
            table.column("chip_id").to_pylist(), table.column("pred_label").to_pylist(), strict=True
        )
    )
    colors = layers.class_colors(p for p in pred.values() if p)
    assert len(colors) == 10
    chips = _chips(at)
    assert len(chips) == 30
    for c in chips:
        p = pred[c["chip_id"]]
        if p is None:
            assert c["fill"][:3] == [120, 144, 156]  # grey: no prediction
        else:
            assert c["fill"][:3] == colors[p] and f"predicted {p} (0.90)" in c["tip"]
    legend = " ".join(m.value for m in at.markdown if "clay-legend" in m.value)
    assert "Predicted class" in legend and all(name in legend for name in colors)
    # the toggle turns it off: browsing fills are the neutral ones again, no legend
    at.toggle(key="color-by-class").set_value(False).run()
    assert not at.exception
    fills = {tuple(c["fill"][:3]) for c in _chips(at)}
    assert fills == {(120, 144, 156)}
    assert not any("clay-legend" in m.value for m in at.markdown)


def test_class_colours_are_stable_and_distinct():
    a = layers.class_colors(["Forest", "River", "Highway"])
    b = layers.class_colors(["River", "Highway", "Forest", None])
    assert a == b and len({tuple(v) for v in a.values()}) == 3
    assert "&lt;b&gt;" in layers.legend_html({"<b>": [1, 2, 3]})  # names are escaped
