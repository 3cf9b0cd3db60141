"""Search at Clay's dimension: 1,000,000 x 1,024 vectors, one row per index, each in a process.

Vectors: a seeded mixture of ``--clusters`` Gaussian clusters in 1,024-d (cluster sizes
Zipf-like, spreads varying per cluster), L2-normalised, generated and written chunk by chunk
(``--chunk`` rows) so memory stays bounded: to ``vectors.f32`` (a raw float32 matrix read
through ``np.memmap``) and to a clay-search store (LanceDB ``chips`` table with random
0.006-degree footprints and 2017-2024 dates). Queries are fresh draws from the same mixture
(not rows of the table). Truth: exact top-k by inner product, unfiltered and within a filter
(a bbox holding ~1% of the chips plus one year of dates, ~0.125%).

Rows (each a subprocess with its own ``--row-timeout``; a row that runs out of time is reported
as not finished with its last progress line):

- ``exact``: numpy brute force over the memory-mapped matrix (what exact search costs).
- ``faiss_ivfpq``: FAISS ``IVF{nlist},PQ64`` trained on a sample, nprobe sweep, with and
  without exact re-ranking of ``R x k`` candidates read from the matrix.
- ``faiss_hnsw``: FAISS ``HNSW{M}`` (flat storage), ``efConstruction`` bounded, efSearch sweep.
- ``lancedb``: LanceDB's own ``IVF_PQ`` with ``refine_factor``, unfiltered and prefiltered.
- ``ours``: ``sync_index`` (the ``auto`` kind) then ``Store.search_vector``, unfiltered and
  filtered.

Per row: build seconds, bytes per vector (index on disk; and the process's peak RSS), recall@k,
p50/p95 latency of single queries, and the first-query cost in a fresh process after the row's
files were dropped from the page cache (``posix_fadvise(DONTNEED)``; a true cold open as far as
an unprivileged process can make one).

    OMP_NUM_THREADS=2 nice -n 19 .venv/bin/python bench/million.py --out docs/million.json
    .venv/bin/python bench/million.py --quick      # 4,096 x 64, for the test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mib

ROWS = ("exact", "faiss_ivfpq", "faiss_hnsw", "lancedb", "ours")
_T0_DAY = np.datetime64("2017-01-01", "D")


# --------------------------------------------------------------------------------------------
# data


def mixture(dim: int, clusters: int, seed: int) -> dict:
    """Cluster centres (unit), per-cluster spread and Zipf-like weights of the mixture."""
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # noise per dimension: total noise norm 0.5-1.1 x the centre's (unit) norm
    spread = rng.uniform(0.5, 1.1, clusters).astype(np.float32) / np.sqrt(dim)
    w = 1.0 / np.arange(1, clusters + 1) ** 0.7
    return {"centres": centres, "spread": spread, "weights": w / w.sum()}


def draw(mix: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors from the mixture, ``[n, dim]`` float32."""
    c = rng.choice(len(mix["weights"]), n, p=mix["weights"])
    x = rng.standard_normal((n, mix["centres"].shape[1]), dtype=np.float32)
    x *= mix["spread"][c, None]
    x += mix["centres"][c]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def attrs(n: int, seed: int) -> dict:
    """Footprint corners (lon, lat of a 0.006-degree square) and day offsets since 2017-01-01."""
    rng = np.random.default_rng([seed, 2])
    return {
        "lon": rng.uniform(-170, 170, n),
        "lat": rng.uniform(-60, 70, n),
        "days": rng.integers(0, 8 * 365, n),
    }


def filters(nq: int, seed: int) -> list[dict]:
    """Per query: a bbox of 10% x 10% of the lon/lat range (~1% of chips) and one year."""
    rng = np.random.default_rng([seed, 3])
    out = []
    for _ in range(nq):
        w, h = 340 * 0.1, 130 * 0.1
        x0, y0 = rng.uniform(-170, 170 - w), rng.uniform(-60, 70 - h)
        y = int(rng.integers(2017, 2024))
        out.append({"bbox": [x0, y0, x0 + w, y0 + h], "start": f"{y}-01-01", "end": f"{y}-12-31"})
    return out


def in_filter(a: dict, f: dict, size: float = 0.006) -> np.ndarray:
    """Rows whose footprint intersects the bbox and whose date is in the year (inclusive)."""
    b = f["bbox"]
    lo = (np.datetime64(f["start"], "D") - _T0_DAY).astype(int)
    hi = (np.datetime64(f["end"], "D") - _T0_DAY).astype(int)
    lon, lat, days = a["lon"], a["lat"], a["days"]
    return (
        (lon + size >= b[0])
        & (lon <= b[2])
        & (lat + size >= b[1])
        & (lat <= b[3])
        & (days >= lo)
        & (days <= hi)
    )


def write_data(cfg: dict, work: Path) -> dict:
    """Vectors (memmap + store), queries and truth, chunk by chunk; returns timings."""
    import pyarrow as pa
    import shapely

    from clay_search.schema import chips_schema
    from clay_search.store import open_chips_table, open_or_create_store

    n, dim, chunk = cfg["n"], cfg["dim"], cfg["chunk"]
    mix = mixture(dim, cfg["clusters"], cfg["seed"])
    a = attrs(n, cfg["seed"])
    mm = np.lib.format.open_memmap(work / "vectors.npy", "w+", np.float32, (n, dim))
    info = open_or_create_store(work / "store", "bench-million", dim)
    table = open_chips_table(info)
    schema = chips_schema(dim)
    t = time.perf_counter()
    gen_s = 0.0
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        m = e - s
        g = time.perf_counter()
        x = draw(mix, m, np.random.default_rng([cfg["seed"], 1, s]))
        gen_s += time.perf_counter() - g
        mm[s:e] = x
        minx, miny = a["lon"][s:e], a["lat"][s:e]
        cols = {f.name: pa.nulls(m, f.type) for f in schema}
        cols.update(
            chip_id=pa.array([f"chip{i:08d}" for i in range(s, e)]),
            geometry=pa.array(
                shapely.to_wkb(shapely.box(minx, miny, minx + 0.006, miny + 0.006)), pa.binary()
            ),
            minx=pa.array(minx),
            miny=pa.array(miny),
            maxx=pa.array(minx + 0.006),
            maxy=pa.array(miny + 0.006),
            datetime=pa.array(
                (_T0_DAY + a["days"][s:e].astype("timedelta64[D]")).astype("datetime64[us]"),
                pa.timestamp("us", tz="UTC"),
            ),
            sensor=pa.array(["sentinel-2-l2a"] * m),
            embedding=pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
            model_id=pa.array(["bench-million"] * m),
        )
        table.add(pa.table(cols, schema=schema))
        progress(f"wrote {e:,}/{n:,} rows")
    mm.flush()
    write_s = time.perf_counter() - t
    q = draw(mix, cfg["queries"], np.random.default_rng([cfg["seed"], 4]))
    fl = filters(cfg["queries"], cfg["seed"])
    t = time.perf_counter()
    truth = blocked_topk(mm, q, cfg["k"], chunk)
    truth_f = []
    for qi, f in zip(q, fl, strict=True):
        rows = np.flatnonzero(in_filter(a, f))
        s = np.asarray(mm[rows]) @ qi
        truth_f.append(rows[np.argsort(-s, kind="stable")[: cfg["k"]]])
    truth_s = time.perf_counter() - t
    sel = float(np.mean([in_filter(a, f).mean() for f in fl]))
    np.save(work / "queries.npy", q)
    np.save(work / "truth.npy", truth)
    np.save(work / "truth_filtered.npy", pad(truth_f, cfg["k"]))
    np.savez(work / "attrs.npz", **a)
    (work / "filters.json").write_text(json.dumps(fl))
    return {
        "generate_s": round(gen_s, 2),
        "write_s": round(write_s, 2),
        "truth_s": round(truth_s, 2),
        "filter_selectivity": round(sel, 5),
        "vectors_npy_bytes": (work / "vectors.npy").stat().st_size,
        "store_bytes": dir_bytes(work / "store"),
    }


def blocked_topk(mm: np.ndarray, q: np.ndarray, k: int, block: int) -> np.ndarray:
    """Exact top-``k`` rows by inner product over a (memory-mapped) matrix, block by block."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(mm), block):
        sc = q @ np.asarray(mm[s : s + block]).T
        cs = np.concatenate([best_s, sc], axis=1)
        ci = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + sc.shape[1]), sc.shape)], 1)
        top = np.argsort(-cs, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    return best_i


# --------------------------------------------------------------------------------------------
# helpers


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pad(rows: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : min(k, len(r))] = r[:k]
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found & truth| / |truth| (padding -1 ignored)."""
    vals = []
    for f, t in zip(found, truth, strict=True):
        t = set(t[t >= 0].tolist())
        if t:
            vals.append(len(set(f[f >= 0].tolist()) & t) / len(t))
    return round(float(np.mean(vals)), 4) if vals else 1.0


def pct(times: list[float]) -> list[float]:
    a = 1e3 * np.asarray(times)
    return [round(float(np.percentile(a, 50)), 2), round(float(np.percentile(a, 95)), 2)]


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drop_cache(path: Path) -> None:
    """Ask the kernel to drop the clean page-cache pages of every file under ``path``."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load(work: Path) -> dict:
    return {
        "x": np.load(work / "vectors.npy", mmap_mode="r"),
        "q": np.load(work / "queries.npy"),
        "truth": np.load(work / "truth.npy"),
        "truth_f": np.load(work / "truth_filtered.npy"),
        "filters": json.loads((work / "filters.json").read_text()),
        "attrs": dict(np.load(work / "attrs.npz")),
    }


def single_queries(fn, qs) -> tuple[np.ndarray, list[float]]:
    """Run ``fn(q) -> row ids`` per query; returns found rows and per-query seconds."""
    found, times = [], []
    for q in qs:
        t = time.perf_counter()
        found.append(np.asarray(fn(q)))
        times.append(time.perf_counter() - t)
    return found, times


def rerank(x: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Exact re-ranking of candidate rows with the fp32 vectors (sorted reads of the matrix)."""
    c = np.unique(cand[cand >= 0])
    return c[np.argsort(-(np.asarray(x[c]) @ q), kind="stable")[:k]]


def outside(found: list[np.ndarray], d: dict) -> int:
    """How many filtered results lie outside their query's filter (must be 0)."""
    bad = 0
    for f, flt in zip(found, d["filters"], strict=True):
        ok = in_filter(d["attrs"], flt)
        bad += int((~ok[f[f >= 0]]).sum())
    return bad


# --------------------------------------------------------------------------------------------
# rows (each runs in its own process)


def row_exact(cfg: dict, work: Path) -> dict:
    d = load(work)
    x, k = d["x"], cfg["k"]
    x.sum(axis=0)  # fault the whole matrix in once (warm)
    found, times = single_queries(lambda q: np.argsort(-(x @ q), kind="stable")[:k], d["q"])
    return {
        "index": "numpy brute force (memory-mapped fp32)",
        "build_s": 0.0,
        "bytes_per_vector_disk": 4 * cfg["dim"],
        "recall": recall(pad(found, k), d["truth"]),
        "ms": pct(times),
    }


def cold_exact(cfg: dict, work: Path) -> dict:
    t = time.perf_counter()
    x = np.load(work / "vectors.npy", mmap_mode="r")
    q = np.load(work / "queries.npy")[0]
    np.argsort(-(x @ q))[: cfg["k"]]
    return {"first_query_s": round(time.perf_counter() - t, 2), "files": ["vectors.npy"]}


def _faiss_threads() -> None:
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def row_faiss_ivfpq(cfg: dict, work: Path) -> dict:
    import faiss

    _faiss_threads()
    d = load(work)
    x, k, n = d["x"], cfg["k"], cfg["n"]
    nlist, m = cfg["ivf_nlist"], cfg["pq_m"]
    index = faiss.index_factory(cfg["dim"], f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = cfg["seed"]
    ivf.cp.niter = 10
    # index_factory turns on polysemous training (minutes for nothing we use here), and
    # k-means in PQ's small sub-spaces runs at ~1 GFLOP/s on this machine: PQ codebooks from
    # 64 x 256 points each (max_points_per_centroid), 10 iterations
    index.do_polysemous_training = False
    pq = faiss.downcast_index(ivf).pq
    pq.cp.niter = 10
    pq.cp.max_points_per_centroid = 64
    sample = np.sort(np.random.default_rng([cfg["seed"], 5]).choice(n, cfg["train"], False))
    t = time.perf_counter()
    index.train(np.ascontiguousarray(x[sample]))
    train_s = time.perf_counter() - t
    progress(f"ivfpq trained in {train_s:.0f} s")
    for s in range(0, n, cfg["chunk"]):
        index.add(np.ascontiguousarray(x[s : s + cfg["chunk"]]))
        progress(f"ivfpq added {min(n, s + cfg['chunk']):,}/{n:,}")
    build_s = time.perf_counter() - t
    faiss.write_index(index, str(work / "ivfpq.faiss"))
    out: dict = {
        "index": f"FAISS IVF{nlist},PQ{m} (train sample {cfg['train']:,})",
        "build_s": round(build_s, 1),
        "train_s": round(train_s, 1),
        "bytes_per_vector_disk": round((work / "ivfpq.faiss").stat().st_size / n, 1),
        "sweep": [],
    }
    for nprobe in cfg["nprobes"]:
        ivf.nprobe = nprobe
        found, times = single_queries(lambda q: index.search(q[None], k)[1][0], d["q"])
        out["sweep"].append(
            {"nprobe": nprobe, "recall": recall(pad(found, k), d["truth"]), "ms": pct(times)}
        )
        for r in cfg["rerank"]:
            found, times = single_queries(
                lambda q, r=r: rerank(x, q, index.search(q[None], r * k)[1][0], k), d["q"]
            )
            out["sweep"].append(
                {
                    "nprobe": nprobe,
                    "rerank": f"{r}k",
                    "ms": pct(times),
                    "recall": recall(pad(found, k), d["truth"]),
                }
            )
        progress(json.dumps(out["sweep"][-1]))
    return out


def cold_faiss(cfg: dict, work: Path, name: str) -> dict:
    import faiss

    _faiss_threads()
    t = time.perf_counter()
    index = faiss.read_index(str(work / name))
    load_s = time.perf_counter() - t
    q = np.load(work / "queries.npy")[0]
    if name == "ivfpq.faiss":
        faiss.extract_index_ivf(index).nprobe = cfg["nprobes"][-1]
        x = np.load(work / "vectors.npy", mmap_mode="r")
        rerank(x, q, index.search(q[None], cfg["rerank"][-1] * cfg["k"])[1][0], cfg["k"])
        files = [name, "vectors.npy"]
    else:
        index.search(q[None], cfg["k"])
        files = [name]
    return {
        "load_s": round(load_s, 2),
        "first_query_s": round(time.perf_counter() - t, 2),
        "files": files,
    }


def row_faiss_hnsw(cfg: dict, work: Path) -> dict:
    import faiss

    _faiss_threads()
    d = load(work)
    x, k, n = d["x"], cfg["k"], cfg["n"]
    index = faiss.IndexHNSWFlat(cfg["dim"], cfg["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = cfg["hnsw_efc"]
    t = time.perf_counter()
    for s in range(0, n, cfg["chunk"]):
        index.add(np.ascontiguousarray(x[s : s + cfg["chunk"]]))
        e = min(n, s + cfg["chunk"])
        el = time.perf_counter() - t
        progress(f"hnsw added {e:,}/{n:,} in {el:.0f} s ({e / el:.0f} vectors/s)")
    build_s = time.perf_counter() - t
    faiss.write_index(index, str(work / "hnsw.faiss"))
    out: dict = {
        "index": f"FAISS HNSW{cfg['hnsw_m']} flat (efConstruction {cfg['hnsw_efc']})",
        "build_s": round(build_s, 1),
        "bytes_per_vector_disk": round((work / "hnsw.faiss").stat().st_size / n, 1),
        "sweep": [],
    }
    for ef in cfg["efs"]:
        index.hnsw.efSearch = max(ef, k)
        found, times = single_queries(lambda q: index.search(q[None], k)[1][0], d["q"])
        out["sweep"].append(
            {"ef_search": max(ef, k), "recall": recall(pad(found, k), d["truth"]), "ms": pct(times)}
        )
        progress(json.dumps(out["sweep"][-1]))
    return out


def _where(f: dict) -> str:
    b = f["bbox"]  # numbers generated by this benchmark, not user input
    return (
        f"maxx >= {b[0]} AND minx <= {b[2]} AND maxy >= {b[1]} AND miny <= {b[3]}"
        f" AND datetime >= TIMESTAMP '{f['start']} 00:00:00'"
        f" AND datetime <= TIMESTAMP '{f['end']} 23:59:59'"
    )


def _lance_table(work: Path):
    import lancedb

    return lancedb.connect(str(work / "store" / "lancedb")).open_table("chips")


def _lance_query(table, q, k: int, nprobes: int, refine: int, f: dict | None = None):
    query = (
        table.search(q, vector_column_name="embedding")
        .distance_type("cosine")
        .limit(k)
        .nprobes(nprobes)
        .refine_factor(refine)
        .select(["chip_id"])
    )
    if f is not None:
        query = query.where(_where(f), prefilter=True)
    ids = query.to_arrow().column("chip_id").to_pylist()
    return np.array([int(c[4:]) for c in ids], dtype=np.int64)


def row_lancedb(cfg: dict, work: Path) -> dict:
    d = load(work)
    k = cfg["k"]
    table = _lance_table(work)
    before = dir_bytes(work / "store" / "lancedb")
    progress(f"lancedb create_index ({cfg['lance_partitions']} partitions) started")
    t = time.perf_counter()
    table.create_index(
        metric="cosine",
        vector_column_name="embedding",
        num_partitions=cfg["lance_partitions"],
        num_sub_vectors=cfg["lance_sub_vectors"],
        index_type="IVF_PQ",
        sample_rate=cfg["lance_sample_rate"],
        max_iterations=cfg["lance_iterations"],
        replace=True,
    )
    build_s = time.perf_counter() - t
    idx_bytes = dir_bytes(work / "store" / "lancedb") - before
    out: dict = {
        "index": (
            f"LanceDB IVF_PQ ({cfg['lance_partitions']} partitions, "
            f"{cfg['lance_sub_vectors']} sub-vectors, sample_rate {cfg['lance_sample_rate']})"
        ),
        "build_s": round(build_s, 1),
        "bytes_per_vector_disk": round(idx_bytes / cfg["n"], 1),
        "sweep": [],
    }
    progress(f"lancedb index built in {build_s:.0f} s")
    for nprobes, refine in cfg["lance_sweep"]:
        _lance_query(table, d["q"][0], k, nprobes, refine)  # warm the index cache
        found, times = single_queries(
            lambda q, p=nprobes, r=refine: _lance_query(table, q, k, p, r), d["q"]
        )
        ff, tf = [], []
        for q, f in zip(d["q"], d["filters"], strict=True):
            t = time.perf_counter()
            ff.append(_lance_query(table, q, k, nprobes, refine, f))
            tf.append(time.perf_counter() - t)
        out["sweep"].append(
            {
                "nprobes": nprobes,
                "refine_factor": refine,
                "recall": recall(pad(found, k), d["truth"]),
                "ms": pct(times),
                "filtered_recall": recall(pad(ff, k), d["truth_f"]),
                "filtered_ms": pct(tf),
                "filtered_outside": outside(ff, d),
            }
        )
        progress(json.dumps(out["sweep"][-1]))
    return out


def cold_lancedb(cfg: dict, work: Path) -> dict:
    t = time.perf_counter()
    table = _lance_table(work)
    nprobes, refine = cfg["lance_sweep"][-1]
    _lance_query(table, np.load(work / "queries.npy")[0], cfg["k"], nprobes, refine)
    return {"first_query_s": round(time.perf_counter() - t, 2), "files": ["store/lancedb"]}


def _ids(res) -> np.ndarray:
    return np.array([int(c[4:]) for c in res.chip_ids], dtype=np.int64)


def row_ours(cfg: dict, work: Path) -> dict:
    import clay_search
    from clay_search.store import sync_index

    d = load(work)
    k = cfg["k"]
    t = time.perf_counter()
    report = sync_index(work / "store", kind=cfg.get("ours_kind", "auto"))
    build_s = time.perf_counter() - t
    progress(f"ours: {report.kind} index built in {build_s:.0f} s ({report.params})")
    store = clay_search.connect(work / "store")
    t = time.perf_counter()
    store.search_vector(d["q"][0], k=k)
    first_s = time.perf_counter() - t
    found, times = single_queries(lambda q: _ids(store.search_vector(q, k=k)), d["q"])
    ff, tf = [], []
    for q, f in zip(d["q"], d["filters"], strict=True):
        t = time.perf_counter()
        ff.append(_ids(store.search_vector(q, k=k, bbox=f["bbox"], start=f["start"], end=f["end"])))
        tf.append(time.perf_counter() - t)
    idx_files = [p for p in (work / "store").rglob("index-*") if p.is_file()]
    return {
        "index": f"clay-search Store.search_vector ({report.kind}, {report.params})",
        "build_s": round(build_s, 1),
        "bytes_per_vector_disk": round(sum(p.stat().st_size for p in idx_files) / cfg["n"], 1),
        "first_query_warm_s": round(first_s, 2),
        "recall": recall(pad(found, k), d["truth"]),
        "ms": pct(times),
        "filtered_recall": recall(pad(ff, k), d["truth_f"]),
        "filtered_ms": pct(tf),
        "filtered_outside": outside(ff, d),
    }


def cold_ours(cfg: dict, work: Path) -> dict:
    import clay_search

    t = time.perf_counter()
    store = clay_search.connect(work / "store")
    connect_s = time.perf_counter() - t
    store.search_vector(np.load(work / "queries.npy")[0], k=cfg["k"])
    return {
        "connect_s": round(connect_s, 2),
        "first_query_s": round(time.perf_counter() - t, 2),
        "files": ["store"],
    }


def run_row(cfg: dict, work: Path, row: str, cold: bool) -> dict:
    if cold:
        fn = {
            "exact": cold_exact,
            "faiss_ivfpq": lambda c, w: cold_faiss(c, w, "ivfpq.faiss"),
            "faiss_hnsw": lambda c, w: cold_faiss(c, w, "hnsw.faiss"),
            "lancedb": cold_lancedb,
            "ours": cold_ours,
        }[row]
    else:
        fn = globals()[f"row_{row}"]
    out = fn(cfg, work)
    out["peak_rss_bytes"] = int(peak_rss_mib() * 2**20)
    return out


# --------------------------------------------------------------------------------------------
# driver


def config(args: argparse.Namespace) -> dict:
    if args.quick:
        n, dim, clusters, queries, k = 4096, 64, 32, 20, 10
    else:
        n, dim, clusters, queries, k = args.n, args.dim, args.clusters, args.queries, args.k
    return {
        "n": n,
        "dim": dim,
        "clusters": clusters,
        "queries": queries,
        "k": k,
        "seed": args.seed,
        "chunk": min(50_000, n),
        "ours_kind": args.ours_kind,
        "train": min(n, 64 * 1024 if not args.quick else 2048),
        "ivf_nlist": 1024 if not args.quick else 32,
        "pq_m": 64 if not args.quick else 8,
        "nprobes": [16, 64] if not args.quick else [4, 16],
        "rerank": [4, 10],
        "hnsw_m": args.hnsw_m,
        "hnsw_efc": args.hnsw_efc,
        "efs": [64, 128, 256, 512],
        # ~sqrt(n) partitions; k-means on partitions x sample_rate vectors
        "lance_partitions": (args.lance_partitions or round(math.sqrt(n))) if not args.quick else 8,
        "lance_sub_vectors": args.lance_sub_vectors if not args.quick else 8,
        "lance_sample_rate": args.lance_sample_rate,
        "lance_iterations": args.lance_iterations,
        "lance_sweep": [[20, 10], [50, 20], [100, 50]] if not args.quick else [[4, 10], [8, 20]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clay_search_million"))
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--row-timeout", type=float, default=1800.0, help="seconds per row")
    ap.add_argument("--reuse", action="store_true", help="keep the data of an earlier run")
    ap.add_argument("--quick", action="store_true", help="4,096 x 64 (for tests)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results, rewritten after each row")
    ap.add_argument("--hnsw-m", type=int, default=16, help="HNSW links per node (M)")
    ap.add_argument("--hnsw-efc", type=int, default=40, help="HNSW efConstruction")
    ap.add_argument(
        "--lance-partitions", type=int, default=None, help="LanceDB IVF partitions (~sqrt(n))"
    )
    ap.add_argument("--lance-sub-vectors", type=int, default=64, help="LanceDB PQ sub-vectors")
    ap.add_argument(
        "--lance-sample-rate", type=int, default=64, help="LanceDB k-means sample per partition"
    )
    ap.add_argument(
        "--ours-kind",
        default="auto",
        help="index kind for the `ours` row (auto, ivf, ivf-sq8, hnsw); another kind than the "
        "store's index rebuilds it",
    )
    ap.add_argument("--lance-iterations", type=int, default=10, help="LanceDB k-means iterations")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = config(args)
    work = args.work
    if args.row:  # child
        print(json.dumps(run_row(cfg, work, args.row, args.cold)), flush=True)
        return

    env = dict(os.environ)
    threads = env.setdefault("OMP_NUM_THREADS", "2")
    env.setdefault("OPENBLAS_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("LANCE_CPU_THREADS", threads)
    res: dict = {"config": cfg, "machine": machine(), "rows": {}}

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")

    if not (args.reuse and (work / "truth.npy").exists()):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        progress(f"writing {cfg['n']:,} x {cfg['dim']} vectors to {work}")
        res["data"] = write_data(cfg, work)
        (work / "data.json").write_text(json.dumps(res["data"]))
    else:
        res["data"] = json.loads((work / "data.json").read_text())
    progress(json.dumps(res["data"]))
    save()
    base = [sys.executable, __file__, "--work", str(work), "--seed", str(args.seed)]
    base += (
        ["--quick"]
        if args.quick
        else [
            "--n",
            str(cfg["n"]),
            "--dim",
            str(cfg["dim"]),
            "--clusters",
            str(cfg["clusters"]),
            "--queries",
            str(cfg["queries"]),
            "--k",
            str(cfg["k"]),
        ]
    )
    base += ["--hnsw-m", str(args.hnsw_m), "--hnsw-efc", str(args.hnsw_efc)]
    base += ["--lance-sub-vectors", str(args.lance_sub_vectors)]
    base += ["--lance-sample-rate", str(args.lance_sample_rate)]
    base += ["--lance-iterations", str(args.lance_iterations)]
    base += ["--ours-kind", args.ours_kind]
    if args.lance_partitions:
        base += ["--lance-partitions", str(args.lance_partitions)]
    for row in [r for r in args.rows.split(",") if r]:
        if row not in ROWS:
            sys.exit(f"unknown row {row!r}; use {', '.join(ROWS)}")
        progress(f"row {row}")
        out = child([*base, "--row", row], env, args.row_timeout)
        if out.get("finished"):
            for p in run_row_files(row, work):
                drop_cache(p)
            out["cold"] = child([*base, "--row", row, "--cold"], env, args.row_timeout)
        res["rows"][row] = out
        progress(json.dumps(out))
        save()
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    save()
    print(json.dumps(res, indent=1))


def run_row_files(row: str, work: Path) -> list[Path]:
    """The files a row's cold open reads (dropped from the page cache before it)."""
    return {
        "exact": [work / "vectors.npy"],
        "faiss_ivfpq": [work / "ivfpq.faiss", work / "vectors.npy"],
        "faiss_hnsw": [work / "hnsw.faiss"],
        "lancedb": [work / "store" / "lancedb"],
        "ours": [work / "store"],
    }[row]


def child(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run one row in a subprocess; its JSON line, or what it got to when it ran out of time."""
    import tempfile

    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
            timed_out = True
        err.seek(0)
        stderr = err.read()
    sys.stderr.write(stderr)
    if timed_out:
        lines = [ln for ln in stderr.splitlines() if ln.startswith("[")]
        return {
            "finished": False,
            "timeout_s": timeout,
            "last_progress": lines[-1] if lines else None,
        }
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-3:]
        return {"finished": False, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    out = json.loads(stdout.strip().splitlines()[-1])
    out.update(finished=True, wall_s=round(time.perf_counter() - t, 1))
    return out


if __name__ == "__main__":
    main()
