"""clay_search.patches: patch tokens of stored chips (stored or recomputed from the source
window) and the patch-similarity heatmap, on real stores ingested from the shipped NAIP sample
with a feature planted in two chips."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import clay_search
from clay_search.errors import QueryError
from clay_search.ingest import run
from clay_search.patches import (
    has_stored_patches,
    heatmap_png,
    patch_similarity,
    patch_tokens,
)

#: (row, col) pixel offsets of the planted 16 px checkerboard: query chip (0, 0), hit chip (1, 1)
QUERY_AT, HIT_AT = (8, 40), (64 + 48, 64 + 16)
HIT_PATCHES = {(6, 2), (6, 3), (7, 2), (7, 3)}  # the 8 px patches the hit's feature covers


def _plant(a: np.ndarray, r0: int, c0: int) -> None:
    y, x = np.mgrid[0:16, 0:16]
    chk = ((y // 4 + x // 4) % 2).astype(bool)
    for b, (hi, lo) in enumerate([(250, 10), (250, 10), (255, 200), (250, 10)]):
        a[b, r0 : r0 + 16, c0 : c0 + 16] = np.where(chk, hi, lo)


@pytest.fixture(scope="module")
def planted(sample_dir, tmp_path_factory) -> Path:
    """A 128 x 128 NAIP crop (real pixels, real CRS) with the checkerboard in two chips."""
    src = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    with rasterio.open(src) as s:
        prof, a = s.profile, s.read()[:, :128, :128].copy()
    _plant(a, *QUERY_AT)
    _plant(a, *HIT_AT)
    t = prof["transform"]
    prof.update(width=128, height=128, transform=from_origin(t.c, t.f, t.a, -t.e))
    f = tmp_path_factory.mktemp("planted") / "m_4709963_se_14_1_20200831_planted.tif"
    with rasterio.open(f, "w", **prof) as dst:
        dst.write(a)
    return f


def _ingest(planted: Path, store: Path, embedder, patches: bool) -> Path:
    report = run(
        [planted], store, embedder=embedder, chip_size=64, sensor="naip", workers=0,
        patch_embeddings=patches,
    )  # fmt: skip
    assert report.ok and report.chips_written == 4
    return store


@pytest.fixture(scope="module")
def stores(planted, nano_embedder, nano_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("patch_stores")
    with_p = _ingest(planted, root / "with", nano_embedder, True)
    without = _ingest(planted, root / "without", nano_embedder, False)
    return (
        clay_search.connect(with_p, weights=nano_weights),
        clay_search.connect(without, weights=nano_weights),
    )


def _chip_at(store, col: int, row: int) -> str:
    a = store.attrs
    for cid, w in zip(a.column("chip_id").to_pylist(), a.column("window").to_pylist(), strict=True):
        win = json.loads(w)
        if (win["col_off"], win["row_off"]) == (col, row):
            return cid
    raise AssertionError(f"no chip at {col}, {row}")


def test_stored_tokens_have_the_grid(stores, nano_embedder):
    stored, _ = stores
    assert has_stored_patches(stored)
    ids = stored.attrs.column("chip_id").to_pylist()
    tok = patch_tokens(stored, ids[::-1], embedder=nano_embedder)
    assert tok.shape == (4, 8, 8, nano_embedder.token_dim) and tok.dtype == np.float32
    one = patch_tokens(stored, [ids[0]], embedder=nano_embedder)
    np.testing.assert_array_equal(one[0], tok[-1])  # order as asked


def test_recomputed_tokens_equal_the_stored_ones(stores, nano_embedder):
    stored, plain = stores
    assert not has_stored_patches(plain)
    ids = stored.attrs.column("chip_id").to_pylist()
    a = patch_tokens(stored, ids, embedder=nano_embedder)
    b = patch_tokens(plain, ids, embedder=nano_embedder)  # same chip ids: same windows
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() > 0.999, cos.min()


def test_heatmap_peaks_on_the_planted_feature(stores, nano_embedder):
    stored, plain = stores
    q, h, other = _chip_at(stored, 0, 0), _chip_at(stored, 64, 64), _chip_at(stored, 64, 0)
    for store in (stored, plain):
        heat = patch_similarity(
            patch_tokens(store, [q], embedder=nano_embedder),
            patch_tokens(store, [h, other], embedder=nano_embedder),
        )
        assert heat.shape == (2, 8, 8)
        peak = np.unravel_index(int(heat[0].argmax()), heat[0].shape)
        assert tuple(int(v) for v in peak) in HIT_PATCHES, np.round(heat[0], 2)
        on = np.mean([heat[0][p] for p in HIT_PATCHES])
        assert on > np.median(heat[0]) + 0.1


def test_heatmap_png_draws_red_where_hot(stores):
    from PIL import Image

    stored, _ = stores
    h = _chip_at(stored, 64, 64)
    thumb = stored.get([h]).to_arrow().column("thumbnail")[0].as_py()
    heat = np.zeros((8, 8), np.float32)
    heat[7, 0] = 1.0
    png = heatmap_png(thumb, heat)
    with Image.open(io.BytesIO(thumb)) as base, Image.open(io.BytesIO(png)) as over:
        b, o = np.asarray(base.convert("RGB"), float), np.asarray(over.convert("RGB"), float)
        assert over.size == base.size
    s = o.shape[0] // 8
    hot = o[7 * s :, :s] - b[7 * s :, :s]
    assert hot[..., 0].mean() > 20 and hot[..., 2].mean() < 0  # red up, blue down
    np.testing.assert_allclose(o[: 6 * s], b[: 6 * s], atol=1)  # cold patches untouched


def test_moved_source_and_bad_input_say_what_to_do(stores, planted, nano_embedder, tmp_path):
    _, plain = stores
    ids = plain.attrs.column("chip_id").to_pylist()
    with pytest.raises(QueryError, match="at least one chip"):
        patch_tokens(plain, [], embedder=nano_embedder)
    with pytest.raises(QueryError, match="must be"):
        patch_similarity(np.zeros(8), np.zeros((2, 8)))
    moved = tmp_path / "moved.tif"
    shutil.move(planted, moved)
    try:
        with pytest.raises(QueryError, match="not a file here.*--patch-embeddings"):
            patch_tokens(plain, ids[:1], embedder=nano_embedder)
    finally:
        shutil.move(moved, planted)
