"""Index sync after predictions are written: what a writer's commit costs the FAISS index.

A store of ``--n`` chips (seeded random unit vectors, 128-d, written in 4 commits) gets an IVF
index; then predictions are written two ways and the store's index synced after each:

- ``add_columns`` only (no row rewritten): the index must stay as it is (``unchanged``);
- ``update`` of a prediction column on ``--updated`` chips (rows rewritten, new order): the
  vectors are re-added in the new order (``reordered``), against a forced full rebuild of the
  same index in the same run (the baseline: what every sync did before).

    .venv/bin/python bench/index_sync.py --n 200000
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

DIM = 128


def _rows(start: int, stop: int, rng: np.random.Generator) -> pa.Table:
    from clay_search.schema import chips_schema

    schema = chips_schema(DIM)
    n = stop - start
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols["chip_id"] = pa.array([f"c{i:08d}" for i in range(start, stop)])
    vec = rng.normal(size=(n, DIM)).astype(np.float32)
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM)
    cols["model_id"] = pa.array(["bench"] * n)
    return pa.table(cols, schema=schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--updated", type=int, default=1000)
    args = ap.parse_args()

    from clay_search.store import open_chips_table, open_or_create_store, sync_index

    work = Path(tempfile.mkdtemp(prefix="bench_index_sync_"))
    try:
        rng = np.random.default_rng(0)
        info = open_or_create_store(work / "s", "bench", DIM)
        table = open_chips_table(info)
        bounds = np.linspace(0, args.n, 5).astype(int)
        for a, b in itertools.pairwise(bounds):
            table.add(_rows(int(a), int(b), rng))
        t0 = time.perf_counter()
        first = sync_index(info.path, kind="ivf")
        build_s = time.perf_counter() - t0

        table.add_columns({"pred_label": "cast(NULL as string)"})
        t0 = time.perf_counter()
        cols = sync_index(info.path)
        cols_s = time.perf_counter() - t0

        picked = rng.choice(args.n, args.updated, replace=False)
        where = ", ".join(f"'c{i:08d}'" for i in picked)
        table.update(where=f"chip_id IN ({where})", values={"pred_label": "water"})
        t0 = time.perf_counter()
        re = sync_index(info.path)
        re_s = time.perf_counter() - t0

        shutil.copytree(work / "s" / "index", work / "index_reordered")
        t0 = time.perf_counter()
        full = sync_index(info.path, rebuild=True)
        full_s = time.perf_counter() - t0
        out = {
            "n": args.n,
            "dim": DIM,
            "updated_rows": args.updated,
            "kind": first.kind,
            "params": first.params,
            "first_build_s": round(build_s, 2),
            "add_columns": {"action": cols.action, "seconds": round(cols_s, 3)},
            "update": {"action": re.action, "seconds": round(re_s, 2)},
            "forced_rebuild": {"action": full.action, "seconds": round(full_s, 2)},
            "rebuild_over_reordered": round(full_s / max(re_s, 1e-9), 2),
        }
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
