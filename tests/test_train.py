"""Training loop pieces and a few real training steps (model/train.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from clay_search.model.checkpoints import load_encoder
from clay_search.model.train import (
    AugmentConfig,
    BatchSampler,
    ChipSet,
    TrainConfig,
    load_teacher,
    lr_at,
    train,
)


@pytest.fixture(scope="module")
def rgb_chips(shared_data) -> ChipSet:
    from clay_search.ingest.datasets import read_eurosat_rgb

    return read_eurosat_rgb(shared_data / "eurosat_rgb", split="train", max_per_class=8)


@pytest.fixture(scope="module")
def ms_chips(shared_data) -> ChipSet:
    from clay_search.ingest.datasets import read_eurosat_ms

    return read_eurosat_ms(shared_data / "eurosat_ms", split="train", max_per_class=3)


@pytest.fixture(autouse=True)
def _threads():
    from clay_search.model.threads import torch_threads

    with torch_threads(2):
        yield


def test_lr_schedule_warmup_then_cosine():
    kw = dict(base_lr=1.0, warmup=10, total=110, min_ratio=0.0)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.5)
    assert lr_at(110, **kw) == pytest.approx(0.0, abs=1e-9)
    vals = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in itertools.pairwise(vals))
    assert not math.isnan(lr_at(5, base_lr=1.0, warmup=10, total=5))


def test_sampler_is_seeded_and_one_sensor_per_batch(rgb_chips, ms_chips):
    a = BatchSampler([rgb_chips, ms_chips], batch_size=8, seed=3)
    b = BatchSampler([rgb_chips, ms_chips], batch_size=8, seed=3)
    for _ in range(4):
        x, y = a.sample(), b.sample()
        assert x.sensor == y.sensor
        assert torch.equal(x.pixels, y.pixels) and torch.equal(x.time, y.time)
        assert x.pixels.shape[1] == len(x.waves) == (3 if x.sensor == "eurosat_rgb" else 13)


def test_band_dropping_keeps_the_target(ms_chips):
    s = BatchSampler(
        [ms_chips],
        batch_size=30,
        seed=0,
        augment=AugmentConfig(flip=0.0, drop_all_bands=0.3, drop_half_bands=0.7, zero_metadata=1),
    )
    b = s.sample()
    zero_bands = (b.pixels.flatten(2).abs().sum(-1) == 0).sum(1)  # bands zeroed per chip
    assert set(zero_bands.tolist()) <= {6, 13} and (zero_bands == 13).any()
    assert (b.target.flatten(2).abs().sum(-1) > 0).all()  # the target keeps every band
    assert (b.time == 0).all() and (b.latlon == 0).all()
    assert ms_chips.latlon_encoding([0]).any()  # the chips do have a location


@pytest.mark.slow
def test_few_steps_on_real_chips_lower_the_loss(rgb_chips, tmp_path):
    cfg = TrainConfig(
        steps=40,
        batch_size=16,
        lr=2e-3,
        warmup=5,
        checkpoint_every=1000,
        precision="fp32",
        augment=AugmentConfig(drop_all_bands=0.0, drop_half_bands=0.0),
    )
    result = train([rgb_chips], tmp_path / "run", cfg)
    losses = [r["reconstruction_loss"] for r in result.losses]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8])
    for name in ("model.safetensors", "config.json", "losses.csv", "loss_curve.png"):
        assert (tmp_path / "run" / name).exists()
    _encoder, info = load_encoder(tmp_path / "run")
    assert info.model_id == result.weights.model_id
    assert info.config.name == "nano" and info.config.patch_size == 8


@pytest.mark.slow
def test_resume_continues_the_same_run(rgb_chips, ms_chips, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, warmup=2, checkpoint_every=3, precision="fp32")
    full = train([rgb_chips, ms_chips], tmp_path / "full", cfg)
    # stop after 3 steps, then resume: the losses match an uninterrupted run
    stopped = []

    def stop_at_3(step, total, row):
        stopped.append(step)
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train([rgb_chips, ms_chips], tmp_path / "cut", cfg, progress=stop_at_3)
    # stop_step ends a run early with the same schedule; it resumes from there as well
    early = train([rgb_chips, ms_chips], tmp_path / "early", cfg, stop_step=4)
    assert early.steps_done == 4 and (tmp_path / "early" / "model.safetensors").exists()
    resumed = train([rgb_chips, ms_chips], tmp_path / "cut", cfg)
    a = [r["loss"] for r in full.losses]
    b = [r["loss"] for r in resumed.losses]
    assert len(b) == 6
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5)


class _TinyTeacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_teacher_from_local_torchscript_file(rgb_chips, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.jit.save(torch.jit.script(_TinyTeacher()), str(path))
    teacher, dim = load_teacher(path)
    assert dim == 16
    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, checkpoint_every=1000, precision="fp32")
    result = train([rgb_chips], tmp_path / "run", cfg, teacher=teacher, teacher_dim=dim)
    rep = [r["representation_loss"] for r in result.losses]
    assert all(isinstance(v, float) and 0.0 <= v <= 2.0 for v in rep)
    # a weights folder made by train is itself a usable (Clay encoder) teacher
    _teacher2, dim2 = load_teacher(tmp_path / "run")
    assert dim2 == 128


def test_missing_teacher_is_a_clear_error(tmp_path):
    from clay_search.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="local file"):
        load_teacher(tmp_path / "absent.pt")
