"""Load test: N concurrent clients searching one 100,000-chip store through the Python API.

Bounded count and time, loopback only. The store is an import of a seeded Clay-format GeoParquet
(random unit vectors, ~0.01 deg footprints over 20 x 10 degrees, dates 2016-2022). Each client
thread runs ``--requests`` searches on one shared ``Store`` (the app's situation: one store
object, many sessions), cycling through: by chip id (k=50), by vector (k=50), by chip id with a
bbox of ~1% of the chips and a one-year time filter. The run repeats ``--rounds`` times; p50/p99
latency, errors and resident memory after each round are reported (memory must not grow after the
first round).

    .venv/bin/python bench/load_search.py --n 100000 --clients 8 --requests 50 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from common import rss_mib  # noqa: E402  (bench/common.py: this script's folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from test_faults import clay_geoparquet

    import clay_search
    from clay_search.ingest.importer import import_geoparquet

    work = Path(tempfile.mkdtemp(prefix="clay-load-"))
    t0 = time.perf_counter()
    gpq = clay_geoparquet(work / "e.gpq", n=args.n, dim=args.dim)
    import_geoparquet(gpq, work / "store", model_id="clay-v1.5", sensor="sentinel-2-l2a")
    build_s = time.perf_counter() - t0
    store = clay_search.connect(work / "store")
    ids = store.attrs.column("chip_id").to_pylist()
    rng = np.random.default_rng(0)
    store.search([ids[0]], k=5)  # warm: index loaded, filter engine built
    rss0 = rss_mib()

    def client(seed: int, lat: list[float], errors: list[str]) -> None:
        r = np.random.default_rng(seed)
        for i in range(args.requests):
            t = time.perf_counter()
            try:
                kind = i % 3
                if kind == 0:
                    res = store.search([ids[int(r.integers(len(ids)))]], k=50)
                elif kind == 1:
                    v = r.standard_normal(args.dim).astype(np.float32)
                    res = store.search_vector(v, k=50)
                else:
                    lon, lat0 = float(r.uniform(-10, 8)), float(r.uniform(40, 49))
                    res = store.search(
                        [ids[int(r.integers(len(ids)))]],
                        k=50,
                        bbox=(lon, lat0, lon + 2, lat0 + 1),
                        start="2018-01-01",
                        end="2018-12-31",
                    )
                if kind < 2 and len(res) != 50:
                    errors.append(f"{len(res)} results")
            except Exception as e:  # noqa: BLE001 - every error counts
                errors.append(f"{type(e).__name__}: {e}")
            lat.append(time.perf_counter() - t)

    rounds = []
    for k in range(args.rounds):
        lat: list[float] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=client, args=(int(rng.integers(1 << 30)), lat, errors))
            for _ in range(args.clients)
        ]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        ms = np.array(lat) * 1000
        rounds.append(
            {
                "round": k,
                "requests": len(lat),
                "errors": len(errors),
                "error_examples": errors[:3],
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "throughput_rps": len(lat) / wall,
                "rss_mib": rss_mib(),
            }
        )
        print(json.dumps(rounds[-1]))
    out = {
        "n": args.n,
        "dim": args.dim,
        "clients": args.clients,
        "requests": args.requests,
        "build_seconds": build_s,
        "rss_after_warmup_mib": rss0,
        "rounds": rounds,
        "index": store.search([ids[0]], k=5).meta.get("index"),
    }
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
