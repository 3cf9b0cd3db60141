"""One normaliser decision for training and ingest, recorded in the weights (issue 18).

A nano model trained a few steps on the shipped EuroSAT MS sample records how its training chips
were normalised; ingest with those weights applies that record (all 13 bands, the training
statistics) and stores the vectors training's own normalisation gives; weights without a
record still ingest (sensor table, with a note). The shipped weights carry the record, so
EuroSAT MS keeps B01/B09/B10 and EuroSAT RGB JPEGs are read as Sentinel-2, not LINZ aerial.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clay_search.ingest import run
from clay_search.ingest.datasets import read_eurosat_ms, read_eurosat_rgb
from clay_search.model.embedder import Embedder
from clay_search.model.normalise import NormalisationRecord, Normaliser
from clay_search.model.train import TrainConfig, train
from clay_search.store import connect

FIXTURES = Path(__file__).parent / "fixtures"
S2_13 = 13


@pytest.fixture(scope="module")
def ms_set(sample_dir):
    """Every shipped EuroSAT MS chip as one training set (statistics of its own chips)."""
    return read_eurosat_ms(sample_dir / "eurosat_ms")


@pytest.fixture(scope="module")
def trained(ms_set, tmp_path_factory) -> Path:
    """Weights of a nano model trained 2 steps on the sample (fp32, seeded)."""
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(size="nano", steps=2, batch_size=4, warmup=1, precision="fp32")
    train([ms_set], out, cfg, resume=False)
    return out


def _embedder(weights: Path) -> Embedder:
    return Embedder.from_weights(weights, precision="fp32")


def test_training_records_its_normaliser(trained, ms_set):
    cfg = json.loads((trained / "config.json").read_text())
    record = NormalisationRecord.from_config(cfg)
    assert record is not None and [s.name for s in record.series] == ["eurosat_ms"]
    (series,) = record.series
    assert series.sensor == "sentinel-2-l2a" and series.dtype == "uint16"
    assert len(series.bands) == S2_13 and {"coastal", "nir09", "cirrus"} <= set(series.bands)
    np.testing.assert_allclose(series.mean, ms_set.mean)
    np.testing.assert_allclose(series.std, ms_set.std)
    assert _embedder(trained).normalisation == record


def test_ingest_with_the_weights_normalises_as_training(trained, ms_set, sample_dir, tmp_path):
    embedder = _embedder(trained)
    store = tmp_path / "store"
    report = run([sample_dir / "eurosat_ms"], store, embedder=embedder, workers=1)
    assert report.ok, [s.error for s in report.failed]
    ((key, norm),) = report.normalisers.items()
    # the record was applied, to all 13 bands, and the report says so
    assert norm["stats_source"] == "weights"
    assert any("trained with (series eurosat_ms)" in n for n in norm["notes"])
    assert key.startswith("sentinel-2-l2a | coastal,blue,") and "nir09,cirrus" in key
    assert all(len(s.bands) == S2_13 for s in report.sources_detail)
    # same numbers as training: the normaliser ingest used on the raw chips of training
    used = Normaliser(np.array(norm["mean"]), np.array(norm["std"]), norm["transform"])
    np.testing.assert_array_equal(used(ms_set.pixels), ms_set.normalised())
    # and the stored vectors are those of training's normalised chips
    table = connect(store).table.to_arrow()
    row = {Path(src).stem: i for i, src in enumerate(table.column("source").to_pylist())}
    assert len(row) == len(ms_set)
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    rows = [row[n] for n in ms_set.names]
    gsd = table.column("gsd").to_numpy()  # ingest's GSD from each file's transform
    want = np.concatenate(
        [
            embedder.embed(
                ms_set.normalised([i]), waves=ms_set.waves, gsd=gsd[r], lonlats=[ms_set.lonlats[i]]
            ).embedding
            for i, r in enumerate(rows)
        ]
    )
    np.testing.assert_allclose(got[rows], want, atol=2e-4, rtol=1e-4)


def test_weights_without_a_record_still_ingest_with_a_note(trained, sample_dir, tmp_path):
    old = tmp_path / "old_weights"
    shutil.copytree(trained, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg.pop("normalisation")
    (old / "config.json").write_text(json.dumps(cfg))
    embedder = _embedder(old)
    assert embedder.normalisation is None
    report = run([sample_dir / "eurosat_ms"], tmp_path / "store", embedder=embedder, workers=1)
    assert report.ok
    assert any("carry no normalisation record" in n for n in report.notes)
    ((_, norm),) = report.normalisers.items()
    assert norm["stats_source"] == "sensor"  # the L2A table; B01/B09/B10 have no statistics
    assert all(len(s.bands) == 10 for s in report.sources_detail)


def test_legacy_record_layout_is_not_applied():
    legacy = {"normalisation": {"eurosat_ms": {"B01": {"mean": 1.0, "std": 2.0}}}}
    assert NormalisationRecord.from_config(legacy) is None
    assert NormalisationRecord.from_config({}) is None


def test_shipped_weights_keep_the_bands_they_were_trained_with(sample_dir, tmp_path):
    """EuroSAT MS through the CLI's defaults: 13 bands with the training statistics (before:
    10 bands through the L2A table, B01/B09/B10 dropped)."""
    embedder = Embedder.from_weights(None, precision="fp32")
    report = run([sample_dir / "eurosat_ms"], tmp_path / "store", embedder=embedder, workers=1)
    assert report.ok
    assert all(len(s.bands) == S2_13 for s in report.sources_detail)
    ((_, norm),) = report.normalisers.items()
    assert norm["stats_source"] == "weights"
    assert any("series eurosat_ms" in n for n in norm["notes"])


def test_eurosat_rgb_jpegs_are_sentinel2(tmp_path):
    """EuroSAT RGB JPEGs (no georeference) are Sentinel-2 by their names, not `linz` by their
    band count, and get the statistics the weights were trained with on them."""
    embedder = Embedder.from_weights(None, precision="fp32")
    root = FIXTURES / "eurosat_rgb"
    report = run([root], tmp_path / "store", embedder=embedder, workers=1)
    assert report.ok, [s.error for s in report.failed]
    assert {s.sensor for s in report.sources_detail} == {"sentinel-2-l2a"}
    assert all(s.bands == ["red", "green", "blue"] for s in report.sources_detail)
    ((_, norm),) = report.normalisers.items()
    assert norm["stats_source"] == "weights"
    assert any("series eurosat_rgb" in n for n in norm["notes"])
    rows = connect(tmp_path / "store").chips().to_pandas()
    assert (rows["gsd"] == 10.0).all() and (rows["sensor"] == "sentinel-2-l2a").all()
    # the same chips read as training reads them normalise to the same numbers
    chips = read_eurosat_rgb(root)
    shipped = NormalisationRecord.from_config({"normalisation": embedder.info.normalisation})
    series = next(s for s in shipped.series if s.name == "eurosat_rgb")
    np.testing.assert_allclose(norm["mean"], series.mean)
    assert chips.pixels.dtype == np.uint8


def test_three_band_images_without_hints_say_how_to_name_the_sensor(tmp_path):
    """A 3-band 8-bit image no hint names is still taken by its band count, and the run says
    how to name the sensor instead."""
    from PIL import Image

    src = FIXTURES / "eurosat_rgb" / "Forest"
    f = next(src.glob("*.jpg"))
    plain = tmp_path / "chips" / "a" / "tile_1.jpg"
    plain.parent.mkdir(parents=True)
    Image.open(f).save(plain)
    (tmp_path / "chips" / "b").mkdir()
    Image.open(f).rotate(90).save(tmp_path / "chips" / "b" / "tile_2.jpg")
    embedder = Embedder.from_weights(None, precision="fp32")
    report = run([tmp_path / "chips"], tmp_path / "store", embedder=embedder, workers=1)
    assert report.ok
    notes = [n for s in report.sources_detail for n in s.notes]
    assert any("guessed from the band count alone" in n and "--sensor" in n for n in notes)


def test_eurosat_ms_without_band_names_is_read_in_its_own_band_order(sample_dir, tmp_path):
    """EuroSAT MS as released names no bands; its order (B8A last) is data in sensors.yaml
    (before: assumed to be the sensor's order, B8A read as the 9th band)."""
    import rasterio

    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.plan import plan_source
    from clay_search.ingest.sources import discover
    from clay_search.model.sensors import SensorRegistry

    f = next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))
    out = tmp_path / "Forest" / f.name
    out.parent.mkdir()
    with rasterio.open(f) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(out) as check:
        assert not any(check.descriptions)
    (source,) = discover([str(out)])
    plan = plan_source(source, SensorRegistry.default(), IngestParams.from_options())
    assert plan.bands.sensor.name == "sentinel-2-l2a"
    assert [b.id for b in plan.bands.bands][-3:] == ["B11", "B12", "B8A"]
    assert any("known band order" in n for n in plan.notes)
