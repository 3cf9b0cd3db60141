"""Search benchmark: our search vs LanceDB's own vector search vs numpy brute force.

Vectors are derived from real embeddings: patch embeddings of the EuroSAT MS chips
(../shared/data) through the Clay nano encoder (bundled weights if present, else seeded random
weights), resampled with Gaussian noise to ``--n`` rows. Footprints (~0.006 deg squares) and dates
(2017-2024) are random. Reports p50/p95 latency for k=50 and recall@50 against exact search, each
unfiltered and with a bbox holding ~1% of the chips plus a one-year time filter.

    .venv/bin/python bench/search.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def real_vectors(data_dir: Path, work: Path) -> tuple[np.ndarray, str]:
    """Patch embeddings of the EuroSAT MS chips, normalised, and which weights made them."""
    from store_fixtures import USE_BANDS, eurosat_files, nano_weights, read_chips

    from clay_search.index.vectors import l2_normalise
    from clay_search.model.checkpoints import bundled_weights_dir
    from clay_search.model.embedder import Embedder

    bundled = bundled_weights_dir()
    weights = bundled if (bundled / "config.json").exists() else nano_weights(work / "nano_w")
    emb = Embedder.from_weights(weights, precision="fp32")
    raw, _ = read_chips(eurosat_files(data_dir))
    out = [
        emb.embed_raw(
            raw[s : s + 64].astype(np.float32), "sentinel-2-l2a", USE_BANDS, patches=True
        ).patches.reshape(-1, emb.dim)
        for s in range(0, len(raw), 64)
    ]
    return l2_normalise(np.vstack(out)), str(weights)


def synth(base: np.ndarray, n: int, seed: int) -> dict:
    """``n`` rows: noisy copies of real vectors, random footprints and dates."""
    from clay_search.index.vectors import l2_normalise

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), n)
    vec = l2_normalise(base[idx] + rng.normal(0, 0.05, (n, base.shape[1])).astype(np.float32))
    lon = rng.uniform(-170, 170, n)
    lat = rng.uniform(-60, 70, n)
    size = 0.006
    t0 = datetime(2017, 1, 1, tzinfo=UTC)
    days = rng.integers(0, 8 * 365, n)
    return {"vec": vec, "lon": lon, "lat": lat, "size": size, "t0": t0, "days": days}


def write_store(path: Path, d: dict, model_id: str, batch: int = 200_000) -> None:
    import shapely

    from clay_search.schema import chips_schema
    from clay_search.store import open_chips_table, open_or_create_store

    n, dim = d["vec"].shape
    info = open_or_create_store(path, model_id, dim)
    table = open_chips_table(info)
    schema = chips_schema(dim)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        m = e - s
        minx, miny = d["lon"][s:e], d["lat"][s:e]
        maxx, maxy = minx + d["size"], miny + d["size"]
        geoms = shapely.box(minx, miny, maxx, maxy)
        cols = {f.name: pa.nulls(m, f.type) for f in schema}
        cols.update(
            chip_id=pa.array([f"chip{i:08d}" for i in range(s, e)]),
            geometry=pa.array(shapely.to_wkb(geoms), pa.binary()),
            minx=pa.array(minx),
            miny=pa.array(miny),
            maxx=pa.array(maxx),
            maxy=pa.array(maxy),
            datetime=pa.array(
                (np.datetime64("2017-01-01", "us") + d["days"][s:e].astype("timedelta64[D]")),
                pa.timestamp("us", tz="UTC"),
            ),
            sensor=pa.array(["sentinel-2-l2a"] * m),
            embedding=pa.FixedSizeListArray.from_arrays(pa.array(d["vec"][s:e].ravel()), dim),
            model_id=pa.array([model_id] * m),
        )
        table.add(pa.table(cols, schema=schema))


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clay_search_bench"))
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-lancedb", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args()

    import clay_search
    from clay_search.index.faiss_index import recall
    from clay_search.search import top_k
    from clay_search.store import sync_index

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    fig: dict = {"n": args.n, "k": args.k, "queries": args.queries}
    t = time.perf_counter()
    base, weights = real_vectors(args.data.resolve(), args.work)
    fig.update(real_vectors=len(base), dim=base.shape[1], weights=weights)
    d = synth(base, args.n, args.seed)
    store_path = args.work / "store"
    write_store(store_path, d, "bench")
    fig["write_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    report = sync_index(store_path)
    fig["index"] = {
        "kind": report.kind,
        "build_s": round(time.perf_counter() - t, 1),
        **report.params,
    }
    store = clay_search.connect(store_path)
    t = time.perf_counter()
    vecs = store.vectors
    store.engine  # noqa: B018 - warm the per-version state
    fig["load_s"] = round(time.perf_counter() - t, 1)

    rng = np.random.default_rng(args.seed + 7)
    qs = base[rng.integers(0, len(base), args.queries)]
    qs = qs + rng.normal(0, 0.05, qs.shape).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    # filters: a bbox holding ~1% of the chips (lon/lat are uniform) and one year of dates
    boxes, years = [], []
    for _ in range(args.queries):
        w, h = 340 * 0.1, 130 * 0.1
        x0, y0 = rng.uniform(-170, 170 - w), rng.uniform(-60, 70 - h)
        boxes.append((x0, y0, x0 + w, y0 + h))
        y = int(rng.integers(2017, 2024))
        years.append((f"{y}-01-01", f"{y}-12-31"))

    n = args.n
    minx, miny = d["lon"], d["lat"]
    maxx, maxy = minx + d["size"], miny + d["size"]
    days = d["days"]

    def truth_mask(b, yr):
        a = (datetime.fromisoformat(yr[0]).replace(tzinfo=UTC) - d["t0"]).days
        z = (datetime.fromisoformat(yr[1]).replace(tzinfo=UTC) - d["t0"]).days
        return (
            (maxx >= b[0])
            & (minx <= b[2])
            & (maxy >= b[1])
            & (miny <= b[3])
            & (days >= a)
            & (days <= z)
        )

    # numpy brute force (exact: the truth)
    lat_np, truth = [], []
    for q in qs:
        t = time.perf_counter()
        truth.append(top_k(vecs @ q, args.k))
        lat_np.append(time.perf_counter() - t)
    lat_npf, truth_f, sizes = [], [], []
    for q, b, yr in zip(qs, boxes, years, strict=True):
        t = time.perf_counter()
        rows = np.flatnonzero(truth_mask(b, yr))
        truth_f.append(rows[top_k(vecs[rows] @ q, args.k)])
        lat_npf.append(time.perf_counter() - t)
        sizes.append(len(rows))
    fig["filter_selectivity"] = float(np.mean(sizes) / n)
    fig["numpy"] = {"unfiltered_ms": pct(lat_np), "filtered_ms": pct(lat_npf), "recall": 1.0}

    # ours (includes building the Results table of k rows)
    def ours(filtered: bool):
        lat, found = [], []
        for q, b, yr in zip(qs, boxes, years, strict=True):
            kw = {"bbox": b, "start": yr[0], "end": yr[1]} if filtered else {}
            t = time.perf_counter()
            res = store.search_vector(q, k=args.k, **kw)
            lat.append(time.perf_counter() - t)
            found.append(np.array([int(c[4:]) for c in res.chip_ids]))
        return lat, found

    ours(False)  # warm-up
    lat_u, f_u = ours(False)
    lat_f, f_f = ours(True)
    fig["ours"] = {
        "unfiltered_ms": pct(lat_u),
        "unfiltered_recall": recall(_pad(f_u, args.k), np.array(truth)),
        "filtered_ms": pct(lat_f),
        "filtered_recall": recall(_pad(f_f, args.k), _pad(truth_f, args.k)),
    }
    print(json.dumps(fig, indent=1), flush=True)

    if not args.skip_lancedb:
        fig["lancedb"] = lancedb_bench(store_path, qs, boxes, years, truth, truth_f, args.k)
    print(json.dumps(fig, indent=1))
    if args.out:
        args.out.write_text(json.dumps(fig, indent=1))


def _pad(rows: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:k]
    return out


def lancedb_bench(store_path, qs, boxes, years, truth, truth_f, k) -> dict:
    """LanceDB IVF_PQ (cosine) with refine_factor, unfiltered and with a prefilter."""
    import lancedb

    from clay_search.index.faiss_index import recall

    table = lancedb.connect(str(store_path / "lancedb")).open_table("chips")
    n = table.count_rows()
    t = time.perf_counter()
    parts = max(16, int(np.sqrt(n)))
    dim = qs.shape[1]
    table.create_index(
        metric="cosine",
        vector_column_name="embedding",
        num_partitions=parts,
        num_sub_vectors=max(1, dim // 8),
        index_type="IVF_PQ",
        replace=True,
    )
    out: dict = {"build_s": round(time.perf_counter() - t, 1), "num_partitions": parts}
    for nprobes, refine in ((20, 10), (50, 20)):

        def run(filtered: bool, nprobes: int = nprobes, refine: int = refine):
            lat, found = [], []
            for q, b, yr in zip(qs, boxes, years, strict=True):
                query = (
                    table.search(q, vector_column_name="embedding")
                    .distance_type("cosine")
                    .limit(k)
                    .nprobes(nprobes)
                    .refine_factor(refine)
                    .select(["chip_id"])
                )
                if filtered:
                    # numbers generated by this benchmark, not user input
                    query = query.where(
                        f"maxx >= {b[0]} AND minx <= {b[2]} AND maxy >= {b[1]} AND miny <= {b[3]}"
                        f" AND datetime >= TIMESTAMP '{yr[0]} 00:00:00'"
                        f" AND datetime <= TIMESTAMP '{yr[1]} 23:59:59'",
                        prefilter=True,
                    )
                t = time.perf_counter()
                ids = query.to_arrow().column("chip_id").to_pylist()
                lat.append(time.perf_counter() - t)
                found.append(np.array([int(c[4:]) for c in ids]))
            return lat, found

        run(False)
        lu, fu = run(False)
        lf, ff = run(True)
        out[f"nprobes{nprobes}_refine{refine}"] = {
            "unfiltered_ms": pct(lu),
            "unfiltered_recall": recall(_pad(fu, k), np.array(truth)),
            "filtered_ms": pct(lf),
            "filtered_recall": recall(_pad(ff, k), _pad(truth_f, k)),
        }
    return out


if __name__ == "__main__":
    main()
