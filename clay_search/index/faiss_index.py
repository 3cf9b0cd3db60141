"""FAISS indexes over normalised embeddings (inner product = cosine similarity).

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``: exact distances inside the
probed lists, ``nprobe`` tuned at build time for recall), ``hnsw`` (``IndexHNSWFlat``, ``efSearch``
tuned the same way). ``auto`` picks ``flat`` below :data:`EXACT_THRESHOLD` rows and ``ivf`` above.
"""

from __future__ import annotations

import math
from typing import cast

import faiss
import numpy as np

from clay_search.errors import QueryError

EXACT_THRESHOLD = 50_000
KINDS = ("auto", "flat", "ivf", "hnsw")
TARGET_RECALL = 0.97
_TUNE_K = 50


def choose_kind(n: int, kind: str = "auto") -> str:
    """The index kind to use for ``n`` rows (``kind`` overrides unless it is ``auto``)."""
    if kind not in KINDS:
        raise QueryError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if n < EXACT_THRESHOLD else "ivf"


def build_index(vectors: np.ndarray, kind: str, *, seed: int = 0) -> tuple[faiss.Index, dict]:
    """Build an index of ``kind`` over normalised ``vectors``; returns it and its parameters."""
    n, dim = vectors.shape
    params: dict = {}
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = int(max(1, min(65536, 4 * math.sqrt(max(n, 1)))))
        nlist = min(nlist, max(1, n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        index = ivf
        rng = np.random.default_rng(seed)
        train = vectors if n <= nlist * 64 else vectors[rng.choice(n, nlist * 64, replace=False)]
        index.train(np.ascontiguousarray(train))
        params["nlist"] = nlist
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        index = hnsw
    else:
        raise QueryError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS[1:])}")
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    params.update(tune(index, kind, vectors, seed=seed))
    return index, params


def apply_params(index: faiss.Index, kind: str, params: dict) -> None:
    """Set the search-time parameters recorded in ``index.json``."""
    if kind == "ivf" and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw" and "ef_search" in params:
        # faiss.read_index returns the concrete class: an hnsw index is an IndexHNSWFlat
        cast("faiss.IndexHNSWFlat", index).hnsw.efSearch = int(params["ef_search"])


def tune(index: faiss.Index, kind: str, vectors: np.ndarray, *, seed: int = 0) -> dict:
    """Smallest ``nprobe``/``efSearch`` reaching :data:`TARGET_RECALL` recall@50 on sample queries.

    The queries are table rows with small noise; truth is exact search over all rows.
    """
    if kind == "flat" or len(vectors) == 0:
        return {}
    n = len(vectors)
    rng = np.random.default_rng(seed + 1)
    nq = min(100, n)
    q = vectors[rng.choice(n, nq, replace=False)]
    q = q + rng.normal(0, 0.02, q.shape).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q = np.ascontiguousarray(q, dtype=np.float32)
    k = min(_TUNE_K, n)
    truth = exact_topk(vectors, q, k)
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        steps = [
            s
            for s in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)
            if s <= ivf.nlist
        ] or [ivf.nlist]
        key = "nprobe"
    else:
        steps = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]
        key = "ef_search"
    chosen, got = steps[-1], 0.0
    for s in steps:
        apply_params(index, kind, {key: max(s, k) if key == "ef_search" else s})
        _, found = index.search(q, k)
        got = recall(found, truth)
        if got >= TARGET_RECALL:
            chosen = s
            break
    value = max(chosen, k) if key == "ef_search" else chosen
    apply_params(index, kind, {key: value})
    return {key: value, "tuned_recall": round(float(got), 4)}


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> np.ndarray:
    """Exact top-``k`` row numbers by inner product (blocked to bound memory)."""
    nq = len(queries)
    best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, 0), dtype=np.int64)
    for start in range(0, len(vectors), block):
        s = queries @ vectors[start : start + block].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each truth row's ids found (ids < 0 ignored)."""
    if truth.size == 0:
        return 1.0
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) / max(len(t), 1)
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))
