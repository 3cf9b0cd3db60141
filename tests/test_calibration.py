"""precision="auto": decided by measurement (stubbed here: never timing-dependent), cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clay_search.errors import (
    BandMismatchError,
    EmbedderOptionError,
    PrecisionUnavailableError,
)
from clay_search.model import ClayEncoder, Embedder, get_config
from clay_search.model import calibration as calib
from clay_search.paths import cache_dir


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return ClayEncoder.from_config(get_config("nano")).eval()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAY_SEARCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fig(speedup, cosine=0.99999, rejected=None):
    return {"speedup": speedup, "cosine": cosine, "rejected": rejected, "seconds": 1 / speedup}


class StubMeasure:
    """A calibration measurement with given figures; counts its calls."""

    def __init__(self, **figures):
        self.figures = {"fp32": _fig(1.0, 1.0), **figures}
        self.calls = []

    def __call__(self, encoder, *, device, chip_size, bands, candidates, budget_s):
        self.calls.append((chip_size, bands, tuple(candidates)))
        return {k: dict(v) for k, v in self.figures.items() if k in candidates}, 2


def test_decide_takes_the_fastest_accurate_candidate():
    assert calib.decide({"fp32": _fig(1.0), "bf16": _fig(2.1), "fp16": _fig(1.6)}) == "bf16"
    # slower than fp32 (AVX512-BF16 without AMX): fp32
    assert calib.decide({"fp32": _fig(1.0), "bf16": _fig(0.53)}) == "fp32"
    # a near tie is noise: keep fp32 (never slower than our own fp32)
    assert calib.decide({"fp32": _fig(1.0), "bf16": _fig(1.05)}) == "fp32"
    # fast but inaccurate, or rejected by the probe: not eligible
    assert calib.decide({"fp32": _fig(1.0), "fp16": _fig(3.0, cosine=0.99)}) == "fp32"
    assert calib.decide({"fp32": _fig(1.0), "bf16": _fig(3.0, rejected="no fast path")}) == "fp32"
    assert calib.decide({"fp32": _fig(1.0), "fp16": _fig(3.0, cosine=0.99)}, min_cosine=0.98) == (
        "fp16"
    )


def test_calibration_is_cached_per_machine_model_and_chip_size(encoder, home):
    stub = StubMeasure(bf16=_fig(1.8), fp16=_fig(0.4))
    first = calib.calibrate(encoder, model="m1", chip_size=64, bands=4, measure=stub)
    assert first.precision == "bf16" and not first.cached and len(stub.calls) == 1
    assert first.path and first.path.startswith(str(cache_dir("calibration")))
    again = calib.calibrate(encoder, model="m1", chip_size=64, bands=4, measure=stub)
    assert again.cached and again.precision == "bf16" and len(stub.calls) == 1  # not re-measured
    assert again.candidates == first.candidates
    calib.calibrate(encoder, model="m1", chip_size=128, bands=4, measure=stub)  # another size
    calib.calibrate(encoder, model="m2", chip_size=64, bands=4, measure=stub)  # another model
    assert len(stub.calls) == 3
    calib.calibrate(encoder, model="m1", chip_size=64, bands=4, measure=stub, use_cache=False)
    assert len(stub.calls) == 4
    listed = calib.cached_calibrations()
    assert {(c.model, c.chip_size) for c in listed} == {("m1", 64), ("m1", 128), ("m2", 64)}
    assert all(c.key["cpu"] == calib.cpu_model() for c in listed)


def test_cache_key_includes_threads_and_torch(encoder, home, monkeypatch):
    stub = StubMeasure(bf16=_fig(1.8))
    calib.calibrate(encoder, model="m", chip_size=64, bands=4, measure=stub)
    monkeypatch.setattr(calib, "machine_key", lambda device="cpu": {"cpu": "other", "threads": 7})
    calib.calibrate(encoder, model="m", chip_size=64, bands=4, measure=stub)
    assert len(stub.calls) == 2


def test_unreadable_cache_file_is_measured_again(encoder, home):
    stub = StubMeasure(bf16=_fig(0.5))
    cal = calib.calibrate(encoder, model="m", chip_size=64, bands=4, measure=stub)
    assert cal.precision == "fp32"
    with open(cal.path, "w") as f:
        f.write("{not json")
    again = calib.calibrate(encoder, model="m", chip_size=64, bands=4, measure=stub)
    assert not again.cached and len(stub.calls) == 2
    assert json.loads(open(cal.path).read())["precision"] == "fp32"


def test_embedder_auto_uses_the_calibration_and_its_cache(encoder, home, monkeypatch):
    stub = StubMeasure(bf16=_fig(1.9), fp16=_fig(0.3))
    monkeypatch.setattr(calib, "measure_encoder", stub)
    raw = np.random.default_rng(0).normal(1500, 800, (2, 4, 32, 32)).clip(0)
    bands = ["red", "green", "blue", "nir"]
    emb = Embedder(encoder)
    assert emb.precision == "auto" and not stub.calls  # decided at the first batch
    emb.embed_raw(raw, "sentinel-2-l2a", bands)
    assert emb.precision == "bf16" and emb.dtype == torch.bfloat16
    assert stub.calls == [(32, 4, ("fp32", "bf16", "fp16"))]  # the real chip size and bands
    report = emb.precision_report()
    assert report["requested"] == "auto" and report["used"] == "bf16"
    assert report["calibration"]["candidates"]["bf16"]["speedup"] == pytest.approx(1.9)
    second = Embedder(encoder)
    second.embed_raw(raw, "sentinel-2-l2a", bands)
    assert second.precision == "bf16" and second.calibration.cached and len(stub.calls) == 1
    forced = Embedder(encoder, precision="fp32")
    forced.embed_raw(raw, "sentinel-2-l2a", bands)
    assert forced.precision == "fp32" and forced.calibration is None and len(stub.calls) == 1


def test_real_measurement_reports_every_candidate(encoder, home):
    """The real measurement on this machine (its figures are not asserted: no timing tests)."""
    cal = calib.calibrate(encoder, model="nano-test", chip_size=32, bands=4, budget_s=0.2)
    assert set(cal.candidates) == {"fp32", "bf16", "fp16"}
    assert cal.candidates["fp32"]["speedup"] == 1.0 and cal.candidates["fp32"]["cosine"] == 1.0
    for name, c in cal.candidates.items():
        assert c["rejected"] or (c["speedup"] > 0 and -1 <= c["cosine"] <= 1 + 1e-6), name
    assert cal.precision in {"fp32", "bf16", "fp16"} and 0 <= cal.blocks <= cal.depth
    assert cal.precision in cal.summary()


def test_real_model_slice_is_timed_and_compared(encoder):
    """Every candidate through the model (probe disabled): figures and cosine to fp32."""
    threads = torch.get_num_threads()  # as this test finds it (a session fixture may set 1)
    figures, blocks = calib.measure_encoder(
        encoder,
        device=torch.device("cpu"),
        chip_size=32,
        bands=4,
        candidates=("fp32", "bf16"),
        budget_s=0.05,
        probe_ratio=1e9,
    )
    assert 1 <= blocks <= len(encoder.blocks)
    assert figures["fp32"]["speedup"] == 1.0 and figures["bf16"]["rejected"] is None
    assert figures["bf16"]["seconds"] > 0 and figures["bf16"]["speedup"] > 0
    assert 0.99 < figures["bf16"]["cosine"] < 1.0  # bf16 rounding, close to fp32
    assert torch.get_num_threads() == threads  # the one-thread measurement restored it


def test_forced_precisions_and_errors(encoder):
    with pytest.raises(PrecisionUnavailableError, match="tf32 needs a CUDA GPU"):
        Embedder(encoder, precision="tf32")
    with pytest.raises(EmbedderOptionError, match="unknown precision 'fp64'") as e:
        Embedder(encoder, precision="fp64")
    assert isinstance(e.value, ValueError)
    emb = Embedder(encoder, precision="fp16")
    assert emb.precision == "fp16" and emb.dtype == torch.float16


def test_int8_is_close_to_fp32(encoder):
    raw = np.random.default_rng(1).normal(1500, 800, (3, 4, 32, 32)).clip(0)
    args = (raw, "sentinel-2-l2a", ["red", "green", "blue", "nir"])
    a = Embedder(encoder, precision="fp32").embed_raw(*args).cls
    b = Embedder(encoder, precision="int8").embed_raw(*args).cls
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)


def test_embed_raw_band_count_mismatch_is_a_clear_error(encoder):
    emb = Embedder(encoder, precision="fp32")
    raw = np.zeros((2, 4, 32, 32), dtype=np.uint16)
    with pytest.raises(BandMismatchError, match=r"have 4 bands .* but 3 band names"):
        emb.embed_raw(raw, "sentinel-2-l2a", ["red", "green", "blue"])
    with pytest.raises(BandMismatchError, match="3 wavelengths"):
        emb.embed(np.zeros((1, 4, 32, 32)), waves=[0.66, 0.56, 0.49], gsd=10)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAY_SEARCH_HOME", str(tmp_path / "h"))
    assert cache_dir("calibration") == tmp_path / "h" / "calibration"
    assert not (tmp_path / "h").exists()  # nothing created by asking
    assert cache_dir("x", create=True).is_dir()
    monkeypatch.delenv("CLAY_SEARCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "clay-search"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "clay-search"


def test_ingest_manifest_records_the_precision(tmp_path, sample_dir, home):
    import glob

    from clay_search.ingest import run
    from clay_search.model import save_weights

    cfg = get_config("nano")
    torch.manual_seed(0)
    save_weights(ClayEncoder.from_config(cfg), cfg, tmp_path / "w")
    src = sorted(glob.glob(str(sample_dir / "naip" / "*.tif")))[0]
    run([src], tmp_path / "store", weights=tmp_path / "w", chip_size=64, stride=256, workers=0)
    (path,) = glob.glob(str(tmp_path / "store" / "runs" / "*.json"))
    precision = json.loads(open(path).read())["precision"]
    assert precision["requested"] == "auto" and precision["used"] in {"fp32", "bf16", "fp16"}
    cal = precision["calibration"]
    assert cal["chip_size"] == 64 and set(cal["candidates"]) == {"fp32", "bf16", "fp16"}


def test_training_precision_follows_measured_matmul_speed(monkeypatch):
    from clay_search.model.train import choose_precision

    speeds = {"fp32": 80.0, "bf16": 1.3}
    monkeypatch.setattr(calib, "gemm_gflops", lambda name, n, **kw: speeds[name])
    assert choose_precision("auto", torch.device("cpu")) == "fp32"  # no bf16 fast path
    speeds["bf16"] = 160.0  # AMX-like
    assert choose_precision("auto", torch.device("cpu")) == "bf16"
    speeds["bf16"] = 85.0  # a near tie keeps fp32
    assert choose_precision("auto", torch.device("cpu")) == "fp32"
    assert choose_precision("bf16", torch.device("cpu")) == "bf16"
