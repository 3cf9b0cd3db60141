"""Sensor metadata: every Clay sensor, band lookup by name or id, custom sensors, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from clay_search.errors import BandMismatchError, UnknownSensorError
from clay_search.ingest.datasets import EUROSAT_MS_BANDS
from clay_search.model import SensorRegistry, compute_band_stats
from clay_search.model.normalise import (
    file_normaliser,
    fits_sensor_stats,
    sensor_normaliser,
    source_normaliser,
)

CLAY_SENSORS = {
    "sentinel-2-l2a",
    "landsat-c2l1",
    "landsat-c2l2-sr",
    "naip",
    "linz",
    "sentinel-1-rtc",
    "modis",
    "planetscope-sr",
    "satellogic-MSI-L1D",
}


def test_every_clay_sensor_is_known_with_sane_facts():
    reg = SensorRegistry.default()
    assert set(reg.names) >= CLAY_SENSORS
    for name in reg.names:
        s = reg.get(name)
        assert s.gsd > 0
        assert s.bands, name
        for b in s.bands:
            # micrometres (not nm): visible to thermal infrared (Landsat TM/ETM+ B6: 11.45)
            assert 0.3 < b.wavelength < 15, (name, b)
            if b.has_stats:
                assert b.std > 0
        assert len(s.rgb_bands) == 3


def test_sentinel2_has_all_13_bands_by_id():
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    ids = [b.id for b in s2.bands]
    assert sorted(ids) == sorted(
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    )
    assert s2.band("b8a").name == "nir08"
    assert s2.band("B04") is s2.band("red")
    eurosat_order = list(EUROSAT_MS_BANDS)  # the EuroSAT MS files' band order
    bands = s2.select(eurosat_order)
    assert [b.has_stats for b in bands].count(False) == 3  # B01, B09, B10: no Clay statistics
    assert s2.band("red").mean == 1552.0 and s2.band("red").wavelength == 0.665


def test_unknown_sensor_lists_known_and_how_to_register():
    with pytest.raises(UnknownSensorError) as e:
        SensorRegistry.default().get("worldview-3")
    msg = str(e.value)
    assert "sentinel-2-l2a" in msg and "register" in msg
    assert isinstance(e.value, ValueError)


def test_unknown_band_names_the_bands():
    with pytest.raises(BandMismatchError, match="B8A"):
        SensorRegistry.default().get("sentinel-2-l2a").band("B13")


def test_register_custom_sensor_does_not_touch_defaults():
    reg = SensorRegistry.default()
    s = reg.register(
        "my-drone",
        bands=["red", "green", "blue", "rededge"],
        wavelengths=[0.66, 0.56, 0.47, 0.72],
        gsd=0.1,
        rgb=["red", "green", "blue"],
    )
    assert reg.get("my-drone") is s
    assert "my-drone" not in SensorRegistry.default()
    with pytest.raises(BandMismatchError):
        reg.register("bad", bands=["a", "b"], wavelengths=[0.5], gsd=1)
    with pytest.raises(BandMismatchError, match="micrometres"):
        reg.register("nm", bands=["red"], wavelengths=[665.0 * 1000], gsd=1)


def test_sensors_from_yaml(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "hyper:\n  gsd: 30\n  rgb: [r, g, b]\n  bands:\n"
        "    r: {wavelength: 0.65, mean: 100, std: 10}\n"
        "    g: {wavelength: 0.55, mean: 90, std: 9}\n"
        "    b: {wavelength: 0.45, mean: 80, std: 8}\n"
    )
    reg = SensorRegistry.from_yaml(tmp_path / "s.yaml")
    assert reg.get("hyper").band("g").mean == 90
    assert "naip" in reg


def test_compute_band_stats_matches_numpy_and_ignores_nodata():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (3, 20, 20))
    b = rng.normal(100, 5, (3, 10, 10))
    b[:, :2] = -9999
    mean, std = compute_band_stats([a, b], nodata=-9999)
    valid = np.concatenate([a.reshape(3, -1), b[:, 2:].reshape(3, -1)], axis=1)
    np.testing.assert_allclose(mean, valid.mean(1), rtol=1e-9)
    np.testing.assert_allclose(std, valid.std(1), rtol=1e-6)


def test_sentinel1_normalisation_converts_to_db():
    s1 = SensorRegistry.default().get("sentinel-1-rtc")
    norm = sensor_normaliser(s1, s1.bands)
    linear = np.full((2, 4, 4), 10 ** (-12.113 / 10), dtype=np.float32)
    out = norm(linear)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-4)  # the VV mean in dB maps to 0


def test_stats_required_or_computed():
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    with pytest.raises(BandMismatchError, match="B01|coastal"):
        sensor_normaliser(s2, s2.select(["B01", "B02"]))
    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 255, (3, 64, 64)) for _ in range(4)]
    norm = source_normaliser(s2, samples)
    assert norm.stats_source == "source"
    x = norm(np.stack(samples))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_value_range_check_flags_8bit_rendering():
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    rgb = s2.select(["red", "green", "blue"])
    norm = sensor_normaliser(s2, rgb)
    rng = np.random.default_rng(2)
    eight_bit = rng.integers(20, 200, (3, 64, 64))
    ok, reason = fits_sensor_stats(eight_bit, norm)
    assert not ok and "median" in reason
    reflectance = np.stack([rng.normal(b.mean, b.std / 2, (64, 64)) for b in rgb])
    assert fits_sensor_stats(reflectance, norm)[0]


def test_stats_file(tmp_path):
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    (tmp_path / "stats.json").write_text('{"red": {"mean": 10, "std": 2}}')
    norm = file_normaliser(tmp_path / "stats.json", s2.select(["red"]), s2)
    assert norm(np.full((1, 1, 2, 2), 12.0))[0, 0, 0, 0] == pytest.approx(1.0)
    with pytest.raises(BandMismatchError, match="green"):
        file_normaliser(tmp_path / "stats.json", s2.select(["red", "green"]), s2)
