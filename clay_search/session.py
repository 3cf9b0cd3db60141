"""The find-features session: labels, classifiers, negatives, spatial cross-validation, review,
session files and detection polygons. What the app's labelling loop runs, usable from Python.

```python
s = Session.start(store, classifier="lightgbm", negatives="kmeans")
s.label(["a1", "b2"], POSITIVE, how="click")
s.label_geojson(store, "known_mines.geojson")          # chips under the features: positives
rnd = s.run_round(store, k=50)                          # fit, score, cross-validate, record
rnd.results.to_pandas(); rnd.metrics["precision"]
s.review("c3", confirm=False)                           # a rejected detection: weighted negative
ids, scores = rnd.uncertain(20)                         # active learning: least sure, label next
s.save("session.parquet"); Session.load("session.parquet", store)
detection_polygons(store, rnd, threshold=0.8).to_file("detections.geojson")
```

- Labels are chip ids with a class (1 positive, 0 negative), a weight and how they were made
  (``click``, ``gallery``, ``polygon``, ``geojson``, ``review``, ``active``: picked by
  :meth:`RoundResult.uncertain`). A rejected detection is a
  negative with ``correction_weight`` (default 3, as GeoVibes weighs corrections up).
- Classifiers (:data:`CLASSIFIERS`): ``logreg`` (balanced logistic regression) and ``lightgbm``
  (gradient-boosted trees). Features: the store's L2-normalised chip embeddings.
- Background negatives (:data:`NEGATIVE_STRATEGIES`), ``negatives_per_positive`` per positive:
  ``random`` (seeded random chips), ``kmeans`` (one chip per k-means cluster of the store's
  embeddings: the store's diversity, leaving out the chips nearest the positives) and ``hard``
  (random background plus the chips the last round showed that the analyst left unlabelled).
- Every round is cross-validated by location: folds are k-means clusters of the labelled chips'
  centres, so a fold's chips are tested by a classifier trained away from them (neighbours
  leak through random folds). Precision/recall at 0.5 and average precision over the folds.
- A session file (GeoParquet or GeoJSON) holds one feature per label (footprint, chip id,
  class, weight, how, embedding) and the settings, store, model id, table version and rounds;
  loading it on a newer table version works and says what changed (chips gone from the table
  keep their saved embeddings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clay_search.errors import QueryError, StoreMismatchError

POSITIVE = 1
NEGATIVE = 0
CLASSIFIERS = ("logreg", "lightgbm")
NEGATIVE_STRATEGIES = ("random", "kmeans", "hard")
HOW = ("click", "gallery", "polygon", "geojson", "review", "active", "import")
SESSION_FORMAT = "clay-search-session"
#: Largest sample of the store's embeddings the k-means strategy clusters.
KMEANS_SAMPLE = 20_000


@dataclass
class Label:
    """One labelled chip."""

    chip_id: str
    label: int  # POSITIVE (1) or NEGATIVE (0)
    weight: float = 1.0
    how: str = "click"
    round: int = 0  # the round it was made in (0 = before the first)


@dataclass
class Round:
    """What one round did: the settings, the labels it trained on, its cross-validated metrics."""

    round: int
    classifier: str
    negatives: str
    positives: int
    negatives_labelled: int
    background: int
    metrics: dict[str, Any]
    results: int
    seconds: float
    table_version: int | None


@dataclass
class RoundResult:
    """A round's ranking (top ``k`` as :class:`~clay_search.results.Results`), every scored chip
    (``chip_ids``/``scores`` of the candidates, for the confidence slider and the export) and
    the metrics."""

    results: Any
    chip_ids: np.ndarray
    scores: np.ndarray
    metrics: dict[str, Any]
    record: Round

    def above(self, threshold: float) -> np.ndarray:
        """Chip ids scoring at least ``threshold``, best first."""
        keep = self.scores >= threshold
        return self.chip_ids[keep]

    def uncertain(
        self, n: int = 20, *, exclude: Iterable[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Active learning: the ``n`` scored chips the classifier is least sure about (score
        nearest 0.5, the decision boundary), least sure first, and their scores.

        ``exclude``: chips to leave out (e.g. labelled since the round). Labelling these next
        teaches the classifier most per label (uncertainty sampling).
        """
        if n < 0:
            raise QueryError("n must be >= 0")
        skip = set(exclude)
        keep = np.array([c not in skip for c in self.chip_ids], bool) if skip else slice(None)
        ids, scores = self.chip_ids[keep], self.scores[keep]
        margin = np.abs(scores.astype(np.float64) - 0.5)
        order = np.lexsort((np.arange(len(ids)), margin))[:n]  # ties: the ranking's order
        return ids[order], scores[order]


# -- classifiers ----------------------------------------------------------------------------------
def fit_classifier(
    kind: str, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *, seed: int = 0
) -> Any:
    """A fitted classifier of ``kind`` (:data:`CLASSIFIERS`) with ``predict_proba``.

    Classes are balanced (each class weighs as much in total); ``weight`` multiplies on top.
    """
    if kind not in CLASSIFIERS:
        raise QueryError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
    y = np.asarray(y, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise QueryError("a classifier needs positive and negative examples; label some of each")
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    for c in (0, 1):  # balance: each class sums to len(y) / 2
        m = y == c
        w[m] = w[m] * (len(y) / 2) / w[m].sum()
    x = np.asarray(x, dtype=np.float32)
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        model.fit(x, y, sample_weight=w)
        return model
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=150,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=2,
        min_child_weight=1e-3,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.5,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=1,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    model.fit(x, y, sample_weight=w)
    return model


def predict(model: Any, x: np.ndarray, block: int = 65536) -> np.ndarray:
    """Probability of the positive class for every row of ``x`` (blocked, float32)."""
    import warnings

    out = np.empty(len(x), dtype=np.float32)
    with warnings.catch_warnings():  # LightGBM names the columns it was fitted on; arrays have none
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        for s in range(0, len(x), block):
            out[s : s + block] = model.predict_proba(np.asarray(x[s : s + block], np.float32))[:, 1]
    return out


# -- spatial cross-validation ---------------------------------------------------------------------
def spatial_folds(lonlat: np.ndarray, folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold number per chip: k-means clusters of the chips' centres (lon, lat).

    Chips without a location (NaN) get folds of their own, assigned round-robin.
    """
    from sklearn.cluster import KMeans

    lonlat = np.asarray(lonlat, dtype=np.float64)
    out = np.zeros(len(lonlat), dtype=np.int64)
    ok = np.isfinite(lonlat).all(axis=1)
    n = int(ok.sum())
    k = max(1, min(folds, n))
    if n:
        pts = lonlat[ok] * [np.cos(np.radians(np.nanmean(lonlat[ok, 1]))), 1.0]
        if len(np.unique(pts, axis=0)) >= k:
            out[ok] = KMeans(k, n_init=4, random_state=seed).fit_predict(pts)
    out[~ok] = np.arange(int((~ok).sum())) % max(1, folds)
    return out


def spatial_cv(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    lonlat: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Precision, recall (at 0.5) and average precision of ``kind`` over spatial folds.

    Each fold is held out in turn; folds whose training part lacks a class are skipped. The
    result says ``folds`` used and ``note`` when the estimate could not be made.
    """
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=np.int64)
    groups = spatial_folds(lonlat, folds, seed=seed)
    pred = np.full(len(y), np.nan)
    used = 0
    for g in np.unique(groups):
        test = groups == g
        train = ~test
        if len(np.unique(y[train])) < 2 or not test.any():
            continue
        w = None if weight is None else np.asarray(weight)[train]
        model = fit_classifier(kind, x[train], y[train], w, seed=seed)
        pred[test] = predict(model, x[test])
        used += 1
    done = np.isfinite(pred)
    out: dict[str, Any] = {"folds": used, "tested": int(done.sum())}
    if used < 2 or len(np.unique(y[done])) < 2:
        out.update(
            precision=None,
            recall=None,
            average_precision=None,
            note="too few labelled places for a spatial estimate: label chips in more places",
        )
        return out
    yt, p = y[done], pred[done]
    hit = p >= 0.5
    tp = int((hit & (yt == 1)).sum())
    out["precision"] = round(tp / int(hit.sum()), 4) if hit.any() else 0.0
    out["recall"] = round(tp / int((yt == 1).sum()), 4)
    out["average_precision"] = round(float(average_precision_score(yt, p)), 4)
    return out


# -- negatives ------------------------------------------------------------------------------------
def random_negatives(n: int, exclude: np.ndarray, count: int, *, seed: int = 0) -> np.ndarray:
    """``count`` random row numbers in ``[0, n)`` outside ``exclude``."""
    from clay_search.refine import background_rows

    return np.sort(background_rows(n, exclude, count, seed=seed))


def _take(vectors: Any, rows: np.ndarray) -> np.ndarray:
    """Rows of a matrix, or of a Store (``vectors_of``: never its whole matrix)."""
    return vectors.vectors_of(rows) if hasattr(vectors, "vectors_of") else vectors[rows]


def kmeans_negatives(
    vectors: Any,
    exclude: np.ndarray,
    count: int,
    positives: np.ndarray,
    *,
    seed: int = 0,
) -> np.ndarray:
    """One row per k-means cluster (``count`` clusters) of the embeddings: the store's variety.

    ``vectors``: the ``[n, D]`` matrix, or a Store (its rows are then read as needed, scored
    block by block: a store of codes never builds its whole matrix).

    Clusters on a seeded sample of at most :data:`KMEANS_SAMPLE` rows; the chip nearest each
    centre is taken. Rows in ``exclude`` and the ``2 * count`` rows most like the positives'
    mean are left out (they may be unlabelled positives).
    """
    from sklearn.cluster import MiniBatchKMeans

    n = len(vectors)
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(n), exclude)
    if len(positives):  # at most half the pool: a small store keeps negatives to draw from
        centre = positives.mean(axis=0)
        sim = (
            vectors.scores_of(pool, lambda v: v @ centre)
            if hasattr(vectors, "scores_of")
            else vectors[pool] @ centre
        )
        near = np.argsort(-sim)[: min(2 * count, len(pool) // 2)]
        pool = np.delete(pool, near)
    if len(pool) <= count:
        return np.sort(pool)
    sample = np.sort(rng.choice(pool, min(len(pool), KMEANS_SAMPLE), replace=False))
    km = MiniBatchKMeans(count, random_state=seed, n_init=3, batch_size=2048)
    sampled = _take(vectors, sample)
    assign = km.fit_predict(sampled)
    picks = []
    for c in range(count):
        members = sample[assign == c]
        if len(members):
            d = ((sampled[assign == c] - km.cluster_centers_[c]) ** 2).sum(axis=1)
            picks.append(members[int(np.argmin(d))])
    return np.unique(np.array(picks, dtype=np.int64))


# -- the session ----------------------------------------------------------------------------------
@dataclass
class Session:
    """A labelling session on one store (see the module docstring)."""

    store: str = ""
    model_id: str | None = None
    table_version: int | None = None
    classifier: str = "logreg"
    negatives: str = "random"
    negatives_per_positive: int = 10
    correction_weight: float = 3.0
    seed: int = 0
    labels: dict[str, Label] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # chips the last round showed
    embeddings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    footprints: dict[str, bytes] = field(default_factory=dict, repr=False)  # WKB, EPSG:4326

    @classmethod
    def start(cls, store: Any, **settings: Any) -> Session:
        """A new session on ``store`` (a :class:`~clay_search.store.Store`)."""
        s = cls(store=str(store.path), model_id=store.model_id, table_version=store.version)
        for key, value in settings.items():
            if not hasattr(s, key) or key in {"labels", "rounds", "embeddings", "footprints"}:
                raise QueryError(f"unknown session setting {key!r}")
            setattr(s, key, value)
        s.check_settings()
        return s

    def check_settings(self) -> None:
        """QueryError for a setting that cannot work."""
        if self.classifier not in CLASSIFIERS:
            raise QueryError(
                f"unknown classifier {self.classifier!r}; choose one of {', '.join(CLASSIFIERS)}"
            )
        if self.negatives not in NEGATIVE_STRATEGIES:
            raise QueryError(
                f"unknown negatives strategy {self.negatives!r}; choose one of "
                f"{', '.join(NEGATIVE_STRATEGIES)}"
            )
        if self.negatives_per_positive < 0 or self.correction_weight <= 0:
            raise QueryError("negatives_per_positive must be >= 0 and correction_weight > 0")

    # labels
    def label(
        self, chip_ids: str | Iterable[str], value: int, *, how: str = "click", weight: float = 1.0
    ) -> int:
        """Label chips POSITIVE (1) or NEGATIVE (0); returns how many labels were set."""
        if value not in (POSITIVE, NEGATIVE):
            raise QueryError(f"a label is {POSITIVE} (positive) or {NEGATIVE} (negative)")
        if how not in HOW:
            raise QueryError(f"how must be one of {', '.join(HOW)}")
        ids = [chip_ids] if isinstance(chip_ids, str) else list(chip_ids)
        for c in ids:
            self.labels[str(c)] = Label(str(c), value, float(weight), how, len(self.rounds))
        return len(ids)

    def unlabel(self, chip_ids: str | Iterable[str]) -> None:
        """Forget the labels of these chips."""
        for c in [chip_ids] if isinstance(chip_ids, str) else chip_ids:
            self.labels.pop(str(c), None)

    def ids(self, value: int) -> list[str]:
        """Chip ids with label ``value``, in the order labelled."""
        return [c for c, lab in self.labels.items() if lab.label == value]

    def label_area(
        self, store: Any, geometry: Any, value: int = POSITIVE, *, how: str = "polygon"
    ) -> int:
        """Label every chip whose footprint intersects ``geometry`` (any form the filters take)."""
        return self.label(chips_under(store, [geometry]), value, how=how)

    def label_geojson(self, store: Any, source: str | Path | dict, value: int = POSITIVE) -> int:
        """Label the chips under the features of a GeoJSON file or document (points, polygons)."""
        return self.label(chips_under(store, geojson_geometries(source)), value, how="geojson")

    def review(self, chip_id: str, *, confirm: bool) -> None:
        """A detection checked by the analyst: confirmed -> positive; rejected -> a negative
        weighted ``correction_weight``."""
        if confirm:
            self.label(chip_id, POSITIVE, how="review")
        else:
            self.label(chip_id, NEGATIVE, how="review", weight=self.correction_weight)

    # rounds
    def _features(self, store: Any, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, row numbers or -1) of ``ids``: the store's, else the saved embedding."""
        rows = _rows(store, ids)
        vecs = np.zeros((len(ids), store.dim), np.float32)
        have = rows >= 0
        if have.any():
            vecs[have] = store.vectors_of(rows[have])
        for i in map(int, np.flatnonzero(~have)):
            e = self.embeddings.get(ids[i])
            if e is None:
                raise QueryError(
                    f"chip {ids[i]} is not in table version {store.version} and the session "
                    "holds no embedding for it; remove its label"
                )
            vecs[i] = e
        for i, (c, r) in enumerate(zip(ids, rows, strict=True)):  # what a saved session needs
            if r >= 0 and c not in self.embeddings:
                self.embeddings[c] = vecs[i].copy()
        return vecs, rows

    def training_set(self, store: Any) -> dict[str, Any]:
        """The labelled chips plus background negatives: ``x``, ``y``, ``weight``, ``lonlat``,
        ``rows`` (store rows, -1 for chips only in the session) and ``background`` count."""
        self.check_settings()
        pos, neg = self.ids(POSITIVE), self.ids(NEGATIVE)
        if not pos:
            raise QueryError("label at least one positive chip before training")
        ids = pos + neg
        x, rows = self._features(store, ids)
        y = np.array([1] * len(pos) + [0] * len(neg), np.int64)
        w = np.array([self.labels[c].weight for c in ids], np.float64)
        count = self.negatives_per_positive * len(pos)
        labelled = rows[rows >= 0]
        if self.negatives == "kmeans" and count:
            bg = kmeans_negatives(store, labelled, count, x[y == 1], seed=self.seed)
        elif count:
            bg = random_negatives(len(store), labelled, count, seed=self.seed + len(self.rounds))
            if self.negatives == "hard" and self.shown:
                left = _rows(store, [c for c in self.shown if c not in self.labels])
                bg = np.union1d(bg, left[left >= 0])
        else:
            bg = np.zeros(0, np.int64)
        all_rows = np.concatenate([rows, bg])
        x = np.vstack([x, store.vectors_of(bg)]) if len(bg) else x
        y = np.concatenate([y, np.zeros(len(bg), np.int64)])
        w = np.concatenate([w, np.ones(len(bg))])
        lonlat = _lonlat(store, all_rows, [*ids, *([None] * len(bg))], self.footprints)
        return {"x": x, "y": y, "weight": w, "lonlat": lonlat, "rows": all_rows,
                "background": len(bg)}  # fmt: skip

    def run_round(
        self, store: Any, *, k: int = 50, filters: Any = None, cv_folds: int = 5
    ) -> RoundResult:
        """Fit the classifier, score every chip matching ``filters`` (a Filters object or None),
        cross-validate by location (``cv_folds`` folds; 0 skips the estimate) and record the
        round. Labelled chips are not ranked."""
        t0 = time.perf_counter()
        ts = self.training_set(store)
        model = fit_classifier(self.classifier, ts["x"], ts["y"], ts["weight"], seed=self.seed)
        if cv_folds:
            metrics = spatial_cv(
                self.classifier,
                ts["x"],
                ts["y"],
                ts["lonlat"],
                ts["weight"],
                folds=cv_folds,
                seed=self.seed,
            )
        else:  # asked not to estimate (a benchmark's many rounds)
            metrics = {"folds": 0, "tested": 0, "precision": None, "recall": None,
                       "average_precision": None, "note": "not estimated (cv_folds=0)"}  # fmt: skip
        if filters is not None and not filters.empty:
            cand = store.engine.rows(filters)
        else:
            cand = np.arange(len(store))
        labelled = _rows(store, list(self.labels))
        cand = cand[~np.isin(cand, labelled[labelled >= 0])]
        scores = (
            store.scores_of(cand, lambda v: predict(model, v))
            if len(cand)
            else np.zeros(0, np.float32)
        )
        order = np.lexsort((cand, -scores))
        cand, scores = cand[order], scores[order]
        ids = np.asarray(store.attrs.column("chip_id").take(pa.array(cand)).to_pylist(), object)
        top = list(ids[:k])
        meta = {"query": "session", "round": len(self.rounds) + 1, "classifier": self.classifier}
        results = _ranked(store, top, scores[:k], meta)
        record = Round(
            round=len(self.rounds) + 1,
            classifier=self.classifier,
            negatives=self.negatives,
            positives=len(self.ids(POSITIVE)),
            negatives_labelled=len(self.ids(NEGATIVE)),
            background=ts["background"],
            metrics=metrics,
            results=len(top),
            seconds=round(time.perf_counter() - t0, 3),
            table_version=store.version,
        )
        self.rounds.append(record)
        self.shown = [str(c) for c in top]
        self.table_version = store.version
        return RoundResult(results, ids, scores, metrics, record)

    # files
    def save(self, path: str | Path, store: Any = None) -> Path:
        """Write the session as GeoParquet (``.parquet``) or GeoJSON (``.geojson``/``.json``).

        With ``store``, every label's footprint and embedding is read from it first.
        """
        import geopandas as gpd
        import shapely

        path = Path(path)
        fmt = _session_format(path)
        ids = list(self.labels)
        if store is not None and ids:
            self._features(store, ids)
            _footprints(store, ids, self.footprints)
        geoms = [
            shapely.from_wkb(self.footprints[c]) if c in self.footprints else None for c in ids
        ]
        gdf = gpd.GeoDataFrame(
            {
                "chip_id": ids,
                "label": [self.labels[c].label for c in ids],
                "weight": [self.labels[c].weight for c in ids],
                "how": [self.labels[c].how for c in ids],
                "round": [self.labels[c].round for c in ids],
                "embedding": [
                    self.embeddings[c].astype(float).round(7).tolist()
                    if c in self.embeddings
                    else None
                    for c in ids
                ],
            },
            geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
        )
        meta = self.meta()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            gdf.to_parquet(path, index=False)
            table = pq.read_table(path)  # keeps the geo metadata geopandas wrote
            md = dict(table.schema.metadata or {})
            md[SESSION_FORMAT.encode()] = json.dumps(meta).encode()
            pq.write_table(table.replace_schema_metadata(md), path)
        else:
            doc = json.loads(gdf.to_json(drop_id=True))
            doc[SESSION_FORMAT] = meta
            path.write_text(json.dumps(doc))
        return path

    def meta(self) -> dict[str, Any]:
        """The session's settings, store, model, table version and rounds (JSON-able)."""
        return {
            "format": SESSION_FORMAT,
            "version": 1,
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
            "store": self.store,
            "model_id": self.model_id,
            "table_version": self.table_version,
            "classifier": self.classifier,
            "negatives": self.negatives,
            "negatives_per_positive": self.negatives_per_positive,
            "correction_weight": self.correction_weight,
            "seed": self.seed,
            "shown": self.shown,
            "rounds": [asdict(r) for r in self.rounds],
        }

    @classmethod
    def load(cls, path: str | Path, store: Any = None) -> tuple[Session, list[str]]:
        """Read a session file; with ``store``, check it against the store and say what changed.

        Returns the session and notes (one sentence each). Another model's session is refused
        (:class:`~clay_search.errors.StoreMismatchError`).
        """
        import geopandas as gpd
        import pyarrow.parquet as pq

        path = Path(path)
        fmt = _session_format(path)
        try:
            if fmt == "parquet":
                md = pq.read_schema(path).metadata or {}
                meta = json.loads(md.get(SESSION_FORMAT.encode(), b"null"))
                gdf = gpd.read_parquet(path)
            else:
                doc = json.loads(path.read_text())
                meta = doc.get(SESSION_FORMAT)
                gdf = gpd.GeoDataFrame.from_features(doc.get("features", []), crs="EPSG:4326")
        except (OSError, ValueError, KeyError) as e:
            raise QueryError(f"{path} is not a readable session file ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != SESSION_FORMAT:
            raise QueryError(
                f"{path} is not a clay-search session (no {SESSION_FORMAT!r} metadata); "
                "save one with Session.save or the app's Save session"
            )
        s = cls(**{k: meta[k] for k in (
            "store", "model_id", "table_version", "classifier", "negatives",
            "negatives_per_positive", "correction_weight", "seed") if k in meta})  # fmt: skip
        s.shown = list(meta.get("shown") or [])
        s.rounds = [Round(**r) for r in meta.get("rounds") or []]
        import shapely

        for row in gdf.itertuples(index=False):
            c = str(row.chip_id)
            s.labels[c] = Label(c, int(row.label), float(row.weight), str(row.how), int(row.round))
            emb = row.embedding
            if emb is not None and len(emb):
                s.embeddings[c] = np.asarray(emb, np.float32)
            if row.geometry is not None and not row.geometry.is_empty:
                s.footprints[c] = shapely.to_wkb(row.geometry)
        notes = s.reconcile(store) if store is not None else []
        return s, notes

    def reconcile(self, store: Any) -> list[str]:
        """Check the session against ``store`` (model, version, chips) and say what changed."""
        if self.model_id and self.model_id != store.model_id:
            raise StoreMismatchError(
                f"the session's embeddings are from model {self.model_id!r} but the store holds "
                f"model {store.model_id!r}; open the store the session was made on"
            )
        notes = []
        ids = list(self.labels)
        rows = _rows(store, ids)
        gone = [c for c, r in zip(ids, rows, strict=True) if r < 0]
        if self.table_version is not None and self.table_version != store.version:
            notes.append(
                f"the session was saved on table version {self.table_version}; the store is "
                f"at version {store.version}"
            )
        if gone:
            usable = sum(c in self.embeddings for c in gone)
            notes.append(
                f"{len(gone)} labelled chip(s) are not in table version {store.version}; "
                f"{usable} of them keep their saved embeddings and still train the classifier"
            )
        self.shown = [c for c in self.shown if c not in set(gone)]
        self.table_version = store.version
        self.store = str(store.path)
        return notes


# -- areas, features and detections ---------------------------------------------------------------
def geojson_geometries(source: str | Path | dict) -> list[Any]:
    """The geometries of a GeoJSON file or document (FeatureCollection, Feature or geometry)."""
    import shapely
    from shapely.geometry import shape

    if isinstance(source, dict):
        doc = source
    else:
        try:
            text = (
                Path(source).read_text()
                if not str(source).lstrip().startswith("{")
                else str(source)
            )
            doc = json.loads(text)
        except (OSError, ValueError) as e:
            raise QueryError(f"could not read GeoJSON from {source}: {e}") from e
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    out = []
    for i, f in enumerate(feats or []):
        g = f.get("geometry") if f.get("type") == "Feature" else f
        if not g:
            continue
        try:
            geom = shape(g)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise QueryError(f"feature {i} has an unreadable geometry ({e})") from e
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        if not geom.is_empty:
            out.append(geom)
    if not out:
        raise QueryError("the GeoJSON holds no geometries (points or polygons in lon/lat)")
    return out


def chips_under(store: Any, geometries: Iterable[Any]) -> list[str]:
    """Chip ids whose footprint intersects any of ``geometries`` (each as filters take it)."""
    found: dict[str, None] = {}
    for g in geometries:
        for c in store.chips(geometry=g).chip_ids:
            found[c] = None
    return list(found)


def detection_polygons(store: Any, rnd: RoundResult, threshold: float) -> Any:
    """Chips of a round scoring at least ``threshold``, merged into polygons (touching or
    overlapping footprints dissolve into one), with chip count and score statistics.

    A GeoDataFrame (EPSG:4326) with ``geometry``, ``chips``, ``score_max``, ``score_mean``,
    ``score_min``, ``chip_ids`` (comma-separated), ``rank`` (by ``score_max``), ready for
    ``to_file`` / ``to_parquet``.
    """
    import geopandas as gpd
    import shapely

    keep = rnd.scores >= threshold
    ids, scores = list(rnd.chip_ids[keep]), rnd.scores[keep]
    cols = ["geometry", "chips", "score_max", "score_mean", "score_min", "chip_ids", "rank"]
    if not ids:
        return gpd.GeoDataFrame({c: [] for c in cols[1:]}, geometry=[], crs="EPSG:4326")
    fps: dict[str, bytes] = {}
    _footprints(store, ids, fps)
    have = [i for i, c in enumerate(ids) if c in fps]
    geoms = shapely.from_wkb([fps[ids[i]] for i in have])
    merged = shapely.get_parts(shapely.union_all(shapely.buffer(geoms, 0)))
    tree = shapely.STRtree(merged)
    chip_idx, poly_idx = tree.query(geoms, predicate="intersects")
    owner = np.full(len(geoms), -1)
    owner[chip_idx] = poly_idx  # each chip to (one of) the merged polygons it lies in
    rows = []
    for p, poly in enumerate(merged):
        members = np.flatnonzero(owner == p)
        if not len(members):
            continue
        s = scores[[have[m] for m in members]]
        rows.append(
            {
                "geometry": poly,
                "chips": len(members),
                "score_max": float(s.max()),
                "score_mean": float(s.mean()),
                "score_min": float(s.min()),
                "chip_ids": ",".join(ids[have[m]] for m in members),
            }
        )
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf = gdf.sort_values("score_max", ascending=False, kind="stable").reset_index(drop=True)
    gdf["rank"] = np.arange(1, len(gdf) + 1)
    return gdf


# -- helpers --------------------------------------------------------------------------------------
def _session_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".geoparquet"}:
        return "parquet"
    if suffix in {".geojson", ".json"}:
        return "geojson"
    raise QueryError(f"{path}: save a session as .parquet (GeoParquet) or .geojson")


def _rows(store: Any, ids: Sequence[str]) -> np.ndarray:
    """Row number of each chip id in the store's table version, -1 where absent."""
    import pandas as pd

    if not len(ids):
        return np.zeros(0, np.int64)
    index = pd.Index(store.attrs.column("chip_id").to_pylist())
    return np.asarray(index.get_indexer(list(ids)), np.int64)


def _lonlat(store: Any, rows: np.ndarray, ids: Sequence[str | None], saved: dict) -> np.ndarray:
    """Footprint centres of ``rows`` (store) or of the saved footprints (rows == -1)."""
    import shapely

    a = store.attrs
    out = np.full((len(rows), 2), np.nan)
    have = rows >= 0
    if have.any():
        take = pa.array(rows[have])
        for j, (lo, hi) in enumerate((("minx", "maxx"), ("miny", "maxy"))):
            lo_v = a.column(lo).take(take).to_numpy(zero_copy_only=False).astype(float)
            hi_v = a.column(hi).take(take).to_numpy(zero_copy_only=False).astype(float)
            out[have, j] = (lo_v + hi_v) / 2
    for i in map(int, np.flatnonzero(~have)):
        c = ids[i]
        if c is not None and c in saved:
            p = shapely.from_wkb(saved[c]).centroid
            out[i] = (p.x, p.y)
    return out


def _footprints(store: Any, ids: Sequence[str], into: dict[str, bytes]) -> None:
    """Footprint WKB of the chips of ``ids`` in the store (table geometry, else their bounds)."""
    import shapely

    rows = _rows(store, ids)
    a = store.attrs
    sel = np.flatnonzero(rows >= 0)
    if not len(sel):
        return
    take = pa.array(rows[sel])
    geo = a.column("geometry").take(take).to_pylist()
    b = [
        a.column(c).take(take).to_numpy(zero_copy_only=False)
        for c in ("minx", "miny", "maxx", "maxy")
    ]
    for j, i in enumerate(map(int, sel)):
        if geo[j]:
            into[ids[i]] = bytes(geo[j])
        elif all(np.isfinite(v[j]) for v in b):
            into[ids[i]] = shapely.to_wkb(shapely.box(*(float(v[j]) for v in b)))


def _ranked(store: Any, ids: list[str], scores: np.ndarray, meta: dict) -> Any:
    """``store.get(ids)`` with the round's scores and ranks."""
    from clay_search.results import Results

    base = store.get(ids).to_arrow()
    t = base.set_column(
        base.schema.get_field_index("score"), "score", pa.array(scores, pa.float32())
    )
    t = t.set_column(
        t.schema.get_field_index("rank"), "rank", pa.array(np.arange(1, len(ids) + 1), pa.int32())
    )
    return Results(t, version=store.version, meta=meta)
