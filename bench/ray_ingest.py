"""Ray ingest throughput with 1 and 2 reader tasks, against the local engine and model-only.

One run, alternated ``--repeats`` times (best and median reported): model-only (the pipeline's
own embedding step over the chips read into memory first, as in
``bench/ingest_throughput.py``; on all threads, and on one thread as the Ray embedding actor
runs it), the local engine end to end (``engine="local"``), and the Ray
engine end to end on a local Ray cluster started here with ``num_cpus=2`` (one embedding actor +
one read task at a time) and ``num_cpus=3`` (one actor + two read tasks). Ray's logical CPUs
are slots, not cores: on a 2-core machine the 3-slot cluster oversubscribes. The cluster is
started once per reader count, outside the timed region; each timed run includes Ray Data's
actor start-up (the model is shipped to the actor and loaded there) and the index sync.

    .venv/bin/python bench/ray_ingest.py [--workloads naip-64,scene-256] [--repeats 2]

Reads the NAIP scenes of ``../shared/data/opengeos/naip`` (or ``$CLAY_SEARCH_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import ingest_throughput  # noqa: E402
from ingest_throughput import (  # noqa: E402
    build_big_raster,
    model_only_rate,
    read_like_the_pipeline,
)

#: ../shared/data next to the checkout, or the folder $CLAY_SEARCH_SHARED_DATA names
DATA = Path(os.environ.get("CLAY_SEARCH_SHARED_DATA") or REPO / ".." / "shared" / "data")
NAIP = (DATA / "opengeos" / "naip").resolve()
ingest_throughput.NAIP = NAIP  # build_big_raster tiles these


def ray_cluster(num_cpus: int):
    import ray

    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return ray


def one_thread(embedder, chips_params) -> float:
    """:func:`model_only_rate` with torch on one thread, as the Ray embedding actor runs it
    (it asks Ray for one CPU and sets one thread); the process's thread count is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return model_only_rate(embedder, *chips_params)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=REPO / "model" / "weights")
    ap.add_argument("--workloads", default="naip-64,scene-256")
    ap.add_argument("--scene-size", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--readers", default="1,2", help="Ray read tasks at a time")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not NAIP.is_dir():
        sys.exit(f"needs the NAIP scenes in {NAIP} (../shared/data or $CLAY_SEARCH_SHARED_DATA)")

    from clay_search.ingest import run
    from clay_search.model import Embedder

    embedder = Embedder.from_weights(args.weights)
    readers = [int(r) for r in args.readers.split(",")]
    res: dict = {
        "weights": str(args.weights),
        "model_id": embedder.model_id,
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        jobs = {}
        for name in args.workloads.split(","):
            kind, size = name.rsplit("-", 1)
            if kind == "naip":
                files = sorted(NAIP.glob("*.tif"))
            else:
                files = [
                    build_big_raster(tmp / "m_4709963_se_14_1_20200831_scene.tif", args.scene_size)
                ]
            jobs[name] = (files, int(size))
        # warm-up (allocator, GDAL, patch-weight cache) and model-only, in this process
        rates: dict = {
            name: {"model_only": [], "model_only_1_thread": [], "local": []} for name in jobs
        }
        chips: dict = {}
        for name, (files, size) in jobs.items():
            run([files[0]], tmp / f"warm-{name}", embedder=embedder, chip_size=size)
            chips[name] = read_like_the_pipeline(files, size, args.batch_size)
            for r in readers:
                rates[name][f"ray_{r}_readers"] = []

        def e2e(name: str, engine: str, tag: str) -> float:
            files, size = jobs[name]
            rep = run(
                files,
                tmp / f"{name}-{tag}",
                embedder=embedder,
                chip_size=size,
                batch_size=args.batch_size,
                engine=engine,
            )
            if not rep.ok or rep.chips_written != len(chips[name][0]):
                raise SystemExit(f"{tag}: wrote {rep.chips_written} of {len(chips[name][0])}")
            return rep.chips_written / rep.seconds

        for i in range(args.repeats):
            for name in jobs:
                rates[name]["model_only"].append(model_only_rate(embedder, *chips[name]))
                rates[name]["model_only_1_thread"].append(one_thread(embedder, chips[name]))
                rates[name]["local"].append(e2e(name, "local", f"local-{i}"))
            for r in readers:
                ray = ray_cluster(1 + r)
                try:
                    for name in jobs:
                        rates[name][f"ray_{r}_readers"].append(e2e(name, "ray", f"ray{r}-{i}"))
                finally:
                    ray.shutdown()
            print(json.dumps({"repeat": i, "rates": rates}), file=sys.stderr, flush=True)
        for name, rs in rates.items():
            mo, mo1 = max(rs["model_only"]), max(rs["model_only_1_thread"])
            res["workloads"][name] = {
                "chips": len(chips[name][0]),
                "source": f"{len(jobs[name][0])} NAIP scene(s)"
                if name.startswith("naip")
                else f"{args.scene_size} x {args.scene_size} x 4 uint8 scene tiled from NAIP",
                **{
                    k: {
                        "chips_per_s_best": round(max(v), 1),
                        "all": [round(x, 1) for x in v],
                        "ratio_to_model_only_best": round(max(v) / mo, 3),
                        "ratio_to_model_only_median": round(
                            float(np.median(v)) / float(np.median(rs["model_only"])), 3
                        ),
                        # the embedding actor's share of the machine: one core (one thread)
                        "ratio_to_model_only_1_thread_best": round(max(v) / mo1, 3),
                    }
                    for k, v in rs.items()
                },
            }
    res["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
