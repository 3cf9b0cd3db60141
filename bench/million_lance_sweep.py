"""More (nprobes, refine_factor) settings on the LanceDB index that ``bench/million.py`` built.

Queries only (no rebuild): the same 100 queries, truth and filters as ``bench/million.py``'s
``lancedb`` row, unfiltered and prefiltered; results appended to ``--out`` after each setting.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python bench/million_lance_sweep.py \\
        --settings 200:100,400:200 --out bench/results/million2_lancedb_sweep.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

HERE = Path(__file__).parent


def _million():
    spec = importlib.util.spec_from_file_location("bench_million", HERE / "million.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/clay_search_million"))
    ap.add_argument("--settings", default="200:100,400:200", help="nprobes:refine,...")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    m = _million()
    d, k = m.load(args.work), args.k
    table = m._lance_table(args.work)
    out = []
    for item in args.settings.split(","):
        nprobes, refine = (int(v) for v in item.split(":"))
        m._lance_query(table, d["q"][0], k, nprobes, refine)  # warm the index cache
        found, times = m.single_queries(
            lambda q, p=nprobes, r=refine: m._lance_query(table, q, k, p, r), d["q"]
        )
        ff, tf = [], []
        for q, f in zip(d["q"], d["filters"], strict=True):
            t = time.perf_counter()
            ff.append(m._lance_query(table, q, k, nprobes, refine, f))
            tf.append(time.perf_counter() - t)
        out.append(
            {
                "nprobes": nprobes,
                "refine_factor": refine,
                "recall": m.recall(m.pad(found, k), d["truth"]),
                "ms": m.pct(times),
                "filtered_recall": m.recall(m.pad(ff, k), d["truth_f"]),
                "filtered_ms": m.pct(tf),
                "filtered_outside": m.outside(ff, d),
            }
        )
        m.progress(json.dumps(out[-1]))
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
