"""Model structure: variants, masking, decoder shapes, loss on masked patches only."""

from __future__ import annotations

import pytest
import torch

from clay_search.model import VARIANTS, ClayEncoder, ClayMAE, get_config

WAVES = torch.tensor([0.493, 0.56, 0.665, 0.842])


def _inputs(b=2, c=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, size, size, generator=g),
        torch.rand(b, 4, generator=g),
        torch.rand(b, 4, generator=g),
    )


@pytest.mark.parametrize("name", ["nano", "tiny", "small", "base", "large"])
def test_named_variants_build_with_expected_width(name):
    cfg = get_config(name)
    assert name in VARIANTS
    if name in {"base", "large"}:  # building is slow-ish; check the numbers only
        assert (cfg.dim, cfg.depth) == {"base": (768, 12), "large": (1024, 24)}[name]
        return
    enc = ClayEncoder.from_config(cfg).eval()
    x, t, ll = _inputs()
    with torch.no_grad():
        out = enc(x, time=t, latlon=ll, gsd=10.0, waves=WAVES)
    assert out.shape == (2, 1 + (32 // cfg.patch_size) ** 2, cfg.dim)


def test_unknown_variant():
    with pytest.raises(ValueError, match="nano"):
        get_config("huge")


def test_masking_keeps_the_right_number_of_patches_and_is_seeded():
    enc = ClayEncoder.from_config(get_config("nano")).eval()
    x, t, ll = _inputs()
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            m = enc.encode_masked(
                x,
                time=t,
                latlon=ll,
                gsd=10.0,
                waves=WAVES,
                mask_ratio=0.75,
                shuffle=True,
                generator=g,
            )
        runs.append(m)
    m = runs[0]
    assert m.tokens.shape == (2, 1 + 4, 128)  # 16 patches, 12 masked
    assert m.mask.sum(1).tolist() == [12.0, 12.0]
    assert torch.equal(runs[0].masked_indices, runs[1].masked_indices)
    # mask marks exactly the masked indices
    for b in range(2):
        assert set(torch.nonzero(m.mask[b]).flatten().tolist()) == set(m.masked_indices[b].tolist())


def test_bad_inputs_are_clear():
    enc = ClayEncoder.from_config(get_config("nano")).eval()
    x, t, ll = _inputs(size=30)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        enc(x, time=t, latlon=ll, gsd=10.0, waves=WAVES)
    x, t, ll = _inputs()
    with pytest.raises(ValueError, match="wavelengths"):
        enc(x, time=t, latlon=ll, gsd=10.0, waves=WAVES[:3])


def test_mae_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    mae = ClayMAE(get_config("nano"), mask_ratio=0.5)
    x, t, ll = _inputs()
    g = torch.Generator().manual_seed(3)
    out = mae(x, time=t, latlon=ll, gsd=10.0, waves=WAVES, generator=g)
    assert out["loss"].ndim == 0 and out["loss"].item() > 0
    out["loss"].backward()
    assert mae.encoder.patch_embedding.weight_generator.fc_weight.weight.grad is not None
    # changing pixels only in unmasked patches leaves the reconstruction target loss unchanged
    pred = torch.zeros(2, 16, 4 * 64)
    mask = torch.zeros(2, 16)
    mask[:, :8] = 1
    target = torch.zeros(2, 4, 32, 32)
    base = mae.reconstruction_loss(target, pred, mask)
    target2 = target.clone()
    target2[:, :, 24:, :] = 5.0  # bottom patch row: indices 12..15, unmasked
    assert torch.equal(mae.reconstruction_loss(target2, pred, mask), base)


def test_decoder_reconstructs_requested_bands():
    torch.manual_seed(0)
    mae = ClayMAE(get_config("nano"), mask_ratio=0.75)
    x, t, ll = _inputs()
    enc = mae.encoder.encode_masked(x, time=t, latlon=ll, gsd=10.0, waves=WAVES)
    pixels = mae.decoder(enc, time=t, latlon=ll, gsd=10.0, waves=WAVES)
    assert pixels.shape == (2, 16, 4 * 8 * 8)


def test_encoder_step_api_matches_forward():
    """prepare_tokens + blocks + norm == forward; forward_intermediates picks block outputs."""
    torch.manual_seed(0)
    enc = ClayEncoder.from_config(get_config("nano")).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g)
    kw = dict(
        time=torch.zeros(2, 4),
        latlon=torch.zeros(2, 4),
        gsd=10.0,
        waves=torch.tensor([0.49, 0.56, 0.66]),
    )
    with torch.no_grad():
        full = enc(x, **kw)
        tokens = enc.prepare_tokens(x, **kw)
        assert tokens.shape == (2, 1 + 16, enc.dim)
        steps = []
        for block in enc.blocks:
            tokens = block(tokens)
            steps.append(tokens)
        torch.testing.assert_close(enc.norm(tokens), full, rtol=0, atol=0)
        final, inter = enc.forward_intermediates(x, **kw, indices=[0, -1])
        torch.testing.assert_close(final, full, rtol=0, atol=0)
        assert len(inter) == 2
        torch.testing.assert_close(inter[0], steps[0], rtol=0, atol=0)
        torch.testing.assert_close(inter[1], steps[-1], rtol=0, atol=0)
        early, (_only,) = enc.forward_intermediates(x, **kw, indices=[1], stop_early=True)
        torch.testing.assert_close(early, steps[1], rtol=0, atol=0)
        with pytest.raises(ValueError, match="out of range"):
            enc.forward_intermediates(x, **kw, indices=[9])
