"""How a query vector is formed from examples, and exact scoring of candidate rows.

Query formation: every example vector is L2-normalised; the query is
``q = mean(positives) - alpha * mean(negatives)``, normalised again (``alpha`` defaults to
:data:`NEGATIVE_WEIGHT`). Without negatives it is the normalised mean of the positives. Scores are
cosine similarities ``<q, x>`` with every chip embedding ``x`` normalised, so they lie in [-1, 1].
"""

from __future__ import annotations

import numpy as np

from clay_search.errors import QueryError
from clay_search.index.vectors import l2_normalise

#: Weight of the negatives' mean subtracted from the positives' mean.
NEGATIVE_WEIGHT = 0.5


def query_vector(
    positives: np.ndarray, negatives: np.ndarray | None = None, *, alpha: float = NEGATIVE_WEIGHT
) -> np.ndarray:
    """The normalised query vector for ``positives`` ``[p, D]`` and ``negatives`` ``[n, D]``."""
    pos = np.atleast_2d(np.asarray(positives, dtype=np.float32))
    if pos.shape[0] == 0:
        raise QueryError("give at least one positive example (a chip id or a vector)")
    q = l2_normalise(pos).mean(axis=0)
    if negatives is not None and len(negatives):
        q = q - alpha * l2_normalise(np.atleast_2d(negatives)).mean(axis=0)
    norm = float(np.linalg.norm(q))
    if norm == 0 or not np.isfinite(norm):
        raise QueryError(
            "the positives and negatives cancel out (zero query vector); use fewer negatives "
            "or a smaller negative weight"
        )
    return (q / norm).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first (ties by position)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order].astype(np.int64)


def exact_search(
    vectors: np.ndarray,
    q: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by cosine among ``rows`` (all rows if ``None``) minus ``exclude``.

    Returns (row numbers, scores), best first.
    """
    if rows is not None and exclude is not None and len(exclude):
        rows = rows[~np.isin(rows, exclude)]
    if rows is None:
        scores = vectors @ q
        if exclude is not None and len(exclude):
            scores = scores.copy()
            scores[exclude] = -np.inf
            k = min(k, len(scores) - len(np.unique(exclude)))
        pos = top_k(scores, k)
        return pos, scores[pos]
    if len(rows) == 0:
        return rows.astype(np.int64), np.zeros(0, dtype=np.float32)
    scores = vectors[rows] @ q
    pos = top_k(scores, k)
    return rows[pos].astype(np.int64), scores[pos]
