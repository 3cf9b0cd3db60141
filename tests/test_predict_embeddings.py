"""`predict --store` from the stored embeddings (no pixel read) when they are the head's
features, and from re-read pixels, with the reason, when they are not."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import clay_search
from clay_search.errors import HeadError
from clay_search.predict import predict_store
from clay_search.tasks import finetune_classify

FAST = {"batch_size": 16, "lr": 3e-2, "progress": False, "resume": False, "val_fraction": 0.3}


@pytest.fixture(scope="module")
def heads(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    data = sample_dir / "eurosat_ms"
    finetune_classify(data, root / "pooled", epochs=15, **FAST)  # mean+std: the store's
    finetune_classify(data, root / "cls", epochs=2, pooling="cls", **FAST)
    return root


@pytest.fixture
def store(sample_dir, tmp_path, heads):
    """The sample ingested with the bands and normalisation the heads were trained with.

    Fine-tuning does not yet plan its chips with the weights' normalisation record, so with
    defaults a head trains on the table's 10 EuroSAT MS bands while ingest keeps all 13 (and
    `predict --store` then reads pixels, saying so); the store here matches the heads."""
    import json

    from clay_search.ingest import run as ingest

    spec = json.loads((heads / "pooled" / "head.json").read_text())
    data = tmp_path / "eurosat_ms"
    shutil.copytree(sample_dir / "eurosat_ms", data)
    ingest([str(data)], tmp_path / "store", workers=0, stats="sensor")  # the table's bands
    assert clay_search.connect(tmp_path / "store").count()["total"] == 30, spec["bands"]
    return tmp_path / "store", data


def _preds(path):
    t = clay_search.connect(path).table.to_arrow().sort_by("chip_id")
    return t.column("pred_label").to_pylist(), np.array(t.column("pred_score").to_pylist())


def test_stored_embeddings_are_used_without_reading_pixels(heads, store):
    path, data = store
    pixels = predict_store(heads / "pooled", path, features="pixels")
    assert pixels.features_from == "pixels" and pixels.chips == 30
    labels_px, scores_px = _preds(path)
    shutil.rmtree(data)  # no pixels left to read: the pixel path would skip every chip
    rep = predict_store(heads / "pooled", path)
    assert rep.features_from == "embeddings" and rep.chips == 30 and not rep.skipped
    assert "no pixels read" in rep.features_note
    labels, scores = _preds(path)
    assert None not in labels
    # the same head on the same features: the stored vectors are the encoder's (de-standardised)
    agree = np.mean([a == b for a, b in zip(labels, labels_px, strict=True)])
    assert agree >= 0.9, agree
    assert np.abs(scores - scores_px).max() < 0.05
    gone = predict_store(heads / "pooled", path, features="pixels")
    assert gone.chips == 0 and len(gone.skipped) == 30


def test_other_pooling_reads_pixels_and_says_why(heads, store):
    path, _ = store
    rep = predict_store(heads / "cls", path)
    assert rep.features_from == "pixels" and rep.chips == 30
    assert "cls pooling" in rep.features_note and "the store holds" in rep.features_note
    with pytest.raises(HeadError, match="not this head's features.*cls pooling"):
        predict_store(heads / "cls", path, features="embeddings")


def test_other_normalisation_reads_pixels(heads, store, tmp_path):
    import json

    path, _ = store
    bad = tmp_path / "pooled_other_norm"
    shutil.copytree(heads / "pooled", bad)
    doc = json.loads((bad / "head.json").read_text())
    doc["normaliser"]["mean"] = [m + 1.0 for m in doc["normaliser"]["mean"]]
    (bad / "head.json").write_text(json.dumps(doc))
    rep = predict_store(bad, path)
    assert rep.features_from == "pixels" and "normalised otherwise" in rep.features_note


def test_cli_features_option(heads, store):
    path, _ = store
    cmd = [sys.executable, "-m", "clay_search.cli.main", "predict", "--head"]
    r = subprocess.run(
        [*cmd, str(heads / "pooled"), "--store", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0 and "from stored embeddings" in " ".join(r.stderr.split()), r.stderr
    r = subprocess.run(
        [*cmd, str(heads / "cls"), "--store", str(path), "--features", "embeddings"],
        capture_output=True,
        text=True,
    )
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in err and "cls pooling" in err
