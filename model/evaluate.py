"""Embedding quality measures on feature arrays (no file I/O here).

- :func:`knn_precision_at_k`: held-out queries against a labelled gallery, cosine similarity
- :func:`linear_probe_accuracy`: multinomial logistic regression on frozen features
- :func:`multilabel_precision_at_k`: leave-one-out retrieval where a neighbour is relevant when
  it shares at least one label with the query
- features: :func:`band_stat_features` (the per-band statistics baseline) and
  :func:`encoder_features` (CLS, mean-pooled patches, and both concatenated)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clay_search.index.vectors import l2_normalise
from clay_search.model.clay import ClayEncoder
from clay_search.model.embedder import Embedder

PERCENTILES = (5, 25, 50, 75, 95)


# -- feature transforms --------------------------------------------------------------------------
def standardise(
    train: np.ndarray, *others: np.ndarray, eps: float = 1e-6
) -> tuple[np.ndarray, ...]:
    """z-score every array with the mean/std of ``train`` (per feature)."""
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True) + eps
    return tuple((a - mean) / std for a in (train, *others))


# -- metrics -------------------------------------------------------------------------------------
def knn_precision_at_k(
    query: np.ndarray,
    query_labels: Sequence,
    gallery: np.ndarray,
    gallery_labels: Sequence,
    *,
    k: int = 10,
) -> float:
    """Mean fraction of each query's ``k`` most cosine-similar gallery items with its label."""
    q = torch.from_numpy(l2_normalise(np.asarray(query, np.float32)))
    g = torch.from_numpy(l2_normalise(np.asarray(gallery, np.float32)))
    gl = np.asarray(gallery_labels)
    ql = np.asarray(query_labels)
    k = min(k, len(gl))
    hits = 0.0
    for start in range(0, len(q), 1024):
        sims = q[start : start + 1024] @ g.T
        top = sims.topk(k, dim=1).indices.numpy()
        hits += (gl[top] == ql[start : start + 1024, None]).mean(1).sum()
    return float(hits / len(q))


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: Sequence,
    test_x: np.ndarray,
    test_y: Sequence,
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
) -> float:
    """Accuracy of multinomial logistic regression (L-BFGS, L2 ``l2``) on z-scored features."""
    classes = sorted(set(train_y) | set(test_y))
    index = {c: i for i, c in enumerate(classes)}
    xtr, xte = standardise(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    xtr_t = torch.from_numpy(xtr).float()
    xte_t = torch.from_numpy(xte).float()
    ytr = torch.tensor([index[c] for c in train_y])
    yte = torch.tensor([index[c] for c in test_y])
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(xtr.shape[1], len(classes))
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.LBFGS(
        lin.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr_t), ytr) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xte_t).argmax(1) == yte).float().mean())


def multilabel_precision_at_k(
    features: np.ndarray, label_sets: Sequence[Sequence[str]], *, k: int = 5
) -> float:
    """Leave-one-out: mean fraction of the ``k`` nearest others sharing >= 1 label."""
    x = l2_normalise(features, dtype=np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    sets = [set(s) for s in label_sets]
    k = min(k, len(sets) - 1)
    scores = []
    for i in range(len(sets)):
        top = np.argsort(-sims[i], kind="stable")[:k]
        scores.append(np.mean([bool(sets[i] & sets[j]) for j in top]))
    return float(np.mean(scores))


# -- features ------------------------------------------------------------------------------------
def band_stat_features(pixels: np.ndarray, percentiles: Sequence[int] = PERCENTILES) -> np.ndarray:
    """Per-band mean, std and percentiles of normalised ``[N, C, H, W]`` -> ``[N, C*(2+P)]``."""
    x = np.asarray(pixels, np.float32).reshape(pixels.shape[0], pixels.shape[1], -1)
    parts = [x.mean(-1), x.std(-1), *list(np.percentile(x, percentiles, axis=-1))]
    return np.concatenate(parts, axis=1).astype(np.float32)


def encoder_features(
    encoder: ClayEncoder,
    pixels: np.ndarray,
    *,
    waves: Sequence[float],
    gsd: float,
    datetimes: Sequence | None = None,
    lonlats: Sequence | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """``{"cls", "mean", "mean+std", "cls+mean"}`` features of normalised ``[N, C, H, W]``.

    ``mean`` is the average of the patch embeddings, ``mean+std`` appends their standard
    deviation over the patches (``2 D``), ``cls+mean`` concatenates CLS and ``mean`` after
    L2-normalising each.
    """
    emb = Embedder(encoder, precision=precision)
    cls_parts, mean_parts, std_parts = [], [], []
    for s in range(0, len(pixels), batch_size):
        sl = slice(s, s + batch_size)
        out = emb.embed(
            pixels[sl],
            waves=list(waves),
            gsd=gsd,
            datetimes=None if datetimes is None else list(datetimes[sl]),
            lonlats=None if lonlats is None else list(lonlats[sl]),
            patches=True,
        )
        cls_parts.append(out.cls)
        mean_parts.append(out.patches.mean(1))
        std_parts.append(out.patches.std(1))
    cls = np.concatenate(cls_parts)
    mean = np.concatenate(mean_parts)
    return {
        "cls": cls,
        "mean": mean,
        "mean+std": np.concatenate([mean, np.concatenate(std_parts)], axis=1),
        "cls+mean": np.concatenate([l2_normalise(cls), l2_normalise(mean)], axis=1),
    }
