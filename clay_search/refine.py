"""The "label, predict, relabel" loop: a logistic regression on labelled chips scores the rest.

Positives are class 1, negatives class 0. Without negatives, a seeded random sample of other
chips (``background`` times the number of positives) stands in for class 0: most chips are not
what the analyst is looking for. Features are the L2-normalised embeddings; scores are the
predicted probability of class 1.
"""

from __future__ import annotations

import numpy as np

from clay_search.errors import QueryError


def fit_scorer(pos: np.ndarray, neg: np.ndarray, *, c: float = 1.0, seed: int = 0):
    """A fitted ``LogisticRegression`` (balanced classes) on ``pos`` (1) and ``neg`` (0)."""
    from sklearn.linear_model import LogisticRegression

    if len(pos) == 0:
        raise QueryError("refine needs at least one positive example")
    if len(neg) == 0:
        raise QueryError("refine needs at least one negative example (or background chips)")
    x = np.vstack([pos, neg]).astype(np.float32)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000, random_state=seed)
    model.fit(x, y)
    return model


def score_rows(model, vectors: np.ndarray, block: int = 262144) -> np.ndarray:
    """Probability of class 1 for every row of ``vectors`` (blocked, float32)."""
    w = model.coef_[0].astype(np.float32)
    b = np.float32(model.intercept_[0])
    out = np.empty(len(vectors), dtype=np.float32)
    for s in range(0, len(vectors), block):
        z = vectors[s : s + block] @ w + b
        out[s : s + block] = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return out


def background_rows(n: int, exclude: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random row numbers in ``[0, n)`` outside ``exclude`` (seeded)."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(n), exclude) if n <= 2_000_000 else None
    if pool is not None:
        return rng.choice(pool, min(count, len(pool)), replace=False)
    picks = rng.choice(n, min(n, count + len(exclude)), replace=False)
    return picks[~np.isin(picks, exclude)][:count]
