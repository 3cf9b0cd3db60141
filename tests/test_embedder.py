"""Embedder: CLS and patch embeddings, bf16 fast path close to fp32, weight cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clay_search.model import ClayEncoder, Embedder, get_config, save_weights


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return ClayEncoder.from_config(get_config("nano")).eval()


def _raw(b=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1500, 800, (b, 4, 64, 64)).clip(0).astype(np.uint16)


def test_embed_raw_shapes(encoder):
    emb = Embedder(encoder, precision="fp32")
    out = emb.embed_raw(_raw(), "sentinel-2-l2a", ["B02", "B03", "B04", "B08"], patches=True)
    assert out.cls.shape == (3, 128) and out.cls.dtype == np.float32
    assert out.patches.shape == (3, 64, 128)


def test_bf16_close_to_fp32(encoder):
    fp32 = Embedder(encoder, precision="fp32")
    bf16 = Embedder(encoder, precision="bf16")
    args = (_raw(), "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    a, b = fp32.embed_raw(*args).cls, bf16.embed_raw(*args).cls
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


def test_patch_weight_cache_is_per_wavelength_set(encoder):
    emb = Embedder(encoder, precision="fp32")
    emb.embed_raw(_raw(), "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    emb.embed_raw(_raw(seed=1), "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    assert len(emb._weight_cache) == 1
    emb.embed_raw(_raw()[:, :3], "naip", ["red", "green", "blue"])
    assert len(emb._weight_cache) == 2
    uncached = Embedder(encoder, precision="fp32", cache_weights=False)
    a = emb.embed_raw(_raw(), "sentinel-2-l2a", ["red", "green", "blue", "nir"]).cls
    b = uncached.embed_raw(_raw(), "sentinel-2-l2a", ["red", "green", "blue", "nir"]).cls
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_metadata_changes_the_embedding(encoder):
    from datetime import UTC, datetime

    emb = Embedder(encoder, precision="fp32")
    args = (_raw(b=1), "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    a = emb.embed_raw(*args).cls
    b = emb.embed_raw(
        *args, datetimes=[datetime(2020, 5, 1, tzinfo=UTC)], lonlats=[(8.0, 47.0)]
    ).cls
    assert not np.allclose(a, b)


def test_from_weights_carries_model_id(tmp_path, encoder):
    info = save_weights(encoder, get_config("nano"), tmp_path / "w")
    emb = Embedder.from_weights(tmp_path / "w")
    assert emb.model_id == info.model_id and emb.dim == 128 and emb.patch_size == 8


@pytest.mark.parametrize(
    ("pooling", "width"), [("cls", 1), ("mean", 1), ("mean+std", 2), ("cls+mean", 2)]
)
def test_pooling_makes_the_chip_vector(encoder, pooling, width):
    emb = Embedder(encoder, precision="fp32", pooling=pooling)
    out = emb.embed_raw(_raw(), "sentinel-2-l2a", ["red", "green", "blue", "nir"], patches=True)
    assert emb.dim == 128 * width and out.embedding.shape == (3, emb.dim)
    mean, std = out.patches.mean(1), out.patches.std(1)
    expected = {
        "cls": out.cls,
        "mean": mean,
        "mean+std": np.concatenate([mean, std], axis=1),
        "cls+mean": np.concatenate(
            [
                out.cls / np.linalg.norm(out.cls, axis=1, keepdims=True),
                mean / np.linalg.norm(mean, axis=1, keepdims=True),
            ],
            axis=1,
        ),
    }[pooling]
    np.testing.assert_allclose(out.embedding, expected, rtol=1e-4, atol=1e-5)


def test_pooling_is_part_of_the_model_id(tmp_path, encoder):
    info = save_weights(encoder, get_config("nano"), tmp_path / "w")
    assert Embedder.from_weights(tmp_path / "w").model_id == info.model_id  # cls by default
    assert Embedder.from_weights(tmp_path / "w", pooling="mean").model_id == (
        info.model_id + "-mean"
    )
    with pytest.raises(ValueError, match="unknown pooling"):
        Embedder(encoder, pooling="max")


def test_bundled_weights_recommend_mean_std_pooling_standardised():
    emb = Embedder.from_weights()
    assert emb.pooling == "mean+std" and emb.dim == 2 * emb.token_dim
    assert emb.standardised and "-mean+std-z" in emb.model_id
    plain = Embedder.from_weights(standardise=False)
    assert not plain.standardised and plain.model_id.endswith("-mean+std")
    raw = np.random.default_rng(0).normal(1500, 800, (2, 4, 64, 64)).clip(0)
    args = (raw, "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    z, v = emb.embed_raw(*args).embedding, plain.embed_raw(*args).embedding
    mean, std = (np.array(emb.info.embedding_stats["mean+std"][k]) for k in ("mean", "std"))
    np.testing.assert_allclose(z, (v - mean) / std, rtol=1e-3, atol=1e-3)


def test_standardise_needs_shipped_stats(encoder):
    with pytest.raises(ValueError, match="no embedding statistics"):
        Embedder(encoder, standardise=True)
