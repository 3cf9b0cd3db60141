"""Ingest throughput and memory.

1. End-to-end chips/s of ``clay_search.ingest.run`` against model-only chips/s on the same
   chips in the same process (the chips are read into memory first, then only
   ``Embedder.embed_raw`` is timed with the same batch size). Target: ratio >= 0.85.
2. Peak RSS of a separate process ingesting a 10,000 x 10,000 4-band uint8 GeoTIFF built by
   tiling the real NAIP scenes of ``../shared/data/opengeos/naip``. Target: < 2 GB.

    .venv/bin/python bench/ingest_throughput.py [--weights DIR] [--size nano] [--skip-rss]

Without ``--weights`` (and without bundled weights) a seeded random encoder of ``--size`` is
used: throughput depends on the architecture, not on the weight values.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NAIP = (REPO / ".." / "shared" / "data" / "opengeos" / "naip").resolve()


def make_weights(size: str, out: Path) -> Path:
    """A seeded random encoder saved as clay-search weights."""
    import torch

    from clay_search.model import ClayEncoder, get_config, save_weights

    torch.manual_seed(0)
    cfg = get_config(size)
    save_weights(ClayEncoder.from_config(cfg), cfg, out)
    return out


def throughput(weights: Path, chip_size: int, batch_size: int, workers: int, device: str,
               tmp: Path, repeats: int = 3) -> dict:
    """End-to-end vs model-only chips/s on the NAIP scenes."""
    from clay_search.ingest import run
    from clay_search.ingest.plan import plan_source
    from clay_search.ingest.raster import SourceReader
    from clay_search.ingest.sources import discover
    from clay_search.model import Embedder, SensorRegistry

    files = sorted(NAIP.glob("*.tif"))
    embedder = Embedder.from_weights(weights, device=device)
    # warm-up (patch-weight cache, allocator) on one file, into a throw-away store
    run([files[0]], tmp / "warm", embedder=embedder, chip_size=chip_size, batch_size=batch_size,
        workers=workers)

    # the same chips as the run makes, read into memory once, for the model-only passes
    from clay_search.ingest.params import IngestParams

    params = IngestParams(chip_size=chip_size)
    reg = SensorRegistry.default()
    chips, plans = [], []
    for src in discover([str(f) for f in files]):
        plan = plan_source(src, reg, params)
        with SourceReader(src) as r:
            for w in plan.windows:
                raw, valid = r.read(w, plan.bands.indices)
                if 1.0 - valid.mean() <= params.max_nodata:
                    chips.append((raw, valid))
                    plans.append(plan)
    n = len(chips)
    sensor, bands = plans[0].bands.sensor, plans[0].bands.bands

    def model_only() -> float:
        t0 = time.perf_counter()
        for k in range(0, n, batch_size):
            part = chips[k:k + batch_size]
            embedder.embed_raw(np.stack([c[0] for c in part]), sensor, bands,
                               valid=np.stack([c[1] for c in part])[:, None], gsd=plans[0].gsd)
        return n / (time.perf_counter() - t0)

    # alternate the two measurements (the machine may be shared): best of `repeats` each
    e2e, mo, reports = [], [], []
    for i in range(repeats):
        rep = run(files, tmp / f"e2e{i}", embedder=embedder, chip_size=chip_size,
                  batch_size=batch_size, workers=workers)
        e2e.append(rep.chips_written / rep.seconds)
        reports.append(rep)
        mo.append(model_only())
    best = int(np.argmax(e2e))
    return {
        "chips": reports[best].chips_written,
        "chips_model_only": n,
        "end_to_end_chips_per_s": round(max(e2e), 1),
        "model_only_chips_per_s": round(max(mo), 1),
        "ratio_best": round(max(e2e) / max(mo), 3),
        "ratio_median": round(float(np.median(e2e)) / float(np.median(mo)), 3),
        "end_to_end_all": [round(v, 1) for v in e2e],
        "model_only_all": [round(v, 1) for v in mo],
        "precision": embedder.precision,
        "device": str(embedder.device),
        "workers": workers,
        "chip_size": chip_size,
        "batch_size": batch_size,
    }


def build_big_raster(path: Path, size: int = 10_000) -> Path:
    """A ``size`` x ``size`` 4-band uint8 GeoTIFF tiled from the NAIP scenes (windowed writes)."""
    import rasterio
    from rasterio.windows import Window

    files = sorted(NAIP.glob("*.tif"))
    with rasterio.open(files[0]) as s:
        profile = s.profile.copy()
        tile_h, tile_w = s.height, s.width
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", driver="GTiff", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        k = 0
        for r in range(0, size, tile_h):
            for c in range(0, size, tile_w):
                with rasterio.open(files[k % len(files)]) as s:
                    h, w = min(tile_h, size - r), min(tile_w, size - c)
                    dst.write(s.read(window=Window(0, 0, w, h)), window=Window(c, r, w, h))
                k += 1
    return path


RSS_SCRIPT = """
import json, sys, time
from clay_search.ingest import run


def hwm_mb():  # peak RSS of this process image (ru_maxrss would include the forking parent)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

t0 = time.perf_counter()
r = run([sys.argv[1]], sys.argv[2], weights=sys.argv[3], chip_size=int(sys.argv[4]),
        workers=int(sys.argv[5]))
print(json.dumps({"chips": r.chips_written, "seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": round(hwm_mb(), 1)}))
"""


def peak_rss(weights: Path, chip_size: int, workers: int, tmp: Path, size: int) -> dict:
    """Peak RSS of a fresh process ingesting the big raster."""
    big = build_big_raster(tmp / "m_4709963_se_14_1_20200831_big.tif", size)
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(big), str(tmp / "big_store"), str(weights),
         str(chip_size), str(workers)],
        check=False, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the ingest process failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(raster=f"{size}x{size}x4 uint8", file_mb=round(big.stat().st_size / 2**20, 1),
               chip_size=chip_size)
    return res


def main() -> None:
    """Run the benchmarks and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--size", default="nano")
    ap.add_argument("--chip-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rss-chip-size", type=int, default=128)
    ap.add_argument("--rss-size", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        weights = args.weights or make_weights(args.size, tmp / "weights")
        result = {}
        if not args.skip_throughput:
            result["throughput"] = throughput(weights, args.chip_size, args.batch_size,
                                              args.workers, args.device, tmp, args.repeats)
        if not args.skip_rss:
            result["memory"] = peak_rss(weights, args.rss_chip_size, args.workers, tmp,
                                        args.rss_size)
        result["bench_process_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
