"""Peak memory and rate of `import_embeddings` on generated emb-convention files of two sizes.

Each import runs in its own subprocess (peak RSS from getrusage, after a warm-up import of a
1,000-row file in the same process). Usage: python bench/import_memory.py [ROWS_SMALL ROWS_BIG]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import interop_fixtures as fx

CHILD = """
import resource, sys, time
from clay_search.ingest.importer import import_embeddings
import_embeddings(sys.argv[1], sys.argv[3], sync=False)
warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rep = import_embeddings(sys.argv[2], sys.argv[4], sync=False)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(warm // 1024, peak // 1024, rep["added"], round(dt, 1))
"""


def main() -> None:
    sizes = [int(v) for v in sys.argv[1:3]] or [120_000, 700_000]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        warm = fx.big_file(d / "warm.parquet", rows=1000, dim=256)
        print("rows  file_MB  warm_RSS_MB  peak_RSS_MB  seconds  rows_per_s")
        for n in sizes:
            f = fx.big_file(d / f"f{n}.parquet", rows=n, dim=256)
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(warm),
                    str(f),
                    str(d / f"w{n}"),
                    str(d / f"s{n}"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            w, p, added, dt = out.stdout.split()
            size = os.path.getsize(f) / 2**20
            print(f"{n}  {size:.0f}  {w}  {p}  {dt}  {int(added) / float(dt):.0f}")


if __name__ == "__main__":
    main()
