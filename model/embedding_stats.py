"""Per-feature statistics of chip vectors over the training data, shipped with the weights.

Cosine search on raw pooled embeddings is dominated by a few large, shared feature directions;
z-scoring each feature first (with statistics of a broad sample of chips) spreads the
similarity over all features. The statistics are computed once from the training sets, stored
in the weights' ``config.json`` (``embedding_stats``) and applied by the Embedder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clay_search.model.clay import ClayEncoder
from clay_search.model.embedder import Embedder


def embedding_statistics(
    encoder: ClayEncoder,
    sets: Sequence,
    *,
    pooling: str = "mean+std",
    max_per_set: int = 1500,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Mean and std of ``pooling`` vectors over up to ``max_per_set`` chips of each chip set.

    ``sets`` are :class:`clay_search.model.train.ChipSet` (normalised pixels, waves, gsd, times,
    lonlats). Returns ``{"mean": [...], "std": [...], "chips": n, "data": {...}}``.
    """
    emb = Embedder(encoder, precision="fp32", pooling=pooling, standardise=False)
    rng = np.random.default_rng(seed)
    parts, used = [], {}
    for s in sets:
        idx = np.sort(rng.permutation(len(s))[: min(len(s), max_per_set)])
        for start in range(0, len(idx), batch_size):
            sl = idx[start : start + batch_size]
            out = emb.embed(
                s.normalised(sl),
                waves=list(s.waves),
                gsd=s.gsd,
                datetimes=None if s.times is None else [s.times[i] for i in sl],
                lonlats=None if s.lonlats is None else [s.lonlats[i] for i in sl],
            )
            parts.append(out.embedding)
        used[s.name] = int(len(idx))
    feats = np.concatenate(parts).astype(np.float64)
    return {
        "mean": [float(v) for v in feats.mean(0)],
        "std": [float(v) for v in np.maximum(feats.std(0), 1e-6)],
        "chips": int(len(feats)),
        "data": used,
        "seed": seed,
    }


def write_embedding_stats(weights_dir: str | Path, pooling: str, stats: dict) -> None:
    """Record ``pooling`` as the weights' chip vector and its statistics in ``config.json``."""
    path = Path(weights_dir) / "config.json"
    cfg = json.loads(path.read_text())
    cfg["pooling"] = pooling
    cfg.setdefault("embedding_stats", {})[pooling] = stats
    path.write_text(json.dumps(cfg, indent=2) + "\n")
