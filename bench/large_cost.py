"""What the Large variant (Clay v1.5's size, 1,024-d tokens) costs to embed on this machine.

A seeded random-weight ``large`` encoder (the architecture of the official checkpoint; speed
and memory do not depend on the weights' values) embeds 256 px chips of the 10 Sentinel-2 bands
Clay uses through ``Embedder`` (fp32, the chip vector a store holds), one chip per batch. The
``nano`` default runs the same way in the same process as the baseline. Prints chips/s (best of
``--repeats`` passes of ``--chips`` chips) and the process's peak resident memory after each
model (``VmHWM``; the nano figure comes first, so Large's includes it).

    .venv/bin/python bench/large_cost.py [--chips 3] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import peak_rss_mib  # bench/common.py: this script's folder

from clay_search.model import ClayEncoder, Embedder, SensorRegistry, get_config

BANDS = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16",
         "swir22"]  # fmt: skip


def measure(size: str, chips: int, repeats: int, chip_px: int) -> dict:
    torch.manual_seed(0)
    cfg = get_config(size)
    encoder = ClayEncoder.from_config(cfg).eval()
    params = sum(p.numel() for p in encoder.parameters())
    emb = Embedder(encoder, precision="fp32", pooling="cls")
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    waves = [s2.band(b).wavelength for b in BANDS]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, len(BANDS), chip_px, chip_px)).astype(np.float32)
    emb.embed(x, waves=waves, gsd=10.0)  # warm-up (patch weights, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(chips):
            emb.embed(x, waves=waves, gsd=10.0)
        best = min(best, time.perf_counter() - t0)
    return {
        "size": size,
        "params_m": params / 1e6,
        "dim": cfg.dim,
        "chips_per_s": chips / best,
        "s_per_chip": best / chips,
        "peak_mib": peak_rss_mib(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chips", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chip-px", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.chip_px} px, "
          f"{len(BANDS)} bands, batch 1, fp32, random weights")  # fmt: skip
    base = None
    for size in ("nano", "large"):
        r = measure(size, args.chips, args.repeats, args.chip_px)
        base = base or r["chips_per_s"]
        print(
            f"{r['size']:>5}: {r['params_m']:.1f} M params, D={r['dim']}, "
            f"{r['chips_per_s']:.3f} chips/s ({r['s_per_chip']:.2f} s/chip, "
            f"{r['chips_per_s'] / base:.4f}x nano), peak RSS {r['peak_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
