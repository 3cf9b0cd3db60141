"""ONNX export of the encoder (optionally with a task head) for one band set and chip size.

The wavelength-conditioned patch embedding is generated for the chosen bands at export time and
baked into the graph as constants, so the ONNX model takes:

- ``pixels`` ``[B, C, S, S]`` float32, normalised (``head.json``'s normaliser, or the sensor's
  statistics; see the ``<out>.json`` written beside the model);
- ``time`` ``[B, 4]`` and ``latlon`` ``[B, 4]`` float32 encodings (zeros = unknown; see
  :mod:`clay_search.model.encoding`);
- ``gsd`` ``[]`` float32 ground sample distance in metres;

and returns ``tokens`` ``[B, 1 + L, D]`` (encoder only), or ``logits`` ``[B, K]`` (chip heads)
/ ``[B, K, S, S]`` (dense heads). The batch size is dynamic. Checked against torch with
onnxruntime in tests/test_export.py (max abs difference under 1e-4 on real chips).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from clay_search.errors import HeadError
from clay_search.model.backbone import ClayBackbone, Metadata
from clay_search.model.lora import merge_lora
from clay_search.model.sensors import SensorRegistry

OPSET = 17


class _Graph(nn.Module):
    """The exported computation: fixed bands (baked patch weights), dynamic batch."""

    def __init__(
        self, backbone: ClayBackbone, task_model: nn.Module | None, waves: Sequence[float]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_model = task_model
        w = torch.tensor(list(waves), dtype=torch.float32)
        with torch.no_grad():
            weight, bias = backbone.encoder.patch_embedding.generate(w)
        self.register_buffer("waves", w)
        self.register_buffer("pw", weight.detach().clone())
        self.register_buffer("pb", bias.detach().clone() if bias is not None else None)

    def forward(self, pixels, time, latlon, gsd):
        meta = Metadata(self.waves, gsd, time, latlon, patch_weights=(self.pw, self.pb))
        if self.task_model is None:
            return self.backbone.tokens(pixels, meta)
        return self.task_model(pixels, meta)


def _resolve_waves(bands, sensor: str | None) -> tuple[list[float], list[str], str | None]:
    if bands is None:
        raise HeadError(
            "export_onnx needs bands= (names of a sensor's bands, or wavelengths "
            "in micrometres) when no head is given"
        )
    if all(isinstance(b, int | float) for b in bands):
        return [float(b) for b in bands], [str(b) for b in bands], sensor
    s = SensorRegistry.default().get(sensor or "sentinel-2-l2a")
    found = [s.band(str(b)) for b in bands]
    return [b.wavelength for b in found], [b.name for b in found], s.name


def export_onnx(
    out: str | Path,
    *,
    weights: str | Path | None = None,
    head: str | Path | None = None,
    chip_size: int | None = None,
    bands: Sequence[str | float] | None = None,
    sensor: str | None = None,
    opset: int = OPSET,
) -> Path:
    """Write ``out`` (ONNX) and ``<out>.json`` (inputs, bands, normaliser, model id).

    With ``head`` (a head folder) the head's bands, sensor and chip size are the defaults and
    the graph ends in the head; ``weights`` is the encoder (default: the bundled weights, or the
    head's). ``bands``: band names of ``sensor`` (default ``sentinel-2-l2a``) or wavelengths.
    """
    from clay_search.model.headfile import load_head

    out = Path(out)
    spec = None
    if head is not None:
        task_model, spec = load_head(head, weights=weights)
        backbone = task_model.backbone
        merge_lora(backbone.encoder)  # LoRA heads: adapters folded in, the base model's cost
        if bands is not None and [str(b) for b in bands] != list(spec.bands):
            raise HeadError(
                f"the head {head} was trained on bands {spec.bands}; export it "
                "with those (leave bands= out)"
            )
        waves, names, sensor = list(spec.waves), list(spec.bands), spec.sensor
        chip_size = chip_size or spec.chip_size
    else:
        task_model = None
        backbone = ClayBackbone.from_weights(weights, freeze="all")
        waves, names, sensor = _resolve_waves(bands, sensor)
        chip_size = chip_size or 64
    if chip_size % backbone.patch_size:
        raise HeadError(
            f"chip_size {chip_size} is not a multiple of the patch size {backbone.patch_size}"
        )
    graph = _Graph(backbone, task_model, waves).eval()
    c = len(waves)
    args = (
        torch.zeros(1, c, chip_size, chip_size),
        torch.zeros(1, 4),
        torch.zeros(1, 4),
        torch.tensor(10.0),
    )
    out_name = "tokens" if task_model is None else "logits"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            graph,
            args,
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=["pixels", "time", "latlon", "gsd"],
            output_names=[out_name],
            dynamic_axes={
                "pixels": {0: "batch"},
                "time": {0: "batch"},
                "latlon": {0: "batch"},
                out_name: {0: "batch"},
            },
        )
    os.replace(tmp, out)
    doc = {
        "format": "clay-search-onnx",
        "model": out.name,
        "model_id": backbone.model_id,
        "inputs": {
            "pixels": ["batch", c, chip_size, chip_size],
            "time": ["batch", 4],
            "latlon": ["batch", 4],
            "gsd": [],
        },
        "output": out_name,
        "bands": names,
        "waves": waves,
        "sensor": sensor,
        "chip_size": chip_size,
        "opset": opset,
        "normaliser": spec.normaliser if spec is not None else None,
        "head": None
        if spec is None
        else {"task": spec.task, "classes": spec.classes, "target": spec.target},
    }
    out.with_name(out.name + ".json").write_text(json.dumps(doc, indent=2) + "\n")
    return out
