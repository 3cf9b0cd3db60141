"""ONNX export: onnxruntime against torch on real chips (EuroSAT MS sample, NAIP crop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from clay_search.ingest.datasets import EUROSAT_MS_BANDS
from clay_search.model.backbone import ClayBackbone, Metadata
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.headfile import HeadSpec, build_model, save_head
from clay_search.model.normalise import sensor_normaliser
from clay_search.model.sensors import SensorRegistry

ort = pytest.importorskip("onnxruntime")
ATOL = 1e-4  # float32 graph vs float32 torch; measured ~3e-6 on these chips

BANDS = ["blue", "green", "red", "nir"]


def _eurosat_chips(sample_dir):
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    order = list(EUROSAT_MS_BANDS)  # the EuroSAT MS files' band order
    idx = [order.index(b) for b in ("B02", "B03", "B04", "B08")]
    files = sorted((sample_dir / "eurosat_ms").glob("*/*.tif"))[:6]
    raw = []
    for f in files:
        with rasterio.open(f) as src:
            raw.append(src.read([i + 1 for i in idx]))
    bands = [s2.band(b) for b in BANDS]
    x = sensor_normaliser(s2, bands)(np.stack(raw))
    return x.astype(np.float32), [b.wavelength for b in bands]


def _run(path, x, time, latlon, gsd):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(
        None, {"pixels": x, "time": time, "latlon": latlon, "gsd": np.array(gsd, np.float32)}
    )[0]


def test_encoder_onnx_matches_torch(sample_dir, tmp_path):
    from clay_search.model.export import export_onnx

    x, waves = _eurosat_chips(sample_dir)
    time = encode_time([None] * len(x)).numpy()
    latlon = encode_latlon([(9.1, 45.4)] * len(x)).numpy()
    path = export_onnx(tmp_path / "encoder.onnx", bands=BANDS, chip_size=64)
    got = _run(path, x, time, latlon, 10.0)
    bb = ClayBackbone.from_weights()
    with torch.no_grad():
        want = bb.tokens(
            torch.from_numpy(x),
            Metadata(torch.tensor(waves), 10.0, torch.from_numpy(time), torch.from_numpy(latlon)),
        ).numpy()
    assert got.shape == want.shape == (len(x), 65, 128)
    assert np.abs(got - want).max() < ATOL
    side = json.loads((tmp_path / "encoder.onnx.json").read_text())
    assert side["bands"] == BANDS and side["model_id"] == bb.model_id
    # another batch size than the one exported
    assert _run(path, x[:2], time[:2], latlon[:2], 10.0).shape == (2, 65, 128)


def test_dense_head_onnx_matches_torch(sample_dir, tmp_path):
    from clay_search.model.export import export_onnx

    torch.manual_seed(0)
    s = SensorRegistry.default().get("naip")
    bands = [s.band(b) for b in ("red", "green", "blue", "nir")]
    spec = HeadSpec(
        task="segment",
        sensor="naip",
        bands=[b.name for b in bands],
        waves=[b.wavelength for b in bands],
        normaliser=sensor_normaliser(s, bands).to_dict(),
        chip_size=64,
        model={"kind": "dense", "num_outputs": 3, "channels": 32},
        backbone={},
        classes=["1", "2", "3"],
    )
    model = build_model(spec, ClayBackbone.from_weights()).eval()
    save_head(model, spec, tmp_path / "head")
    f = sorted((sample_dir / "naip").glob("*.tif"))[0]
    with rasterio.open(f) as src:
        raw = np.stack(
            [
                src.read(window=((r, r + 64), (c, c + 64)))
                for r, c in ((0, 0), (64, 128), (192, 192))
            ]
        )
    x = spec.make_normaliser()(raw).astype(np.float32)
    zeros = np.zeros((len(x), 4), np.float32)
    path = export_onnx(tmp_path / "seg.onnx", head=tmp_path / "head")
    got = _run(path, x, zeros, zeros, 5.0)
    with torch.no_grad():
        want = model(torch.from_numpy(x), Metadata(torch.tensor(spec.waves), 5.0)).numpy()
    assert got.shape == want.shape == (3, 3, 64, 64)
    assert np.abs(got - want).max() < ATOL
