"""The ingest read path: native-type reads, the shared reader pool, thumbnails, commit policy."""

from __future__ import annotations

import os
import threading
from io import BytesIO

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.windows import Window
from test_ingest_helpers import (
    read_chips,
    table_version,
)

from clay_search.ingest import run
from clay_search.ingest import thumbnails as thumbs
from clay_search.ingest.chips import chip_windows
from clay_search.ingest.params import auto_workers
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.readers import ReaderPool
from clay_search.ingest.sources import discover


@pytest.fixture(name="naip_sources")
def naip_sources_fixture(sample_dir):
    return discover([str(sample_dir / "naip")])


@pytest.fixture(name="eurosat_tif")
def eurosat_tif_fixture(sample_dir):
    return sorted((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))[0]


def test_reads_keep_the_file_type_and_equal_rasterio(naip_sources):
    src = naip_sources[0]
    with rasterio.open(src.paths[0]) as ds:
        whole = ds.read()
    with SourceReader(src) as r:
        assert r.meta.dtype == "uint8"
        wins = chip_windows(r.meta.width, r.meta.height, 64, 48)  # overlapping, edges padded
        many = r.read_many(wins, [3, 0, 1])
        for w, (raw, valid) in zip(wins, many, strict=True):
            one_raw, one_valid = r.read(w, [3, 0, 1])
            assert raw.dtype == np.uint8 and raw.shape == (3, 64, 64)
            np.testing.assert_array_equal(raw, one_raw)
            np.testing.assert_array_equal(valid, one_valid)
            r0, c0 = int(w.row_off), int(w.col_off)
            inside = whole[[3, 0, 1], r0 : r0 + 64, c0 : c0 + 64]
            h, wd = inside.shape[1:]
            np.testing.assert_array_equal(raw[:, :h, :wd], inside)
            assert not valid[h:].any() and not valid[:, wd:].any()  # padding is invalid


def test_uint16_reads_stay_uint16(eurosat_tif):
    (src,) = discover([str(eurosat_tif)])
    with SourceReader(src) as r, rasterio.open(eurosat_tif) as ds:
        raw, valid = r.read(Window(0, 0, 64, 64), [1, 2, 3])
        assert raw.dtype == ds.dtypes[0] == "uint16"
        np.testing.assert_array_equal(raw, ds.read([2, 3, 4]))
        assert valid.all()


def test_reader_pool_keeps_one_reader_per_source_and_closes_the_oldest(naip_sources, eurosat_tif):
    eurosat = discover([str(eurosat_tif)])
    pool = ReaderPool(max_open=2)
    a, b = naip_sources[0], naip_sources[1]
    with pool.use(a) as ra1:
        pass
    with pool.use(a) as ra2:
        assert ra2 is ra1 and ra1._datasets  # the same open reader
    with pool.use(b):
        pass
    with pool.use(eurosat[0]):
        pass
    assert not ra1._datasets  # least recently used, closed
    with pool.use(a) as ra3:
        assert ra3 is not ra1 and ra3._datasets  # reopened on demand
    pool.close()
    assert not ra3._datasets


def test_reader_pool_serves_threads_one_at_a_time(naip_sources):
    src = naip_sources[0]
    with SourceReader(src) as r:
        wins = chip_windows(r.meta.width, r.meta.height, 32, 32)
        expected = [r.read(w, [0, 1, 2])[0] for w in wins]
    pool = ReaderPool(max_open=1)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for k in range(offset, len(wins), 3):
                with pool.use(src) as reader:
                    raw, _ = reader.read(wins[k], [0, 1, 2])
                np.testing.assert_array_equal(raw, expected[k])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    assert not errors, errors


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_block_mean_equals_a_float_reference(dtype):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 250, (2, 3, 32, 32)).astype(dtype)
    valid = rng.random((2, 32, 32)) > 0.4
    valid[1, :4, :4] = False  # one block with no valid pixel
    mean, ok = thumbs.block_mean(img, valid, 4)
    w = valid.reshape(2, 8, 4, 8, 4).sum((2, 4))
    ref = (img.astype(np.float64) * valid[:, None]).reshape(2, 3, 8, 4, 8, 4).sum((3, 5))
    ref /= np.maximum(w, 1)[:, None]
    np.testing.assert_allclose(mean, ref, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(ok, w > 0)
    assert not ok[1, 0, 0]


def _decode(png: bytes) -> np.ndarray:
    img = Image.open(BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB"
    return np.asarray(img)


def test_thumbnail_of_a_large_chip_is_the_thumbnail_of_its_block_average():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 4000, (4, 64, 64)).astype(np.uint16)
    big = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)  # 256 px of constant 4x4 blocks
    ones = np.ones((64, 64), bool)
    a = _decode(thumbs.thumbnail_png(small, ones, [2, 1, 0]))
    b = _decode(thumbs.thumbnail_png(big, np.ones((256, 256), bool), [2, 1, 0]))
    assert a.shape == b.shape == (64, 64, 3)
    np.testing.assert_array_equal(a, b)


def test_thumbnail_blackens_invalid_pixels_and_stretches_the_rest():
    chip = np.zeros((3, 64, 64), np.uint8)
    chip[:, :, :32] = 200
    chip[:, :, 32:] = np.linspace(10, 100, 32, dtype=np.uint8)[None, None, :]
    valid = np.ones((64, 64), bool)
    valid[:8] = False
    pix = _decode(thumbs.thumbnail_png(chip, valid, [0, 1, 2]))
    assert (pix[:8] == 0).all()
    assert pix[8:, :32].min() == 255 and pix[8:, 32].max() == 0  # 98th / 2nd percentiles


@pytest.mark.parametrize("fast", [True, False])
def test_png_encoder_round_trips_with_and_without_isal(monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(thumbs, "_fast_zlib", None)  # the zlib fallback path
    elif thumbs._fast_zlib is None:
        pytest.skip("isal is not installed")
    pix = np.random.default_rng(3).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    for png, p in zip(thumbs.png_rgb8(pix), pix, strict=True):
        np.testing.assert_array_equal(_decode(png), p)


def test_commits_follow_flush_rows_and_flush_seconds(sample_dir, nano_embedder, tmp_path):
    naip = sample_dir / "naip"
    one = run([naip], tmp_path / "one", embedder=nano_embedder, flush_rows=10_000, workers=0)
    each = run(
        [naip],
        tmp_path / "each",
        embedder=nano_embedder,
        flush_rows=10_000,
        flush_seconds=1e-9,
        workers=0,
    )
    assert one.chips_written == each.chips_written > 10
    # one commit for the whole run vs one per chip (each add finds the interval passed)
    assert (
        table_version(tmp_path / "each") - table_version(tmp_path / "one") >= each.chips_written - 2
    )
    a, b = read_chips(tmp_path / "one"), read_chips(tmp_path / "each")
    assert list(a["chip_id"]) == list(b["chip_id"]) and b["chip_id"].is_unique


def test_auto_workers_leaves_the_cores_to_torch_on_cpu():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(os.cpu_count() or 1)
        assert auto_workers("cpu") == 0
        torch.set_num_threads(1)
        assert auto_workers("cpu") == max(0, min(2, (os.cpu_count() or 1) - 1))
    finally:
        torch.set_num_threads(before)
    assert auto_workers(torch.device("cuda")) == 2
