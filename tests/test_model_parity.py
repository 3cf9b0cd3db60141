"""Our encoder equals the reference Clay v1.5 encoder (stored fixture, fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from clay_search.model.clay import ClayEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "parity_encoder.safetensors"


@pytest.fixture(scope="module")
def fixture():
    tensors = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return tensors, meta


def _encoder(tensors, meta) -> ClayEncoder:
    enc = ClayEncoder(
        dim=int(meta["dim"]),
        depth=int(meta["depth"]),
        heads=int(meta["heads"]),
        dim_head=int(meta["dim_head"]),
        mlp_ratio=float(meta["mlp_ratio"]),
        patch_size=int(meta["patch_size"]),
    ).eval()
    state = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    enc.load_state_dict(state, strict=True)  # same key layout as the reference
    return enc


@pytest.mark.parametrize("case", [0, 1])
def test_encoder_matches_reference(fixture, case):
    tensors, meta = fixture
    enc = _encoder(tensors, meta)
    c = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"case{case}.")}
    with torch.no_grad():
        out = enc(c["pixels"], time=c["time"], latlon=c["latlon"], gsd=c["gsd"], waves=c["waves"])
    assert out.shape == c["out"].shape
    assert (out - c["out"]).abs().max().item() <= 1e-4


def test_cached_patch_weights_give_same_output(fixture):
    tensors, meta = fixture
    enc = _encoder(tensors, meta)
    c = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("case0.")}
    with torch.no_grad():
        weights = enc.patch_embedding.generate(c["waves"])
        out = enc(
            c["pixels"],
            time=c["time"],
            latlon=c["latlon"],
            gsd=float(c["gsd"]),
            waves=c["waves"],
            patch_weights=weights,
        )
    assert (out - c["out"]).abs().max().item() <= 1e-4


def test_band_order_does_not_matter(fixture):
    """The dynamic embedding is wavelength-conditioned: permuting bands with their
    wavelengths gives the same tokens."""
    tensors, meta = fixture
    enc = _encoder(tensors, meta)
    c = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("case0.")}
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = enc(
            c["pixels"][:, perm],
            time=c["time"],
            latlon=c["latlon"],
            gsd=c["gsd"],
            waves=c["waves"][perm],
        )
    assert (out - c["out"]).abs().max().item() <= 1e-4
