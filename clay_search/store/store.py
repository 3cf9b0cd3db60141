"""The query side of a store: :func:`connect` and :class:`Store`.

A :class:`Store` is pinned to one table version (the latest at connect time unless ``version`` is
given), so every answer it gives is reproducible and says which version it came from. Per version
it holds in memory the chips' attributes (no embeddings, no thumbnails), the filter arrays and,
when needed, the normalised embedding matrix.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from clay_search.errors import (
    AmbiguousChipError,
    IndexStaleError,
    QueryError,
    StoreMismatchError,
    UnknownChipError,
)
from clay_search.filters import FilterEngine, FilterKeywords, Filters
from clay_search.index.faiss_index import APPROXIMATE_KINDS, candidates
from clay_search.index.sync import LoadedIndex, covers_version, load_index, read_index_meta
from clay_search.index.vectors import embedding_matrix, l2_normalise, read_ids_and_vectors
from clay_search.location import RemotePath
from clay_search.results import Results
from clay_search.search import NEGATIVE_WEIGHT, exact_search, query_vector, top_k
from clay_search.store.layout import StoreInfo, open_chips_table, read_store_info

if TYPE_CHECKING:  # pragma: no cover
    from typing import Unpack

    from clay_search.index import IndexReport
    from clay_search.query import Query

#: Columns not held in memory (the embeddings; thumbnails are read for the results only).
HEAVY_COLUMNS = ("embedding", "patch_embeddings", "thumbnail")
#: Columns ``Store.chips(sort=...)`` can order by.
SORT_COLUMNS = ("recon_error",)
INDEX_MODES = ("auto", "exact")
#: Shortest chip-id prefix accepted in place of a full id.
MIN_PREFIX = 4

Example = str | Sequence[float] | np.ndarray


#: rows scored at a time when the exact vectors come from the table (ivf-sq8)
_SCORE_BLOCK = 65_536


def connect(
    uri: str | Path,
    *,
    version: int | None = None,
    weights: str | Path | None = None,
    index: str = "auto",
) -> Store:
    """Open the store at ``uri`` for querying (read-only: nothing is written).

    ``version`` pins a table version (default: the latest). ``weights`` are the model weights used
    to embed query images (default: the bundled weights). ``index="exact"`` always scores every
    chip with numpy; ``"auto"`` uses the FAISS index when it matches the table version (commits
    that only added columns still match). An index behind the table is not touched: exact search
    answers and ``Results.meta["index_note"]`` says so; ``store.sync()`` (or ``clay-search index
    --sync``) brings it up to date. ``Results.meta["index"]`` says what answered.
    ``uri`` may be an object-store prefix (``s3://bucket/prefix``, ``gs://``, ``az://``; settings
    from the environment, see :mod:`clay_search.location`): the table, ``store.json`` and the
    index are read from there, with the same features as a local folder.
    """
    if index not in INDEX_MODES:
        raise QueryError(f"index must be one of {INDEX_MODES}, got {index!r}")
    info = read_store_info(uri)
    table = open_chips_table(info, create=False)
    return Store(info, table, version=version, weights=weights, index=index)


def quality_summary(values: np.ndarray | None) -> dict | None:
    """The quality scores of a version: ``{"scored", "unscored", "min", "p50", "p95", "max"}``
    (None when the table has no ``recon_error`` column)."""
    if values is None:
        return None
    ok = values[~np.isnan(values)]
    out: dict = {"scored": int(len(ok)), "unscored": int(len(values) - len(ok))}
    if len(ok):
        q = np.percentile(ok, [0, 50, 95, 100])
        out.update(min=float(q[0]), p50=float(q[1]), p95=float(q[2]), max=float(q[3]))
    return out


class Store:
    """A chips table pinned to one version, with its index, filters and query methods.

    Every query method takes ``filters=Filters(...)`` and/or the same keywords (``bbox``,
    ``geometry``, ``start``, ``end``, ``sensor``, ``label``, ``undated``, ``pred_label``,
    ``min_pred_score``; see :class:`~clay_search.filters.Filters`), validated by it. Chip ids may
    be given as unique prefixes (at least :data:`MIN_PREFIX` characters). Queries never write;
    :meth:`sync` is the one method that does (it updates the index).
    """

    def __init__(
        self,
        info: StoreInfo,
        table: Any,
        *,
        version: int | None = None,
        weights: str | Path | None = None,
        index: str = "auto",
    ) -> None:
        self.info = info
        self.latest_version = int(table.version)
        if version is not None:
            known = [int(v["version"]) for v in table.list_versions()]
            if int(version) not in known:
                shown = known if len(known) <= 6 else [*known[:3], "...", *known[-3:]]
                raise QueryError(
                    f"table version {version} does not exist in {info.path}; known: {shown}"
                )
            table.checkout(int(version))
        self.table = table
        self.version = int(table.version)
        self.weights = weights
        self._index_mode = index
        self._lock = threading.RLock()
        self._attrs: pa.Table | None = None
        self._id_rows: dict[str, int] | None = None
        self._sorted_ids: tuple[np.ndarray, np.ndarray] | None = None
        self._engine: FilterEngine | None = None
        self._vectors: np.ndarray | None = None
        self._index: LoadedIndex | None = None
        self._index_note: str | None = None
        self._embedder = None

    # -- facts -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path | RemotePath:
        """The store folder (or object-store prefix)."""
        return self.info.path

    @property
    def model_id(self) -> str:
        """The model id every embedding in this store comes from."""
        return self.info.model_id

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.info.dim

    def __len__(self) -> int:
        return self.attrs.num_rows

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, version={self.version}, chips={len(self)})"

    @property
    def attrs(self) -> pa.Table:
        """Every chip's columns except embeddings and thumbnails, in table order."""
        with self._lock:
            if self._attrs is None:
                cols = [f.name for f in self.table.schema if f.name not in HEAVY_COLUMNS]
                data = self.table.search().select(cols).limit(None).to_arrow()
                self._attrs = data.combine_chunks()
            return self._attrs

    def overview(self) -> dict:
        """Counts, extent, time range, sensors, labels and index state of this version."""
        a = self.attrs
        eng = self.engine
        ok = ~np.isnan(eng.minx)
        times = eng.time_us[eng.has_time]
        index_meta, index_note = self._index_state()

        def counts(name: str) -> dict:
            """Chips per value; chips without one are not a value (see ``unlabelled``)."""
            vc = a.column(name).value_counts().to_pylist()
            return {str(d["values"]): int(d["counts"]) for d in vc if d["values"] is not None}

        return {
            "path": str(self.path),
            "version": self.version,
            "latest_version": self.latest_version,
            "model_id": self.model_id,
            "dim": self.dim,
            "chips": a.num_rows,
            "georeferenced": int(ok.sum()),
            "bbox": [
                float(eng.minx[ok].min()),
                float(eng.miny[ok].min()),
                float(eng.maxx[ok].max()),
                float(eng.maxy[ok].max()),
            ]
            if ok.any()
            else None,
            "time_range": [
                str(np.datetime64(int(times.min()), "us")),
                str(np.datetime64(int(times.max()), "us")),
            ]
            if len(times)
            else None,
            "sensors": counts("sensor"),
            "labels": counts("label"),
            "unlabelled": int(a.column("label").null_count),
            "undated": int((~eng.has_time).sum()),
            "quality": quality_summary(eng.recon_error),
            "index": index_meta,
            "index_note": index_note,
        }

    def _index_state(self) -> tuple[dict | None, str | None]:
        """(index meta, note) for :meth:`overview`, without reading the index's vectors when it
        is not loaded yet: ``index.json`` and the table history say whether it matches (at
        1,000,000 x 1,024 the FAISS file is 4 GB; the first query reads it)."""
        with self._lock:
            if self._index is not None or self._index_note is not None:
                return (self._index.meta if self._index is not None else None), self._index_note
        if self._index_mode != "exact" and len(self):
            try:
                meta = read_index_meta(self.info.index_path)
                if (
                    meta is not None
                    and int(meta.get("count", -1)) == len(self)
                    and covers_version(self.table, meta, self.version)
                ):
                    return meta, None
            except (IndexStaleError, OSError, RuntimeError, ValueError, KeyError, TypeError):
                pass  # a damaged index.json: the full check below says what is wrong
        self._ensure_index()  # no match: say why (and warn) exactly as a query would
        return (self._index.meta if self._index is not None else None), self._index_note

    # -- per-version state -----------------------------------------------------------------------
    @property
    def engine(self) -> FilterEngine:
        """Filter arrays of this version (built on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = FilterEngine(self.attrs)
            return self._engine

    def _rows_of(self, chip_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of chip ids (full ids or unique prefixes), in the order given."""
        with self._lock:
            if self._id_rows is None:
                ids = self.attrs.column("chip_id").to_pylist()
                self._id_rows = {c: i for i, c in enumerate(ids)}
        rows, unknown = [], []
        for c in chip_ids:
            row = self._id_rows.get(c)
            if row is None:
                row = self._prefix_row(c)
            if row is None:
                unknown.append(c)
            else:
                rows.append(row)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownChipError(
                f"chip id {shown}{more} not in store {self.path} (version {self.version}); "
                f"list ids with store.chips() or `clay-search chips --store {self.path}`"
            )
        return np.array(rows, dtype=np.int64)

    def _prefix_row(self, prefix: str) -> int | None:
        """The row of the one chip whose id starts with ``prefix`` (None if none does)."""
        if not isinstance(prefix, str) or len(prefix) < MIN_PREFIX:
            return None
        with self._lock:
            if self._sorted_ids is None:
                ids = np.array(self.attrs.column("chip_id").to_pylist(), dtype=object)
                order = np.argsort(ids, kind="stable")
                self._sorted_ids = (ids[order].astype(str), order)
        ids, order = self._sorted_ids
        lo = int(np.searchsorted(ids, prefix, side="left"))
        hi = lo
        while hi < len(ids) and ids[hi].startswith(prefix):
            hi += 1
            if hi - lo > 10:
                break
        if hi == lo:
            return None
        if hi - lo > 1:
            shown = ", ".join(ids[lo : min(hi, lo + 10)])
            more = " and more" if hi - lo > 10 else ""
            raise AmbiguousChipError(
                f"chip id prefix {prefix!r} matches {'over 10' if more else hi - lo} chips "
                f"({shown}{more}); give more characters"
            )
        return int(order[lo])

    def resolve_ids(self, chip_ids: str | Sequence[str]) -> list[str]:
        """Full chip ids for ids or unique id prefixes (:class:`UnknownChipError` if absent,
        :class:`AmbiguousChipError` listing the candidates if a prefix matches several)."""
        ids = [chip_ids] if isinstance(chip_ids, str) else list(chip_ids)
        rows = self._rows_of(ids)
        return self.attrs.column("chip_id").take(pa.array(rows, pa.int64())).to_pylist()

    @property
    def vectors(self) -> np.ndarray:
        """``[n, D]`` normalised embeddings in table order (read on first use)."""
        with self._lock:
            if self._vectors is None:
                idx = self._ensure_index()
                if idx is not None and idx.kind == "flat":
                    self._vectors = _flat_index_vectors(idx, self.dim)
                elif idx is not None and idx.kind not in APPROXIMATE_KINDS:
                    # ivf / hnsw hold the same normalised vectors
                    self._vectors = _index_vectors(idx, self.dim)
                else:  # no index, or one holding codes: the exact vectors are the table's
                    ids, vecs = read_ids_and_vectors(self.table, self.dim)
                    if not ids.equals(self.attrs.column("chip_id").combine_chunks()):
                        raise IndexStaleError("the table changed while reading; reconnect")
                    self._vectors = vecs
            return self._vectors

    def vectors_of(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``[len(rows), D]`` normalised embeddings of table rows, without reading every
        embedding: from the matrix if it is loaded, else from the index (FAISS holds them),
        else, for an index of 8-bit codes, from the table's rows (exact), else from the matrix
        (read now)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._vectors is None:
            idx = self._ensure_index()
            if idx is not None and idx.kind in APPROXIMATE_KINDS:
                return l2_normalise(embedding_matrix(self.take_column("embedding", rows), self.dim))
            if idx is not None and idx.kind != "flat":
                return idx.index.reconstruct_batch(rows).astype(np.float32, copy=False)
        return self.vectors[rows]

    def _filter_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings of the rows a filter kept: :meth:`vectors_of` (a filtered search on
        a large store never builds the whole matrix), unless they are most of the store, where
        the matrix, read once and kept, serves the next queries too."""
        if self._vectors is None and 2 * len(rows) > len(self):
            return self.vectors[rows]
        return self.vectors_of(rows)

    def scores_of(self, rows: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``score(vectors)`` of the embeddings of ``rows`` (a filter's, or every row), in
        ``rows``' order (``score`` maps ``[b, D]`` to ``[b]``): of :meth:`_filter_vectors` at
        once, or, with an index of 8-bit codes (whose exact vectors are the table's), block by
        block from the table: the whole matrix of a store too large for it (10^7 x 1,024 =
        41 GB) is never held."""
        idx = self._ensure_index() if self._vectors is None else None
        if idx is None or idx.kind not in APPROXIMATE_KINDS:
            return score(self._filter_vectors(rows))
        out = np.empty(len(rows), np.float32)
        for start in range(0, len(rows), _SCORE_BLOCK):
            part = rows[start : start + _SCORE_BLOCK]
            out[start : start + len(part)] = score(self.vectors_of(part))
        return out

    def load(self) -> Store:
        """Read now what queries would read on first use: the FAISS index, or (without a
        matching index) the embedding matrix. Returns the store (a server warms up with it)."""
        if self._ensure_index() is None and len(self):
            _ = self.vectors
        return self

    def _ensure_index(self) -> LoadedIndex | None:
        """The FAISS index if it matches this version, else None (and a note why). Read-only."""
        with self._lock:
            if self._index is not None or self._index_note is not None:
                return self._index
            if self._index_mode == "exact":
                self._index_note = "exact search (index='exact')"
                return None
            try:
                idx = load_index(self.info.index_path)
                matches = covers_version(self.table, idx.meta, self.version)
            except (IndexStaleError, OSError, RuntimeError):
                idx, matches = None, False
            if (
                idx is not None
                and matches
                and idx.ids.equals(self.attrs.column("chip_id").combine_chunks())
            ):
                if idx.kind == "ivf":  # row -> list map: reconstruct vectors without a scan
                    _faiss_ivf(idx.index).make_direct_map()
                self._index = idx
                return idx
            if len(self) == 0:
                self._index_note = "the store holds no chips yet"
                return None
            self._index_note = (
                f"the index does not match table version {self.version}; exact search used "
                f"(run `clay-search index --sync --store {self.path}` or store.sync())"
            )
            warnings.warn(f"clay-search: {self._index_note}", stacklevel=3)
            return None

    def sync(self, *, kind: str = "auto", rebuild: bool = False) -> IndexReport:
        """Bring the store's index up to the latest table version (the one query-side method
        that writes) and use it from now on if this store is at that version."""
        from clay_search.store.indexing import sync_index

        report = sync_index(self.path, kind=kind, rebuild=rebuild)
        with self._lock:
            self._index = None
            self._index_note = None
            self._vectors = None
        return report

    # -- building results ------------------------------------------------------------------------
    def _results(self, rows: np.ndarray, scores: np.ndarray | None, meta: dict) -> Results:
        rows = np.asarray(rows, dtype=np.int64)
        t = self.attrs.take(pa.array(rows))
        score = (
            pa.array(scores, pa.float32())
            if scores is not None
            else pa.nulls(len(rows), pa.float32())
        )
        t = t.append_column("score", score)
        t = t.append_column("rank", pa.array(np.arange(1, len(rows) + 1), pa.int32()))
        has_thumb = "thumbnail" in self.table.schema.names

        def fetch(res: pa.Table) -> pa.Table:
            if not has_thumb or "thumbnail" in res.column_names:
                return res
            if res.num_rows == len(rows):
                these = rows
            else:  # a slice of the results (Results.head)
                these = self._rows_of(res.column("chip_id").to_pylist())
            return res.append_column("thumbnail", self.take_column("thumbnail", these))

        meta = {"index": self._index.kind if self._index is not None else "exact", **meta}
        if self._index_note:
            meta["index_note"] = self._index_note
        return Results(t, version=self.version, meta=meta, fetch=fetch)

    def take_column(self, name: str, rows: np.ndarray) -> pa.Array:
        """Column ``name`` of table rows ``rows``, in the order of ``rows`` (repeats allowed).

        LanceDB's ``take_offsets`` answers in table order whatever order it is asked in, so the
        rows are read sorted and put back in the order asked; the chip ids read alongside are
        checked against this version's, so a value can never land on another chip's row.
        """
        rows = np.asarray(rows, dtype=np.int64)
        field = self.table.schema.field(name)
        if len(rows) == 0:
            return pa.array([], field.type)
        uniq, back = np.unique(rows, return_inverse=True)
        got = self.table.take_offsets(uniq.tolist()).select(["chip_id", name]).to_arrow()
        want = self.attrs.column("chip_id").take(pa.array(uniq))
        if got.num_rows != len(uniq) or not got.column("chip_id").combine_chunks().equals(
            want.combine_chunks() if isinstance(want, pa.ChunkedArray) else want
        ):
            raise IndexStaleError(
                f"reading {name!r} of {len(uniq)} chips of {self.path} returned other chips "
                "(the table changed underneath?); reconnect and retry"
            )
        return got.column(name).combine_chunks().take(pa.array(back, pa.int64()))

    def count(self, filters: Filters | None = None, **where: Unpack[FilterKeywords]) -> dict:
        """How many chips the filters keep, and how many each part removes (and why).

        ``{"total", "matched", "removed": {"area"|"time"|"sensor"|"label"|"pred_label"|
        "pred_score"|"recon_error": n}, "undated": n}``: ``undated`` counts chips without a
        datetime dropped by a time range (pass ``undated=True`` to keep them); with
        ``max_recon_error``, ``unscored`` counts chips kept for want of a quality score. Parts
        overlap: one chip may be removed by several.
        """
        f = Filters.of(filters, **where)
        return self.engine.explain(f)

    def _filter_rows(self, f: Filters) -> np.ndarray:
        return self.engine.rows(f) if not f.empty else np.arange(len(self))

    def _resolve(
        self, examples: Example | Sequence[Example] | None, what: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [m, D] normalised, row numbers of the examples given as chip ids)."""
        if examples is None:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        if isinstance(examples, str) or (isinstance(examples, np.ndarray) and examples.ndim == 1):
            examples = [examples]
        elif isinstance(examples, np.ndarray) and examples.ndim == 2:
            examples = list(examples)
        elif (
            isinstance(examples, Sequence)
            and examples
            and all(isinstance(v, int | float | np.floating) for v in examples)
        ):
            examples = [np.asarray(examples, dtype=np.float32)]
        ids = [e for e in examples if isinstance(e, str)]
        rows = self._rows_of(ids) if ids else np.zeros(0, np.int64)
        vecs = []
        for e in examples:
            if isinstance(e, str):
                continue
            v = np.asarray(e, dtype=np.float32)
            if v.ndim != 1 or v.shape[0] != self.dim:
                raise QueryError(
                    f"{what} vector has shape {tuple(v.shape)}; this store holds {self.dim}-"
                    f"dimensional embeddings (model {self.model_id})"
                )
            if not np.all(np.isfinite(v)):
                raise QueryError(f"{what} vector holds NaN or infinite values")
            vecs.append(v)
        parts = []
        if len(rows):
            parts.append(self.vectors_of(rows))
        if vecs:
            parts.append(l2_normalise(np.vstack(vecs)))
        mat = np.vstack(parts) if parts else np.zeros((0, self.dim), np.float32)
        return mat, rows

    # -- queries ---------------------------------------------------------------------------------
    def get(self, chip_ids: str | Sequence[str]) -> Results:
        """The chips with these ids (or unique prefixes), in the order given."""
        ids = [chip_ids] if isinstance(chip_ids, str) else list(chip_ids)
        return self._results(self._rows_of(ids), None, {"query": "get"})

    def chips(
        self,
        filters: Filters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        sort: str | None = None,
        ascending: bool = False,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """The chips matching the filters, in table order (no ranking; a page of ``limit``
        chips from ``offset``). ``meta["matched"]`` is the count before the page is cut.

        ``sort="recon_error"`` orders them by quality score instead, worst (highest) first
        (``ascending=True``: best first); chips without a score come last either way.
        """
        f = Filters.of(filters, **where)
        if sort is not None and sort not in SORT_COLUMNS:
            raise QueryError(f"cannot sort by {sort!r}; sort by one of {', '.join(SORT_COLUMNS)}")
        if limit is not None and (not isinstance(limit, int | np.integer) or limit < 0):
            raise QueryError(f"limit must be a non-negative integer, got {limit!r}")
        if not isinstance(offset, int | np.integer) or offset < 0:
            raise QueryError(f"offset must be a non-negative integer, got {offset!r}")
        rows = self._filter_rows(f)
        matched = int(len(rows))
        if sort is not None:
            values = self.engine.recon_error
            if values is None:
                raise QueryError(
                    f"this table version has no {sort!r} column (a store made before quality "
                    "scores, or imported): ingest into a new store to score chips"
                )
            v = values[rows]
            key = np.where(np.isnan(v), np.inf, v if ascending else -v)  # unscored last
            rows = rows[np.argsort(key, kind="stable")]
        rows = rows[offset:] if limit is None else rows[offset : offset + limit]
        meta = {"query": "chips", "filters": f.to_dict(), "matched": matched, "total": len(self)}
        if sort is not None:
            meta["sort"] = {"column": sort, "ascending": ascending}
        return self._results(rows, None, meta)

    def search(
        self,
        positives: Example | Sequence[Example] = (),
        negatives: Example | Sequence[Example] = (),
        k: int = 50,
        *,
        filters: Filters | None = None,
        alpha: float = NEGATIVE_WEIGHT,
        exclude_examples: bool = True,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """Chips most like the positives and least like the negatives (see ``search.py``).

        Examples are chip ids (or unique prefixes) or vectors. Example chips are left out of the
        results unless ``exclude_examples=False``. With any filter the search is exact within
        the filter.
        """
        _check_k(k)
        f = Filters.of(filters, **where)
        pos, pos_rows = self._resolve(positives, "positive")
        if len(pos) == 0:
            raise QueryError(
                "no positives: give at least one chip id or vector to search for "
                "(--positive ID on the command line)"
            )
        neg, neg_rows = self._resolve(negatives, "negative")
        q = query_vector(pos, neg, alpha=alpha)
        exclude = np.unique(np.concatenate([pos_rows, neg_rows])) if exclude_examples else None
        return self._search_q(
            q,
            int(k),
            f,
            exclude,
            {"query": "search", "alpha": alpha, "positives": len(pos), "negatives": len(neg)},
        )

    def _search_q(
        self, q: np.ndarray, k: int, f: Filters, exclude: np.ndarray | None, meta: dict
    ) -> Results:
        meta = {**meta, "filters": f.to_dict(), "k": k}
        if not f.empty:
            rows = self.engine.rows(f)
            meta["candidates"] = int(len(rows))
            if exclude is not None and len(exclude):
                rows = rows[~np.isin(rows, exclude)]
            scores = self.scores_of(rows, lambda v: v @ q)
            pos = top_k(scores, k)
            r, s = rows[pos].astype(np.int64), scores[pos]
            meta["total"] = len(self)
            res = self._results(r, s, meta)
            res.meta["index"] = "exact-in-filter"
            return res
        idx = self._ensure_index()
        if idx is None:
            r, s = exact_search(self.vectors, q, k, exclude=exclude)
            return self._results(r, s, meta)
        n_ex = 0 if exclude is None else len(exclude)
        kk = min(candidates(idx.kind, k) + n_ex, idx.index.ntotal)
        if kk == 0:
            return self._results(np.zeros(0, np.int64), np.zeros(0, np.float32), meta)
        d, i = idx.index.search(q[None, :], kk)
        d, i = d[0], i[0]
        keep = i >= 0
        if exclude is not None and n_ex:
            keep &= ~np.isin(i, exclude)
        i, d = i[keep].astype(np.int64), d[keep]
        if idx.kind in APPROXIMATE_KINDS:  # codes found the candidates; the table scores them
            meta["reranked"] = int(len(i))
            d = self.vectors_of(i) @ q
            best = top_k(d, k)
            i, d = i[best], d[best]
        r, s = i[:k], d[:k]
        return self._results(r, s, meta)

    def search_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 50,
        *,
        filters: Filters | None = None,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """Chips nearest to a raw embedding ``vector`` (cosine)."""
        v = np.asarray(vector, dtype=np.float32)
        if v.ndim != 1:
            raise QueryError(f"give one vector of {self.dim} values, got shape {v.shape}")
        return self.search([v], (), k, filters=filters, **where)

    def search_point(
        self,
        lon: float,
        lat: float,
        k: int = 50,
        *,
        filters: Filters | None = None,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """Search with the chip(s) under ``lon, lat`` as positives (all chips covering it)."""
        import shapely

        from clay_search.geo import check_lonlat

        lon, lat = check_lonlat(lon, lat)
        rows = self.engine.rows(Filters(geometry=shapely.Point(lon, lat)))
        if len(rows) == 0:
            raise QueryError(
                f"no chip in the store covers lon {lon}, lat {lat}; see store.overview()['bbox']"
            )
        ids = self.attrs.column("chip_id").take(pa.array(rows)).to_pylist()
        res = self.search(ids, (), k, filters=filters, **where)
        res.meta.update(query="point", point=[lon, lat], query_chips=ids)
        return res

    def search_image(
        self,
        image: str | Path | np.ndarray,
        k: int = 50,
        *,
        image_sensor: str | None = None,
        bands: Sequence[str] | None = None,
        when: Any = None,
        filters: Filters | None = None,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """Embed an image (GeoTIFF/PNG/JPEG path, or raw ``[C, H, W]`` array) and search with it.

        ``image_sensor`` is the sensor that took the image (default ``sentinel-2-l2a``); the
        ``sensor`` keyword, as everywhere, is the filter on the chips searched. ``bands``
        defaults to red, green, blue for 3-band input. ``when`` is the acquisition time (date,
        datetime or ISO text) if known. The embedder's model id must match the store's.
        """
        from clay_search.filters import _as_utc
        from clay_search.store.query_image import embed_image

        _check_k(k)
        f = Filters.of(filters, **where)  # validated before the (slow) embedding
        emb = self._get_embedder()
        at = None if when is None else _as_utc(when, end=False)
        vec, notes = embed_image(emb, image, sensor=image_sensor, bands=bands, when=at)
        res = self.search([vec], (), k, filters=f)
        res.meta.update(query="image", image_notes=notes, image_sensor=image_sensor)
        return res

    def _get_embedder(self):
        with self._lock:
            if self._embedder is None:
                from clay_search.model.embedder import Embedder

                emb = Embedder.from_weights(self.weights, precision="auto")
                if emb.model_id != self.model_id and getattr(self.info, "imported", None):
                    raise StoreMismatchError(
                        f"store {self.path} holds embeddings of model {self.model_id!r}, "
                        "imported from files made elsewhere; clay-search cannot embed a query "
                        "image with that model (the weights give "
                        f"{emb.model_id!r}); search by example chips, a point or a vector "
                        "instead (store.search(ids), search_point, search_vector)"
                    )
                if emb.model_id != self.model_id:
                    raise StoreMismatchError(
                        f"the weights {self.weights or '(bundled)'} are model {emb.model_id!r} "
                        f"but store {self.path} holds model {self.model_id!r}; pass the store's "
                        "weights: connect(path, weights=...)"
                    )
                self._embedder = emb
            return self._embedder

    def refine(
        self,
        positives: Example | Sequence[Example],
        negatives: Example | Sequence[Example] = (),
        *,
        k: int | None = None,
        background: int = 10,
        exclude_examples: bool = True,
        seed: int = 0,
        filters: Filters | None = None,
        **where: Unpack[FilterKeywords],
    ) -> Results:
        """Fit a logistic regression on the labelled chips and rank chips by its probability.

        Scores every chip matching the filters (all chips without filters). ``k=None`` returns
        all of them. Beside the labelled negatives, ``background`` x positives random chips act
        as class 0 (``background=0``: labelled negatives only).
        """
        from clay_search.refine import background_rows, fit_scorer, score_rows

        if k is not None:
            _check_k(k)
        f = Filters.of(filters, **where)
        pos, pos_rows = self._resolve(positives, "positive")
        if len(pos) == 0:
            raise QueryError("no positives: refine needs at least one labelled positive chip")
        neg, neg_rows = self._resolve(negatives, "negative")
        labelled = np.unique(np.concatenate([pos_rows, neg_rows]))
        # random background chips stand in for "everything else" beside the labelled negatives:
        # a handful of labelled negatives cannot describe all that is not the target
        bg = background_rows(len(self), labelled, background * len(pos), seed=seed)
        if len(neg) == 0 and len(bg) == 0:
            raise QueryError("refine needs negatives: the store has no other chips")
        used_background, labelled_negatives = len(bg), len(neg)
        if used_background:
            bgv = self.vectors_of(bg)
            neg = np.vstack([neg, bgv]) if len(neg) else bgv
        model = fit_scorer(pos, neg, seed=seed)
        rows = self._filter_rows(f)
        candidates = int(len(rows))
        if exclude_examples and len(labelled):
            rows = rows[~np.isin(rows, labelled)]
        scores = (
            self.scores_of(rows, lambda v: score_rows(model, v))
            if len(rows)
            else np.zeros(0, np.float32)
        )
        order = np.lexsort((rows, -scores))
        if k is not None:
            order = order[:k]
        return self._results(
            rows[order],
            scores[order],
            {
                "query": "refine",
                "positives": len(pos),
                "negatives": labelled_negatives,
                "background": used_background,
                "filters": f.to_dict(),
                "candidates": candidates,
                "total": len(self),
            },
        )

    def query(self) -> Query:
        """A fluent query: ``store.query().where(bbox=...).positives(ids).limit(50)
        .to_geopandas()`` (a thin builder over :meth:`search`, :meth:`refine`, :meth:`chips`)."""
        from clay_search.query import Query

        return Query(self)

    # -- change over time (clay_search/change.py) ------------------------------------------------
    def timeline(self, place_or_chip_id: str, **kw: Any) -> Results:
        """Every chip of a place by date with its distance to a reference date (see change.py)."""
        from clay_search.change import timeline

        return timeline(self, place_or_chip_id, **kw)

    def changes(self, before: Any, after: Any, **kw: Any) -> Results:
        """One row per place with chips in both periods, ranked by change (see change.py)."""
        from clay_search.change import changes

        return changes(self, before, after, **kw)

    def change_search(self, positives: Any, negatives: Any = (), **kw: Any) -> Results:
        """Places whose change between ``before=`` and ``after=`` is like the positives'."""
        from clay_search.change import change_search

        return change_search(self, positives, negatives, **kw)


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise QueryError(f"k must be a positive integer, got {k!r}")


class _IndexVectors:
    """Exposes a flat index's vector storage to numpy and keeps the index alive: an array made
    from it holds this object as its base, so the memory outlives the :class:`Store`."""

    def __init__(self, owner: LoadedIndex, view: np.ndarray) -> None:
        self.owner = owner
        self.__array_interface__ = view.__array_interface__


def _faiss_ivf(index: Any) -> Any:
    """The IVF part of a FAISS index (``faiss.extract_index_ivf``)."""
    import faiss

    return faiss.extract_index_ivf(index)


def _index_vectors(idx: LoadedIndex, dim: int) -> np.ndarray:
    """``[n, dim]`` vectors held by an IVF-flat or HNSW-flat index, in row order (a copy: those
    indexes store them per list / in their own storage). Read-only like the flat view."""
    n = idx.index.ntotal
    if not n:
        return np.zeros((0, dim), np.float32)
    arr = idx.index.reconstruct_n(0, n).astype(np.float32, copy=False)
    arr.flags.writeable = False
    return arr


def _flat_index_vectors(idx: LoadedIndex, dim: int) -> np.ndarray:
    """``[n, dim]`` read-only view of a flat index's vectors (no copy; see _IndexVectors)."""
    import faiss

    flat = faiss.downcast_index(idx.index)
    n = flat.ntotal
    if not n:
        return np.zeros((0, dim), np.float32)
    view = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)  # type: ignore[attr-defined]
    arr = np.asarray(_IndexVectors(idx, view))
    arr.flags.writeable = False
    return arr
