"""Ingest throughput and memory.

1. End-to-end chips/s of ``clay_search.ingest.run`` against model-only chips/s on the same
   chips in the same process. Model-only is the pipeline's own embedding step (its batcher, the
   same normaliser, times, locations and batch size) fed with chips read into memory first;
   end-to-end includes everything else: planning, the normaliser's samples, reading, nodata
   checks, footprints, thumbnails, LanceDB commits and the FAISS index. Target: ratio >= 0.85.
   Three workloads: the ten NAIP scenes of ``../shared/data/opengeos/naip`` (small files) at
   64 px, and one large scene tiled from them at 64 px and at 256 px (Clay's chip size).
2. Peak RSS of a separate process ingesting a 10,000 x 10,000 4-band uint8 GeoTIFF built by
   tiling the real NAIP scenes. Target: < 2 GB.

    .venv/bin/python bench/ingest_throughput.py [--weights DIR] [--size nano] [--skip-rss]

Without ``--weights`` the weights shipped in ``model/weights`` are used (``--size`` picks a
seeded random encoder instead: throughput depends on the architecture, not on weight values).
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


class _Discard:
    """Where the model-only pass sends its rows (nothing is written)."""

    def add(self, row: dict) -> None:
        pass


def read_like_the_pipeline(files: list[Path], chip_size: int, batch_size: int):
    """The chips an ingest of ``files`` embeds, read into memory by the pipeline's own code."""
    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.pipeline import _read_task
    from clay_search.ingest.plan import decide_normaliser, plan_source
    from clay_search.ingest.readers import ReaderPool
    from clay_search.ingest.sources import discover
    from clay_search.model import SensorRegistry

    params = IngestParams(chip_size=chip_size, batch_size=batch_size)
    reg = SensorRegistry.default()
    out = []
    with ReaderPool() as readers:
        for i, src in enumerate(discover([str(f) for f in files])):
            plan = plan_source(src, reg, params)
            plan.normaliser = decide_normaliser([plan], params.stats, chip_size, readers)
            res = _read_task(
                plan, i, [(str(k), w) for k, w in enumerate(plan.windows)], params, readers
            )
            if res.error is not None:
                raise res.error
            out.extend((plan, c) for c in res.chips)
    return out, params


def model_only_rate(embedder, chips: list, params) -> float:
    """Chips/s of the model alone: the pipeline's own batcher over ``chips`` (``(plan, chip)``
    pairs read by :func:`read_like_the_pipeline`), rows discarded."""
    from clay_search.ingest.pipeline import _Batcher

    batcher = _Batcher(embedder, _Discard(), params)
    t0 = time.perf_counter()
    for plan, chip in chips:
        batcher.add(plan, chip)
    batcher.flush()
    return len(chips) / (time.perf_counter() - t0)


def throughput(
    embedder,
    files: list[Path],
    chip_size: int,
    batch_size: int,
    workers_list: list[int],
    tmp: Path,
    repeats: int = 3,
) -> dict:
    """End-to-end (for each worker count) vs model-only chips/s on ``files``."""
    from clay_search.ingest import run

    # warm-up (patch-weight cache, allocator, GDAL) into a throw-away store
    run([files[0]], tmp / "warm", embedder=embedder, chip_size=chip_size, batch_size=batch_size)
    chips, params = read_like_the_pipeline(files, chip_size, batch_size)

    e2e: dict[int, list[float]] = {w: [] for w in workers_list}
    mo, written = [], 0
    for i in range(repeats):  # alternated (the machine may be shared); best of `repeats` each
        for w in workers_list:
            rep = run(
                files,
                tmp / f"e2e-{chip_size}-{w}-{i}",
                embedder=embedder,
                chip_size=chip_size,
                batch_size=batch_size,
                workers=w,
            )
            e2e[w].append(rep.chips_written / rep.seconds)
            written = rep.chips_written
        mo.append(model_only_rate(embedder, chips, params))
    if written != len(chips):
        raise SystemExit(f"end-to-end wrote {written} chips, model-only embedded {len(chips)}")
    best_mo = max(mo)
    return {
        "chips": written,
        "chip_size": chip_size,
        "batch_size": batch_size,
        "model_only_chips_per_s": round(best_mo, 1),
        "model_only_all": [round(v, 1) for v in mo],
        "end_to_end": {
            f"workers={w}": {
                "chips_per_s": round(max(v), 1),
                "all": [round(x, 1) for x in v],
                "ratio_best": round(max(v) / best_mo, 3),
                "ratio_median": round(float(np.median(v)) / float(np.median(mo)), 3),
            }
            for w, v in e2e.items()
        },
    }


def build_big_raster(path: Path, size: int = 10_000) -> Path:
    """A ``size`` x ``size`` 4-band uint8 GeoTIFF tiled from the NAIP scenes (windowed writes)."""
    import rasterio
    from rasterio.windows import Window

    files = sorted(NAIP.glob("*.tif"))
    with rasterio.open(files[0]) as s:
        profile = s.profile.copy()
        tile_h, tile_w = s.height, s.width
    profile.update(
        width=size,
        height=size,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        driver="GTiff",
        BIGTIFF="IF_SAFER",
    )
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
        [
            sys.executable,
            "-c",
            RSS_SCRIPT,
            str(big),
            str(tmp / "big_store"),
            str(weights),
            str(chip_size),
            str(workers),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the ingest process failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(
        raster=f"{size}x{size}x4 uint8",
        file_mb=round(big.stat().st_size / 2**20, 1),
        chip_size=chip_size,
    )
    return res


def main() -> None:
    """Run the benchmarks and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--size", default=None, help="a random encoder of this size instead")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="2,0", help="worker counts to run end-to-end with")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scene-size", type=int, default=8192)
    ap.add_argument("--workloads", default="naip-64,scene-64,scene-256")
    ap.add_argument("--rss-chip-size", type=int, default=128)
    ap.add_argument("--rss-size", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    from clay_search.model import Embedder

    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.size:
            weights = make_weights(args.size, tmp / "weights")
        else:
            weights = args.weights or REPO / "model" / "weights"
        result: dict = {"weights": str(weights)}
        if not args.skip_throughput:
            embedder = Embedder.from_weights(weights, device=args.device)
            result.update(
                precision=embedder.precision,
                device=str(embedder.device),
                model_id=embedder.model_id,
                throughput={},
            )
            naip = sorted(NAIP.glob("*.tif"))
            scene = None
            for name in args.workloads.split(","):
                kind, size = name.rsplit("-", 1)
                if kind == "naip":
                    files = naip
                else:
                    if scene is None:
                        scene = build_big_raster(
                            tmp / "m_4709963_se_14_1_20200831_scene.tif", args.scene_size
                        )
                    files = [scene]
                res = throughput(
                    embedder, files, int(size), args.batch_size, workers, tmp, args.repeats
                )
                res["source"] = (
                    f"{len(files)} NAIP scenes"
                    if kind == "naip"
                    else f"{args.scene_size} x {args.scene_size} x 4 uint8 scene"
                )
                result["throughput"][name] = res
                print(json.dumps({name: res}), file=sys.stderr)
            result["precision"] = embedder.precision_report()  # auto: decided at the 1st batch
        if not args.skip_rss:
            result["memory"] = peak_rss(weights, args.rss_chip_size, 2, tmp, args.rss_size)
        result["bench_process_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
