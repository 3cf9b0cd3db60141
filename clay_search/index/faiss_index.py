"""FAISS indexes over normalised embeddings (inner product = cosine similarity).

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``: exact distances inside the
probed lists, ``nprobe`` tuned at build time for recall), ``ivf-sq8`` (``IndexIVFScalarQuantizer``
with 8-bit codes: a quarter of the memory, 1 byte a dimension; its candidates are re-ranked with
the exact vectors read from the table, :data:`RERANK` x k of them), ``hnsw`` (``IndexHNSWFlat``,
``efSearch`` tuned the same way). ``auto`` picks ``flat`` below :data:`EXACT_THRESHOLD` rows,
``ivf`` up to :data:`SQ8_THRESHOLD` and ``ivf-sq8`` above (10^7 x 1,024: 10 GB instead of 41).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import cast

import faiss
import numpy as np

from clay_search.errors import IndexStaleError, QueryError

EXACT_THRESHOLD = 50_000
#: above this many rows ``auto`` stores 8-bit codes (``ivf-sq8``) instead of float32 vectors
SQ8_THRESHOLD = 2_000_000
KINDS = ("auto", "flat", "ivf", "ivf-sq8", "hnsw")
#: the kinds with an inverted-file coarse quantiser (trained; ``nprobe`` tuned)
IVF_KINDS = ("ivf", "ivf-sq8")
#: the kinds whose stored vectors are approximate: their searches re-rank exactly
APPROXIMATE_KINDS = ("ivf-sq8",)
#: candidates re-ranked exactly per result wanted, for an approximate kind
RERANK = 4
TARGET_RECALL = 0.97
_TUNE_K = 50


def choose_kind(n: int, kind: str = "auto") -> str:
    """The index kind to use for ``n`` rows (``kind`` overrides unless it is ``auto``)."""
    if kind not in KINDS:
        raise QueryError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    if n < EXACT_THRESHOLD:
        return "flat"
    return "ivf" if n <= SQ8_THRESHOLD else "ivf-sq8"


def candidates(kind: str, k: int) -> int:
    """How many candidates an index of ``kind`` returns for ``k`` results (approximate kinds
    return :data:`RERANK` x ``k`` for an exact re-ranking)."""
    return k * RERANK if kind in APPROXIMATE_KINDS else k


def _new_index(kind: str, n: int, dim: int, seed: int) -> tuple[faiss.Index, dict]:
    """An empty index of ``kind`` sized for ``n`` rows (IVF: not trained yet)."""
    params: dict = {}
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind in IVF_KINDS:
        nlist = int(max(1, min(65536, 4 * math.sqrt(max(n, 1)))))
        nlist = min(nlist, max(1, n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf: faiss.IndexIVF
        if kind == "ivf":
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            # codes span the training residuals' range plus a margin on each side, so rows
            # appended later rarely fall outside it (those that do are clipped; the exact
            # re-ranking still scores them right)
            ivf.sq.rangestat_arg = 0.1
            params["rerank"] = RERANK
        ivf.cp.seed = seed
        index = ivf
        params["nlist"] = nlist
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        index = hnsw
    else:
        raise QueryError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS[1:])}")
    return index, params


def _train_rows(kind: str, n: int, params: dict, seed: int) -> np.ndarray | None:
    """The row numbers an IVF index trains on (all rows when few), in training order; None
    for kinds that need no training."""
    if kind not in IVF_KINDS:
        return None
    want = params["nlist"] * 64
    if n <= want:
        return np.arange(n)
    return np.random.default_rng(seed).choice(n, want, replace=False)


def build_index(vectors: np.ndarray, kind: str, *, seed: int = 0) -> tuple[faiss.Index, dict]:
    """Build an index of ``kind`` over normalised ``vectors``; returns it and its parameters."""
    n, dim = vectors.shape
    index, params = _new_index(kind, n, dim, seed)
    rows = _train_rows(kind, n, params, seed)
    if rows is not None:
        train = vectors if len(rows) == n else vectors[rows]
        index.train(np.ascontiguousarray(train))
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    params.update(tune(index, kind, vectors, seed=seed))
    return index, params


def build_index_streamed(
    blocks: Callable[[], Iterable[np.ndarray]], n: int, dim: int, kind: str, *, seed: int = 0
) -> tuple[faiss.Index, dict]:
    """:func:`build_index` over the rows ``blocks()`` yields (normalised ``[b, dim]`` float32
    blocks, in the same order each call), without holding them all: one pass gathers the
    training sample and the tuning queries, a second adds each block and keeps the queries'
    exact top-k. Memory: the index, the training sample and one block (at 10^6 x 1,024 the
    4 GB matrix and its read copies are not needed). Same rows, same seed: the same index,
    parameters and tuned recall as :func:`build_index` (``n`` is the row count the blocks give).
    """
    index, params = _new_index(kind, n, dim, seed)
    train_rows = _train_rows(kind, n, params, seed)
    q_rows, q_rng = _query_rows(n, seed) if kind != "flat" and n else (None, None)
    wanted = [r for r in (train_rows, q_rows) if r is not None]
    picked = _gather(blocks(), wanted, dim) if wanted else []
    if train_rows is not None:
        index.train(np.ascontiguousarray(picked.pop(0)))
    queries = _noisy_queries(picked[0], q_rng) if q_rng is not None else None
    k = min(_TUNE_K, n)
    top = TopK(queries, k) if queries is not None else None
    start = 0
    for block in blocks():
        if len(block):
            index.add(np.ascontiguousarray(block, dtype=np.float32))
            if top is not None:
                top.add(block, start)
            start += len(block)
    if start != n:
        raise IndexStaleError(f"the table changed while indexing ({n} rows, then {start}); retry")
    if top is not None and queries is not None:
        params.update(_tune_with(index, kind, queries, top.result()))
    return index, params


def tune_streamed(
    index: faiss.Index,
    kind: str,
    blocks: Callable[[], Iterable[np.ndarray]],
    n: int,
    *,
    seed: int = 0,
) -> dict:
    """:func:`tune` over the rows ``blocks()`` yields, two passes, never the whole matrix (the
    same queries and truth as :func:`tune` of those rows)."""
    if kind == "flat" or n == 0:
        return {}
    rows, rng = _query_rows(n, seed)
    queries = _noisy_queries(_gather(blocks(), [rows], index.d)[0], rng)
    top, start = TopK(queries, min(_TUNE_K, n)), 0
    for block in blocks():
        top.add(block, start)
        start += len(block)
    if start != n:
        raise IndexStaleError(f"the table changed while tuning ({n} rows, then {start}); retry")
    return _tune_with(index, kind, queries, top.result())


def stored_form(index: faiss.Index, kind: str, vectors: np.ndarray) -> np.ndarray:
    """What the index gives back for ``vectors`` once added: the vectors themselves for kinds
    storing float32, their encoded-then-decoded form for ``ivf-sq8`` (so a check compares the
    codes with what the table's vector encodes to, clipping included)."""
    if kind not in APPROXIMATE_KINDS or len(vectors) == 0:
        return vectors
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    return index.sa_decode(index.sa_encode(x))


def _gather(blocks: Iterable[np.ndarray], wanted: list[np.ndarray], dim: int) -> list[np.ndarray]:
    """The rows numbered in each array of ``wanted``, in that array's order, from one pass."""
    out = [np.zeros((len(w), dim), dtype=np.float32) for w in wanted]
    orders = [np.argsort(w, kind="stable") for w in wanted]
    sorted_rows = [w[o] for w, o in zip(wanted, orders, strict=True)]
    start = 0
    for block in blocks:
        stop = start + len(block)
        for dest, order, rows in zip(out, orders, sorted_rows, strict=True):
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                dest[order[lo:hi]] = block[rows[lo:hi] - start]
        start = stop
    return out


def apply_params(index: faiss.Index, kind: str, params: dict) -> None:
    """Set the search-time parameters recorded in ``index.json``."""
    if kind in IVF_KINDS and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw" and "ef_search" in params:
        # faiss.read_index returns the concrete class: an hnsw index is an IndexHNSWFlat
        cast("faiss.IndexHNSWFlat", index).hnsw.efSearch = int(params["ef_search"])


def _query_rows(n: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The rows :func:`tune` queries with, and the seeded generator that drew them (its noise
    comes next from the same stream)."""
    rng = np.random.default_rng(seed + 1)
    return rng.choice(n, min(100, n), replace=False), rng


def _noisy_queries(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tuning queries: table rows with small seeded noise, normalised."""
    q = rows + rng.normal(0, 0.02, rows.shape).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(q, dtype=np.float32)


def tune(index: faiss.Index, kind: str, vectors: np.ndarray, *, seed: int = 0) -> dict:
    """Smallest ``nprobe``/``efSearch`` reaching :data:`TARGET_RECALL` recall@50 on sample queries.

    The queries are table rows with small noise; truth is exact search over all rows.
    """
    if kind == "flat" or len(vectors) == 0:
        return {}
    n = len(vectors)
    rows, rng = _query_rows(n, seed)
    q = _noisy_queries(vectors[rows], rng)
    return _tune_with(index, kind, q, exact_topk(vectors, q, min(_TUNE_K, n)))


def _tune_with(index: faiss.Index, kind: str, q: np.ndarray, truth: np.ndarray) -> dict:
    """:func:`tune` once its queries and their exact top-k (``truth``) are known."""
    k = truth.shape[1]
    wide = candidates(kind, k)  # the true top-k among them = the recall after re-ranking
    if kind in IVF_KINDS:
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
        _, found = index.search(q, wide)
        got = recall(found, truth)
        if got >= TARGET_RECALL:
            chosen = s
            break
    value = max(chosen, k) if key == "ef_search" else chosen
    apply_params(index, kind, {key: value})
    return {key: value, "tuned_recall": round(float(got), 4)}


class TopK:
    """The exact top-``k`` row numbers (by inner product) of ``queries`` over blocks of rows
    seen one after another (:meth:`add`), holding ``[nq, k]`` at a time."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.best_i = np.zeros((len(queries), 0), dtype=np.int64)

    def add(self, block: np.ndarray, start: int) -> None:
        """Rows ``start .. start + len(block)``."""
        s = self.queries @ block.T
        kk = min(self.k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([self.best_s, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([self.best_i, part + start], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, : self.k]
        self.best_s = np.take_along_axis(cand_s, order, 1)
        self.best_i = np.take_along_axis(cand_i, order, 1)

    def result(self) -> np.ndarray:
        """``[nq, k]`` row numbers, best first."""
        return self.best_i


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> np.ndarray:
    """Exact top-``k`` row numbers by inner product (blocked to bound memory)."""
    top = TopK(queries, k)
    for start in range(0, len(vectors), block):
        top.add(vectors[start : start + block], start)
    return top.result()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each truth row's ids found (ids < 0 ignored)."""
    if truth.size == 0:
        return 1.0
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) / max(len(t), 1)
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))
