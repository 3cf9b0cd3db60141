"""Continued pretraining (``--init``) and the view-consistency loss (``--view-loss``), on the
sample's real EuroSAT MS chips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clay_search.errors import CheckpointError
from clay_search.model.checkpoints import bundled_weights_dir, load_encoder
from clay_search.model.train import AugmentConfig, TrainConfig, train


@pytest.fixture(scope="module")
def ms_chips(sample_dir):
    from clay_search.ingest.datasets import read_eurosat_ms

    return read_eurosat_ms(sample_dir / "eurosat_ms", split=None)


@pytest.fixture(autouse=True)
def _threads():
    from clay_search.model.threads import torch_threads

    with torch_threads(2):
        yield


def _cfg(**kw) -> TrainConfig:
    base = dict(
        steps=2,
        batch_size=8,
        warmup=1,
        checkpoint_every=1000,
        precision="fp32",
        augment=AugmentConfig(drop_all_bands=0.0, drop_half_bands=0.0),
    )
    return TrainConfig(**{**base, **kw})


def test_init_starts_from_the_weights_and_their_decoder(ms_chips, tmp_path):
    shipped, _ = load_encoder(None)
    cont = train([ms_chips], tmp_path / "cont", _cfg(lr=1e-9), init=bundled_weights_dir())
    scratch = train([ms_chips], tmp_path / "scratch", _cfg(lr=1e-9))
    after, _ = load_encoder(tmp_path / "cont")
    for (name, a), b in zip(shipped.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name  # an lr of 1e-9 moves nothing visibly
    # the shipped decoder came along: the first batch is reconstructed far better than from
    # random weights (same seed, same batch)
    first = cont.losses[0]["reconstruction_loss"]
    assert first < 0.8 * scratch.losses[0]["reconstruction_loss"]
    assert cont.losses[0]["sensor"] == scratch.losses[0]["sensor"]


def test_init_of_another_size_is_refused(ms_chips, tmp_path):
    with pytest.raises(CheckpointError, match="--size"):
        train([ms_chips], tmp_path / "r", _cfg(size="tiny"), init=bundled_weights_dir())


def test_view_loss_is_logged_and_learned(ms_chips, tmp_path):
    result = train([ms_chips], tmp_path / "v", _cfg(steps=40, lr=2e-3, warmup=4, view_loss=0.5))
    views = [r["view_loss"] for r in result.losses]
    assert all(np.isfinite(views))
    # two views of one chip against the batch's others: chance is log(2 * 8 - 1) = 2.7
    assert np.mean(views[-8:]) < 0.8 * np.mean(views[:8])
    rows = result.losses
    assert all(
        r["loss"] == pytest.approx(r["reconstruction_loss"] + 0.5 * r["view_loss"], rel=1e-5)
        for r in rows
    )
    header = (tmp_path / "v" / "losses.csv").read_text().splitlines()[0]
    assert "view_loss" in header.split(",")
