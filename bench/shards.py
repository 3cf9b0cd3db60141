"""Scale model: bytes per vector by index type at Clay's 1,024-d, and a sharded fan-out simulation.

Vectors: ``--n`` seeded, clustered 1,024-d unit vectors (``--clusters`` Gaussian clusters; the
memory figures do not depend on the data, the recall figures do, so they are labelled synthetic).

1. Memory: for FAISS flat (fp32), SQ fp16, SQ int8, IVF-PQ (m=64 and 128 bytes, 8 bits) and
   HNSW32, the serialised size per vector (what ``index-<gen>.faiss`` holds and what a loaded
   index costs in RAM), build time, and recall@50 / p50 latency on ``--queries`` queries (IVF-PQ
   also with exact re-ranking of 4 x k candidates from the fp32 vectors, as the table would give).
2. Fan-out: the same vectors cut into S shards (1, 2, 4, 8), one flat index per shard, queried in
   a thread pool (FAISS releases the GIL), top-k merged; checks the merged answer equals the single
   index's and reports p50/p95 per query.

    .venv/bin/python bench/shards.py --n 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np


def vectors(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in pairs]))


def timed_queries(index, q: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    out, times = [], []
    for v in q:
        t0 = time.perf_counter()
        _, i = index.search(v[None], k)
        times.append(time.perf_counter() - t0)
        out.append(i[0])
    return np.array(out), times


def memory_table(x: np.ndarray, q: np.ndarray, k: int, truth: np.ndarray) -> list[dict]:
    n, d = x.shape
    nlist = max(16, int(4 * np.sqrt(n)))
    specs = {
        "flat fp32": "Flat",
        "SQ fp16": "SQfp16",
        "SQ int8": "SQ8",
        f"IVF{nlist},PQ64": f"IVF{nlist},PQ64",
        f"IVF{nlist},PQ128": f"IVF{nlist},PQ128",
        "HNSW32 fp32": "HNSW32",
    }
    rows = []
    train = x[: min(n, 50_000)]
    for name, key in specs.items():
        index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
        if hasattr(index, "do_polysemous_training"):  # factory default; minutes, unused here
            index.do_polysemous_training = False
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(train)
        index.add(x)
        build = time.perf_counter() - t0
        if "IVF" in key:
            faiss.extract_index_ivf(index).nprobe = 32
        size = len(faiss.serialize_index(index))
        found, times = timed_queries(index, q, k)
        row = {
            "index": name,
            "bytes_per_vector": round(size / n, 1),
            "build_s": round(build, 2),
            "recall@50": round(recall(found, truth), 3),
            "p50_ms": round(1e3 * float(np.median(times)), 2),
        }
        if "PQ" in key:  # exact re-ranking of 4k candidates with the fp32 vectors
            rr, rtimes = [], []
            for v in q:
                t0 = time.perf_counter()
                _, cand = index.search(v[None], 4 * k)
                c = cand[0][cand[0] >= 0]
                s = x[c] @ v
                rr.append(c[np.argsort(-s)[:k]])
                rtimes.append(time.perf_counter() - t0)
            row["recall@50_rerank4k"] = round(recall(np.array(rr), truth), 3)
            row["p50_ms_rerank"] = round(1e3 * float(np.median(rtimes)), 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # partial results survive a timeout
        del index
    return rows


def fanout(
    x: np.ndarray, q: np.ndarray, k: int, truth: np.ndarray, shard_counts: list[int]
) -> list[dict]:
    n, d = x.shape
    rows = []
    for s in shard_counts:
        bounds = np.linspace(0, n, s + 1).astype(int)
        shards = []
        for a, b in itertools.pairwise(bounds):
            ix = faiss.IndexFlatIP(d)
            ix.add(x[a:b])
            shards.append((ix, a))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one core per shard, as one actor per shard would be
        pool = ThreadPoolExecutor(max_workers=s)

        def one(args, v):
            ix, offset = args
            dist, idx = ix.search(v[None], k)
            return dist[0], idx[0] + offset

        found, times = [], []
        for v in q:
            t0 = time.perf_counter()
            parts = list(pool.map(lambda a, v=v: one(a, v), shards))
            dist = np.concatenate([p[0] for p in parts])
            idx = np.concatenate([p[1] for p in parts])
            top = np.argsort(-dist, kind="stable")[:k]
            found.append(idx[top])
            times.append(time.perf_counter() - t0)
        pool.shutdown()
        faiss.omp_set_num_threads(threads)
        rows.append(
            {
                "shards": s,
                "p50_ms": round(1e3 * float(np.median(times)), 2),
                "p95_ms": round(1e3 * float(np.percentile(times, 95)), 2),
                "recall_vs_single": round(recall(np.array(found), truth), 4),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--clusters", type=int, default=256)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--shards", default="1,2,4,8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="memory,fanout", help="what to run: memory, fanout")
    args = ap.parse_args()
    x = vectors(args.n, args.dim, args.clusters, args.seed)
    q = x[np.random.default_rng(args.seed + 1).choice(args.n, args.queries, replace=False)]
    q = q + 0.05 * np.random.default_rng(args.seed + 2).standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    _, truth = exact.search(q, args.k)
    del exact
    parts = args.parts.split(",")
    out = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k}
    if "fanout" in parts:
        out["fanout"] = fanout(x, q, args.k, truth, [int(s) for s in args.shards.split(",")])
    if "memory" in parts:
        out["memory"] = memory_table(x, q, args.k, truth)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
