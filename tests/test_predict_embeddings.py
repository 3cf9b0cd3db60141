"""`predict --store` from the stored embeddings (no pixel read) when they are the head's
features; from re-read pixels, with the reason, when they are another encoder's or pooling's;
refused (with the fix) when they are the head's encoder's but made from chips prepared with
other bands or normalisation. Heads fine-tuned with the defaults fit stores ingested with the
defaults."""

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
    """Heads fine-tuned with the CLI's defaults (the chips planned with the weights'
    normalisation record, as ingest plans them), and one with ``--stats sensor``."""
    root = tmp_path_factory.mktemp("heads")
    data = sample_dir / "eurosat_ms"
    finetune_classify(data, root / "pooled", epochs=15, **FAST)  # mean+std: the store's
    finetune_classify(data, root / "cls", epochs=2, pooling="cls", **FAST)
    finetune_classify(data, root / "sensor", epochs=2, stats="sensor", **FAST)
    return root


def _ingest(sample_dir, tmp_path, **options):
    from clay_search.ingest import run as ingest

    data = tmp_path / "eurosat_ms"
    if not data.exists():
        shutil.copytree(sample_dir / "eurosat_ms", data)
    path = tmp_path / f"store-{options.get('stats', 'defaults')}"
    ingest([str(data)], path, workers=0, **options)
    assert clay_search.connect(path).count()["total"] == 30
    return path, data


@pytest.fixture
def store(sample_dir, tmp_path):
    """The sample ingested with the CLI's defaults."""
    return _ingest(sample_dir, tmp_path)


def _manifest_bands(path) -> set[tuple[str, ...]]:
    import json

    out = set()
    for f in (path / "runs").glob("*.json"):
        out |= {tuple(r["bands"]) for r in json.loads(f.read_text())["sources"] if r.get("bands")}
    return out


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


def test_head_trained_with_defaults_fits_a_store_ingested_with_defaults(heads, store, tmp_path):
    """Fine-tuning plans and normalises as ingest does for the same weights and files: the
    head's bands are the store's (all 13 EuroSAT MS bands the weights were trained with, not
    the table's 10), its normaliser is ingest's, so `predict --store` uses the stored vectors;
    they give what the head gives on the files themselves."""
    import json

    import pandas as pd

    from clay_search.predict import predict_chips

    path, data = store
    spec = json.loads((heads / "pooled" / "head.json").read_text())
    assert _manifest_bands(path) == {tuple(spec["bands"])} and len(spec["bands"]) == 13
    dec = spec["normalisation"]
    assert dec["stats"] == "auto" and dec["record"] and dec["record_config"]["series"]
    assert spec["normaliser"]["stats_source"] == "weights"
    rep = predict_store(heads / "pooled", path)
    assert rep.features_from == "embeddings" and rep.chips == 30, rep.features_note
    t = clay_search.connect(path).table.to_arrow().to_pandas()
    direct = pd.read_parquet(
        predict_chips(heads / "pooled", [data], tmp_path / "direct.parquet").written[0]
    )
    both = t.merge(direct, on=["source", "window"])
    assert len(both) == 30
    assert (both["pred_label"] == both["label_pred"]).all()
    assert np.abs(both["pred_score"] - both["score"]).max() < 1e-3


def test_store_made_otherwise_is_refused_with_the_fix(heads, sample_dir, tmp_path):
    """Vectors of the head's encoder made from otherwise prepared chips are refused (no silent
    re-read); --features pixels re-reads with the head's bands; a head trained with the
    store's --stats uses its vectors."""
    path, _ = _ingest(sample_dir, tmp_path, stats="sensor")  # the table's 10 bands
    assert {len(b) for b in _manifest_bands(path)} == {10}
    with pytest.raises(HeadError, match=r"embedded with bands .*--stats sensor.*--features pixel"):
        predict_store(heads / "pooled", path)
    rep = predict_store(heads / "pooled", path, features="pixels")
    assert rep.features_from == "pixels" and rep.chips == 30 and not rep.skipped
    rep = predict_store(heads / "sensor", path)
    assert rep.features_from == "embeddings" and rep.chips == 30, rep.features_note


def test_other_normalisation_is_refused(heads, store, tmp_path):
    import json

    path, _ = store
    bad = tmp_path / "pooled_other_norm"
    shutil.copytree(heads / "pooled", bad)
    doc = json.loads((bad / "head.json").read_text())
    doc["normaliser"]["mean"] = [m + 1.0 for m in doc["normaliser"]["mean"]]
    (bad / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="normalised otherwise.*--features pixels"):
        predict_store(bad, path)
    rep = predict_store(bad, path, features="pixels")
    assert rep.features_from == "pixels" and "pixels asked for" in rep.features_note


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


def test_cli_refusal_is_one_line(heads, sample_dir, tmp_path):
    path, _ = _ingest(sample_dir, tmp_path, stats="sensor")
    cmd = [sys.executable, "-m", "clay_search.cli.main", "predict", "--head"]
    r = subprocess.run(
        [*cmd, str(heads / "pooled"), "--store", str(path)], capture_output=True, text=True
    )
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in err and "--features pixels" in err, err


def test_cli_finetune_takes_ingest_stats(sample_dir, tmp_path):
    """`finetune --stats` is ingest's option: `--stats sensor` trains on the table's 10 bands
    (recorded in head.json); a bad value is one line, exit 2."""
    import json

    cmd = [sys.executable, "-m", "clay_search.cli.main", "finetune", "classify"]
    data = str(sample_dir / "eurosat_ms")
    out = tmp_path / "h"
    r = subprocess.run(
        [*cmd, data, "--out", str(out), "--stats", "sensor", "--epochs", "1", "-q"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    spec = json.loads((out / "head.json").read_text())
    assert len(spec["bands"]) == 10 and spec["normalisation"]["stats"] == "sensor"
    assert spec["normalisation"]["record"] is None
    assert spec["normaliser"]["stats_source"] == "sensor"
    r = subprocess.run(
        [*cmd, data, "--out", str(tmp_path / "x"), "--stats", "bogus", "-q"],
        capture_output=True,
        text=True,
    )
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in err and "--stats 'bogus'" in err, err


def test_predict_into_a_store_being_written_is_refused(heads, store):
    """``predict --store`` writes columns and syncs the index: a writer like ingest, so it
    waits its turn (refused with the holder's name) instead of committing beside another."""
    import fcntl
    import json
    import os

    from clay_search.errors import StoreBusyError

    path, _ = store
    before = clay_search.connect(path).table.version
    fd = os.open(path / ".write.lock", os.O_RDWR | os.O_CREAT, 0o644)  # another writer
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, json.dumps({"pid": 4242, "purpose": "ingest", "since": "now"}).encode(), 0)
        with pytest.raises(StoreBusyError, match=r"being written by ingest \(pid 4242.*predict"):
            predict_store(heads / "pooled", path)
    finally:
        os.close(fd)
    assert clay_search.connect(path).table.version == before
    assert predict_store(heads / "pooled", path).chips == 30  # its turn now
