"""Load the reference Clay v1.5 encoder (the ``claymodel`` 1.5.0 wheel) for comparisons.

The wheel installs generic top-level modules (``model``, ``utils``...) and imports them as
``src.*``, so it is never installed: ``make bench`` downloads it (``pip download --no-deps``) and
unpacks it into ``bench/.reference/``, and this module loads its files under the name ``src``.
The encoder needs neither timm nor torchvision; the two imports are stubbed. The reference
module sets ``torch.set_float32_matmul_precision("medium")`` at import: it is reset here so fp32
comparisons stay exact.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

DEFAULT_DIR = Path(__file__).resolve().parent / ".reference"


def reference_dir() -> Path:
    """Folder with the unpacked claymodel 1.5.0 wheel (env ``CLAY_REFERENCE_DIR`` overrides)."""
    d = Path(os.environ.get("CLAY_REFERENCE_DIR", DEFAULT_DIR))
    if not (d / "model.py").exists():
        raise FileNotFoundError(
            f"reference implementation not found in {d}: run `make reference` (downloads the "
            "claymodel 1.5.0 wheel from PyPI and unpacks it there) or set CLAY_REFERENCE_DIR"
        )
    return d


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_reference() -> types.ModuleType:
    """The reference ``model`` module (classes ``Encoder``, ``Decoder``, ``ClayMAE``)."""
    if "src.model" in sys.modules:
        return sys.modules["src.model"]
    d = reference_dir()
    precision = torch.get_float32_matmul_precision()
    stubs = {}
    for name in ("timm", "torchvision", "torchvision.transforms", "torchvision.transforms.v2"):
        if name not in sys.modules:
            stubs[name] = sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.transforms"].v2 = sys.modules["torchvision.transforms.v2"]
    pkg = types.ModuleType("src")
    pkg.__path__ = [str(d)]
    sys.modules["src"] = pkg
    try:
        for sub in ("utils", "factory", "backbone", "model"):
            _load(f"src.{sub}", d / f"{sub}.py")
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
        torch.set_float32_matmul_precision(precision)
    return sys.modules["src.model"]


def reference_encoder(
    *, dim: int, depth: int, heads: int, dim_head: int, mlp_ratio: float, patch_size: int
) -> torch.nn.Module:
    """A reference ``Encoder`` with mask ratio 0 and no shuffle (deterministic, all patches)."""
    ref = load_reference()
    return ref.Encoder(
        mask_ratio=0.0,
        patch_size=patch_size,
        shuffle=False,
        dim=dim,
        depth=depth,
        heads=heads,
        dim_head=dim_head,
        mlp_ratio=mlp_ratio,
    ).eval()


def reference_forward(encoder: torch.nn.Module, pixels, time, latlon, gsd, waves) -> torch.Tensor:
    """Run the reference encoder: ``[B, 1 + L, D]`` tokens."""
    out = encoder(
        {
            "pixels": pixels,
            "time": time,
            "latlon": latlon,
            "gsd": torch.as_tensor(gsd, dtype=torch.float32),
            "waves": waves,
        }
    )
    return out[0]
