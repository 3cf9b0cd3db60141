"""Patch tokens of stored chips, and where in a chip a query matches (the patch heatmap).

The one place that gets the encoder's patch tokens of chips already in a store:

```python
tokens = patch_tokens(store, ["a1", "b2"])              # [n, gh, gw, D] float32
heat = patch_similarity(patch_tokens(store, positives), tokens)   # [n, gh, gw] in [-1, 1]
png = heatmap_png(thumbnail_png, heat[0])               # the heat drawn over the thumbnail
```

- From the ``patch_embeddings`` column when the store has it (ingest ``--patch-embeddings``;
  rows without it are recomputed).
- Else recomputed from the chip's source window with the store's model, read, normalised and
  embedded by the ingest code (:mod:`clay_search.ingest.imagery`, no second reader): the
  source file (the ``source`` column), the window (``window``), the sensor and bands ingest
  chose for that source and the normaliser it used (both from the store's run manifest,
  ``runs/*.json``), the chip's date and centre (time and location encodings). The result
  equals the stored tokens of a store ingested with ``--patch-embeddings``. A source that
  moved or a store made by import (no manifest) gives a :class:`~clay_search.errors.QueryError`
  that says so.

Token grid order: row-major from the chip's top-left, the orientation of its thumbnail.
Reads never write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clay_search.errors import QueryError

COLUMN = "patch_embeddings"


def has_stored_patches(store: Any) -> bool:
    """True when the store's table has the ``patch_embeddings`` column."""
    return COLUMN in store.table.schema.names


def patch_tokens(store: Any, chip_ids: Sequence[str], *, embedder: Any = None) -> np.ndarray:
    """``[n, gh, gw, D]`` float32 patch tokens of ``chip_ids`` (ids or unique prefixes), in
    the order given: stored where the store has them, else recomputed (module docstring).

    ``embedder``: an :class:`~clay_search.model.Embedder` of the store's model (default: the
    store's own, ``connect(..., weights=)``). All chips must share one grid (chip size).
    """
    ids = [chip_ids] if isinstance(chip_ids, str) else list(chip_ids)
    if not ids:
        raise QueryError("patch_tokens needs at least one chip id")
    rows = store._rows_of(ids)
    emb = embedder if embedder is not None else store._get_embedder()
    if emb.model_id != store.model_id:
        raise QueryError(
            f"the embedder is model {emb.model_id!r} but the store holds {store.model_id!r}; "
            "pass the store's weights"
        )
    d = int(emb.token_dim)
    flat: list[np.ndarray | None] = [None] * len(ids)
    if has_stored_patches(store):
        col = store.take_column(COLUMN, rows)
        for i, v in enumerate(col.to_pylist()):
            if v is not None:
                flat[i] = np.asarray(v, np.float32).reshape(-1, d)
    missing = [i for i, v in enumerate(flat) if v is None]
    if missing:
        for i, toks in zip(missing, _recompute(store, rows[missing], emb), strict=True):
            flat[i] = toks
    sizes = {v.shape[0] for v in flat if v is not None}
    if len(sizes) != 1:
        raise QueryError(
            f"the chips have patch grids of different sizes ({sorted(sizes)} patches); ask for "
            "chips of one chip size"
        )
    (count,) = sizes
    side = int(round(count**0.5))
    if side * side != count:
        raise QueryError(f"{count} patch tokens per chip are not a square grid")
    return np.stack([v for v in flat if v is not None]).reshape(len(ids), side, side, d)


def patch_similarity(
    query: np.ndarray, tokens: np.ndarray, *, center: np.ndarray | None = None
) -> np.ndarray:
    """``[n, gh, gw]`` cosine similarity of each patch of ``tokens`` ``[n, gh, gw, D]`` to the
    query: the mean of the query's patch tokens (``[m, gh', gw', D]``, e.g. the positives') or
    a ``[D]`` vector.

    Tokens and query are centred first on ``center`` (``[D]``; default: the mean token of
    ``tokens`` and the query together), so what every patch shares (the model's common
    direction, the background of the page) does not light up every patch: the heat is how
    much a patch looks like what makes the query stand out.
    """
    t = np.asarray(tokens, np.float32)
    if t.ndim != 4:
        raise QueryError(f"tokens must be [n, gh, gw, D]; got shape {t.shape}")
    q = np.asarray(query, np.float32)
    q_tokens = q.reshape(-1, q.shape[-1])
    if q_tokens.shape[1] != t.shape[-1]:
        raise QueryError(f"query tokens are {q_tokens.shape[1]}-d but tokens are {t.shape[-1]}-d")
    if center is None:
        center = np.concatenate([q_tokens, t.reshape(-1, t.shape[-1])]).mean(axis=0)
    c = np.asarray(center, np.float32)
    qv = (q_tokens - c).mean(axis=0) if q.ndim > 1 else q - c
    qv /= np.linalg.norm(qv) + 1e-12
    tc = t - c
    tc /= np.linalg.norm(tc, axis=-1, keepdims=True) + 1e-12
    return (tc @ qv).astype(np.float32)


def heatmap_rgba(heat: np.ndarray, size: tuple[int, int], *, alpha: float = 0.6) -> np.ndarray:
    """``[h, w, 4]`` uint8 overlay of ``heat`` ``[gh, gw]`` at ``size`` (w, h): each cell its
    patch (nearest, so a patch stays a patch), the hottest patch red and opaque (``alpha``),
    patches at or below the chip's median clear."""
    from PIL import Image

    h = np.asarray(heat, np.float64)
    lo, hi = float(np.median(h)), float(h.max())
    v = np.clip((h - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(h)
    ramp = np.stack([np.ones_like(v), 0.85 * (1 - v), np.zeros_like(v)], -1)  # yellow -> red
    rgba = np.concatenate([ramp, (alpha * v)[..., None]], -1)
    img = Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST))


def heatmap_png(thumbnail: bytes, heat: np.ndarray, *, alpha: float = 0.6) -> bytes:
    """The chip's thumbnail (PNG bytes) with :func:`heatmap_rgba` drawn over it (PNG bytes)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(thumbnail)) as im:
        base = im.convert("RGBA")
    over = Image.fromarray(heatmap_rgba(heat, base.size, alpha=alpha), "RGBA")
    out = io.BytesIO()
    Image.alpha_composite(base, over).save(out, format="PNG")
    return out.getvalue()


# -- recomputing from the source ------------------------------------------------------------------
def _manifests(store: Any) -> list[dict]:
    """The store's ingest run manifests (imports excluded), newest first."""
    runs = store.path / "runs"
    out = []
    try:
        names = sorted((p.name for p in runs.iterdir() if p.name.endswith(".json")), reverse=True)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    for name in names:
        if name.startswith("import-"):
            continue
        try:
            out.append(json.loads((runs / name).read_text()))
        except (OSError, ValueError):
            continue
    return out


def _how_ingested(store: Any, source: str) -> tuple[dict, dict, dict]:
    """(run parameters, the source's report, its normaliser) from the run that wrote it."""
    for m in _manifests(store):
        report = next((s for s in m.get("sources", []) if s.get("source") == source), None)
        if report is None or report.get("status") == "failed":
            continue
        norms = (m.get("totals") or {}).get("normalisers") or {}
        norm = next((n for n in norms.values() if source in n.get("sources", [])), None)
        if norm is not None:
            return m.get("parameters") or {}, report, norm
    raise QueryError(
        f"no ingest run manifest of {store.path} describes source {source}, so its patch tokens "
        "cannot be recomputed (a store made by import?); re-ingest it with --patch-embeddings"
    )


def _recompute(store: Any, rows: np.ndarray, embedder: Any) -> list[np.ndarray]:
    """``[L, D]`` patch tokens of table rows ``rows``, read and embedded as ingest did."""
    from rasterio.windows import Window

    from clay_search.ingest.imagery import embed_chips
    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.plan import plan_source
    from clay_search.ingest.readers import ReaderPool
    from clay_search.ingest.sources import _raster_source
    from clay_search.model.normalise import Normaliser

    a = store.attrs.take(pa.array(np.asarray(rows, np.int64)))
    names = ("chip_id", "source", "window", "datetime", "label")
    cols = {c: a.column(c).to_pylist() for c in names}
    cx = ((np.asarray(a.column("minx"), float) + np.asarray(a.column("maxx"), float)) / 2).tolist()
    cy = ((np.asarray(a.column("miny"), float) + np.asarray(a.column("maxy"), float)) / 2).tolist()
    out: list[np.ndarray | None] = [None] * len(rows)
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(cols["source"]):
        by_source.setdefault(str(s), []).append(i)
    with ReaderPool(2) as readers:
        for source, members in by_source.items():
            path = Path(source)
            if not path.is_file():
                raise QueryError(
                    f"chip {cols['chip_id'][members[0]]}: its source {source} is not a file here "
                    "(moved, remote or a band set), so its patch tokens cannot be recomputed; "
                    "re-ingest with --patch-embeddings"
                )
            params, report, norm = _how_ingested(store, source)
            opts = IngestParams.from_options(
                sensor=report.get("sensor") or params.get("sensor"),
                bands=params.get("bands"),  # as given to the run (the report lists those used)
                chip_size=params.get("chip_size", 256),
                stats=params.get("stats", "auto"),
                nodata=params.get("nodata"),
            )
            labelled = report.get("kind") == "labelled"  # a whole-file chip of a class folder
            src = _raster_source(path, label=cols["label"][members[0]] if labelled else None)
            plan = plan_source(src, embedder.sensors, opts)
            plan.normaliser = Normaliser(
                np.asarray(norm["mean"], np.float64),
                np.asarray(norm["std"], np.float64),
                transform=norm.get("transform"),
                stats_source=norm.get("stats_source", "sensor"),
            )
            raws, valids = [], []
            with readers.use(src) as reader:
                for i in members:
                    w = json.loads(cols["window"][i])
                    win = Window(w["col_off"], w["row_off"], w["width"], w["height"])
                    if plan.whole:
                        raw, valid = reader.read(win, plan.bands.indices, opts.chip_size)
                    else:
                        ((raw, valid),) = reader.read_many([win], plan.bands.indices)
                    raws.append(raw)
                    valids.append(valid)
            lonlats = [
                (cx[i], cy[i]) if np.isfinite(cx[i]) and np.isfinite(cy[i]) else None
                for i in members
            ]
            batch = embed_chips(
                embedder,
                plan,
                np.stack(raws),
                np.stack(valids),
                datetimes=[cols["datetime"][i] for i in members],
                lonlats=lonlats if all(ll is not None for ll in lonlats) else None,
                patches=True,
            )
            for j, i in enumerate(members):
                out[i] = np.asarray(batch.patches[j], np.float32)
    return [v for v in out if v is not None]
