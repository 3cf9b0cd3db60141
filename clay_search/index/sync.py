"""Keep a FAISS index folder in step with a chips table.

This module knows a LanceDB table and an index folder, nothing about the store directory
(``clay_search.store`` opens both and calls in here: the store layer sits above the index layer).

Files: ``index-<gen>.faiss`` (vectors, normalised; FAISS ids are row numbers ``0..n-1``),
``ids-<gen>.arrow`` (the id map: row number -> ``chip_id``) and ``index.json`` (the table version
the index matches, kind, count, search parameters, and under ``files`` the names of the other two).
A sync writes a new generation of the two data files (never overwriting one a reader may be
loading), then ``index.json`` in one atomic write (one PUT on an object store), then deletes the
generations older than the previous one. So a reader always finds a whole index, and two writers
syncing at once each leave a consistent one; a sync does not replace an ``index.json`` that another
writer already moved to a later table version. The folder may be local or an object-store prefix
(:mod:`clay_search.location`). Indexes written before generations keep working
(``index.faiss``/``ids.arrow``, replaced on the next sync).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from clay_search.errors import IndexStaleError
from clay_search.index.faiss_index import (
    IVF_KINDS,
    apply_params,
    build_index_streamed,
    choose_kind,
    stored_form,
    tune_streamed,
)
from clay_search.index.vectors import concat_ids, iter_vectors, read_ids
from clay_search.location import RemotePath, store_location, write_atomic

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.arrow"
META_FILE = "index.json"
_GENERATION = re.compile(r"^(index-.+\.faiss|ids-.+\.arrow)$")
_HISTORY_KEYS = (
    "total_rows",
    "total_data_files",
    "total_deletion_files",
    "total_deletion_file_rows",
)


@dataclass
class IndexReport:
    """What :func:`sync_index` did."""

    action: str  # "unchanged", "added", "reordered", "rebuilt"
    kind: str
    table_version: int
    count: int
    added: int = 0
    seconds: float = 0.0
    reason: str = ""
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict (for JSON and the CLI)."""
        return asdict(self)


@dataclass
class LoadedIndex:
    """An index read from disk: the FAISS index, its id map and ``index.json``."""

    index: faiss.Index
    ids: pa.Array
    meta: dict

    @property
    def table_version(self) -> int:
        """The table version this index matches."""
        return int(self.meta["table_version"])

    @property
    def kind(self) -> str:
        """``flat``, ``ivf``, ``ivf-sq8`` or ``hnsw``."""
        return str(self.meta["kind"])


def _history(table, version: int) -> dict | None:
    for v in table.list_versions():
        if int(v["version"]) == version:
            meta = v.get("metadata") or {}
            return {k: int(meta[k]) for k in _HISTORY_KEYS if k in meta}
    return None


def _only_appended(table, since: int, now: int) -> bool:
    """Whether every commit after ``since`` up to ``now`` only added rows (no delete/update)."""
    versions = {int(v["version"]): v.get("metadata") or {} for v in table.list_versions()}
    if since not in versions:
        return False
    prev = versions[since]
    for ver in sorted(v for v in versions if since < v <= now):
        cur = versions[ver]
        try:
            if int(cur["total_deletion_files"]) != int(prev["total_deletion_files"]):
                return False
            # a second update or delete in a fragment that already has a deletion file grows
            # that file, not the number of files: count the deleted rows too
            deleted = "total_deletion_file_rows"
            if int(cur.get(deleted, 0)) != int(prev.get(deleted, 0)):
                return False
            if int(cur["total_data_files"]) < int(prev["total_data_files"]):
                return False
            if int(cur["total_rows"]) < int(prev["total_rows"]):
                return False
        except (KeyError, ValueError):
            return False
        prev = cur
    return True


def covers_version(table, meta: dict, version: int) -> bool:
    """Whether an index built for ``meta["table_version"]`` still matches ``version``.

    True when the versions are equal, or when every commit in between kept the rows (same count,
    no deletions: e.g. columns added by predictions, or commits that changed nothing), so the
    ids and embeddings the index holds are those of ``version``.
    """
    built = int(meta["table_version"])
    if built == version:
        return True
    if built > version:
        return False
    hist = _history(table, version)
    if not hist or hist.get("total_rows") != int(meta["count"]):
        return False
    return _only_appended(table, built, version)


def read_index_meta(folder: str | Path | RemotePath) -> dict | None:
    """``index.json`` in ``folder``, or ``None`` if there is no index yet."""
    path = _folder(folder) / META_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _folder(folder: str | Path | RemotePath) -> Path | RemotePath:
    return folder if isinstance(folder, RemotePath | Path) else store_location(folder)


def _files(meta: dict) -> tuple[str, str]:
    files = meta.get("files") or {}
    return files.get("index", INDEX_FILE), files.get("ids", IDS_FILE)


def load_index(folder: str | Path | RemotePath) -> LoadedIndex:
    """Read the index in ``folder``; :class:`IndexStaleError` if it is missing or inconsistent."""
    folder = _folder(folder)
    meta = read_index_meta(folder)
    if meta is None:
        raise IndexStaleError(f"no index in {folder}; run `clay-search index --sync`")
    index_name, ids_name = _files(meta)
    try:
        if isinstance(folder, RemotePath):
            raw = np.frombuffer((folder / index_name).read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(raw)
        else:
            index = faiss.read_index(str(folder / index_name))
        with ipc.open_file(pa.BufferReader((folder / ids_name).read_bytes())) as reader:
            ids = reader.read_all().column("chip_id").combine_chunks()
    except FileNotFoundError as e:  # a newer sync removed this generation meanwhile
        raise IndexStaleError(f"index files in {folder} changed while reading; retry") from e
    except (RuntimeError, OSError, pa.ArrowException, KeyError) as e:
        raise IndexStaleError(
            f"the index files in {folder} are damaged or missing ({str(e)[:200]}); "
            "run `clay-search index --rebuild` (the chips table is not affected)"
        ) from e
    if index.ntotal != meta["count"] or len(ids) != meta["count"]:
        raise IndexStaleError(
            f"index files in {folder} disagree (a sync was interrupted?); "
            "run `clay-search index --rebuild`"
        )
    apply_params(index, meta["kind"], meta.get("params", {}))
    return LoadedIndex(index, ids, meta)


def _save(folder: Path | RemotePath, index: faiss.Index, ids: pa.Array, meta: dict) -> None:
    """Write a new generation of the data files, then ``index.json`` (see the module doc); a full
    disk becomes one clear :class:`StoreWriteError` and the previous generation stays."""
    from clay_search.store.lock import guarded_write

    with guarded_write(folder, "writing the index"):
        _save_files(folder, index, ids, meta)


def _save_files(folder: Path | RemotePath, index: faiss.Index, ids: pa.Array, meta: dict) -> None:
    folder = _folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = f"v{int(meta['table_version'])}-{uuid.uuid4().hex[:12]}"
    names = {"index": f"index-{gen}.faiss", "ids": f"ids-{gen}.arrow"}
    if isinstance(folder, RemotePath):
        write_atomic(folder / names["index"], faiss.serialize_index(index).tobytes())
    else:
        tmp = folder / (names["index"] + ".tmp")
        faiss.write_index(index, str(tmp))
        tmp.replace(folder / names["index"])
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, pa.schema([("chip_id", pa.string())])) as writer:
        writer.write_table(pa.table({"chip_id": ids.cast(pa.string())}))
    write_atomic(folder / names["ids"], sink.getvalue().to_pybytes())
    before = read_index_meta(folder)
    if before is not None and int(before.get("table_version", -1)) > int(meta["table_version"]):
        _drop_generations(folder, keep=set(_files(before)))  # another writer got further
        return
    meta["files"] = names
    _write_meta(folder, meta)
    keep = set(names.values()) | (set(_files(before)) if before else set())
    _drop_generations(folder, keep=keep)


def _files_present(folder, meta: dict) -> bool:
    """Whether the data files ``index.json`` names exist (legacy names included)."""
    try:
        return all((folder / name).exists() for name in _files(meta))
    except OSError:
        return False


def _drop_generations(folder: Path | RemotePath, *, keep: set[str]) -> None:
    """Delete index data files other than ``keep`` (the current and the previous generation:
    a reader that read the previous ``index.json`` can still load its files)."""
    for item in folder.iterdir():
        name = item.name
        legacy = name in (INDEX_FILE, IDS_FILE)
        if name in keep or not (legacy or _GENERATION.match(name)):
            continue
        with contextlib.suppress(OSError):  # another writer removed it first
            item.unlink()


def sync_table_index(
    table,
    folder: str | Path | RemotePath,
    *,
    model_id: str,
    dim: int,
    kind: str = "auto",
    rebuild: bool = False,
    seed: int = 0,
) -> IndexReport:
    """Bring the index in ``folder`` up to ``table``'s current version; report what was done.

    Unchanged (only ``index.json`` moves to the new version) when the commits since the indexed
    version kept every row (columns added, no-op commits); adds the new rows when the table only
    grew (no deletes or updates, same ids in the same order); re-adds the same vectors in the
    new row order (no training, no tuning) when rows were rewritten with the same ids and
    embeddings (predictions written with ``update``); rebuilds otherwise, or when
    ``rebuild`` is set, or when ``kind`` (``auto``/``flat``/``ivf``/``ivf-sq8``/``hnsw``) asks
    for another kind than the index has.
    """
    t0 = time.perf_counter()
    folder = _folder(folder)
    version = int(table.version)
    n = table.count_rows()
    meta = None if rebuild else read_index_meta(folder)
    wanted = choose_kind(n, kind)

    reason = "rebuild asked" if rebuild else "no index yet"
    if meta is not None:
        same_kind = meta.get("kind") == wanted
        if meta.get("kind_asked", "auto") != "auto" and kind == "auto":
            wanted, same_kind = meta["kind"], True  # keep an explicit earlier choice
        if not same_kind:
            reason = f"index kind {meta.get('kind')} -> {wanted}"
        elif meta.get("model_id") != model_id or meta.get("dim") != dim:
            reason = "store model changed"
        elif not _files_present(folder, meta):
            # another writer's clean-up removed the files this index.json names (two syncs
            # racing on an object store): rebuild rather than keep a pointer to nothing
            reason = "index files named by index.json are missing"
        elif int(meta["count"]) == n and covers_version(table, meta, version):
            if int(meta["table_version"]) != version:
                meta.update(table_version=version, history=_history(table, version))
                _write_meta(folder, meta)
            return IndexReport(
                "unchanged",
                meta["kind"],
                version,
                n,
                0,
                time.perf_counter() - t0,
                "index matches the table",
                meta.get("params", {}),
            )
        elif _can_append(table, meta, version, n):
            try:
                loaded = load_index(folder)
            except IndexStaleError as e:
                reason = str(e)
            else:
                new_parts: list[pa.Array] = []
                for block in iter_vectors(table, dim, ids=new_parts, offset=loaded.index.ntotal):
                    loaded.index.add(np.ascontiguousarray(block, dtype=np.float32))
                new_ids = concat_ids(new_parts)
                params = dict(meta.get("params", {}))
                if meta["kind"] != "flat" and n >= 2 * max(int(meta.get("tuned_count", 1)), 1):
                    params.update(
                        tune_streamed(
                            loaded.index,
                            meta["kind"],
                            lambda: iter_vectors(table, dim),
                            n,
                            seed=seed,
                        )
                    )
                    meta["tuned_count"] = n
                ids = pa.concat_arrays([loaded.ids, new_ids.cast(pa.string())])
                meta.update(
                    table_version=version,
                    count=n,
                    params=params,
                    history=_history(table, version),
                    updated=_now(),
                )
                _save(folder, loaded.index, ids, meta)
                return IndexReport(
                    "added",
                    meta["kind"],
                    version,
                    n,
                    len(new_ids),
                    time.perf_counter() - t0,
                    "table grew",
                    params,
                )
        else:
            reason = "rows deleted or updated since the index was built"

    if meta is not None and meta.get("kind") == wanted and int(meta["count"]) == n:
        report = _readd_if_same(table, folder, meta, dim, t0)
        if report is not None:
            return report
    # built from the table block by block: the matrix is never held whole
    parts: list[pa.Array] = []

    def blocks():
        parts.clear()  # each pass records its ids: the last (the adding pass) stays
        return iter_vectors(table, dim, ids=parts)

    index, params = build_index_streamed(blocks, n, dim, wanted, seed=seed)  # n checked
    ids = concat_ids(parts)
    meta = {
        "table_version": version,
        "kind": wanted,
        "kind_asked": kind,
        "count": n,
        "dim": dim,
        "metric": "cosine",
        "model_id": model_id,
        "params": params,
        "tuned_count": n,
        "history": _history(table, version),
        "built": _now(),
    }
    _save(folder, index, ids, meta)
    return IndexReport("rebuilt", wanted, version, n, n, time.perf_counter() - t0, reason, params)


def _readd_if_same(
    table, folder: Path | RemotePath, meta: dict, dim: int, t0: float
) -> IndexReport | None:
    """Rows rewritten with the same ids and embeddings (e.g. predictions written with
    ``update``): put the vectors back in the new row order without training or tuning again.
    None if any id or embedding differs (then the caller rebuilds). Two passes over the table,
    block by block (compare, then re-add): the matrix is never held whole."""
    try:
        loaded = load_index(folder)
    except IndexStaleError:
        return None
    old_ids = loaded.ids.to_pylist()
    pos = {c: i for i, c in enumerate(old_ids)}
    if len(pos) != len(old_ids) or table.count_rows() != len(old_ids):
        return None
    seen: set[int] = set()
    parts: list[pa.Array] = []
    for block in iter_vectors(table, dim, ids=parts):
        block_ids = parts.pop().to_pylist()
        if any(c not in pos for c in block_ids):
            return None
        order = np.array([pos[c] for c in block_ids], dtype=np.int64)
        seen.update(order.tolist())
        stored = _reconstruct(loaded, order)
        if not np.allclose(stored, stored_form(loaded.index, loaded.kind, block), atol=1e-6):
            return None
    if len(seen) != len(old_ids):  # a row repeated, another gone
        return None
    index = loaded.index
    index.reset()  # keeps an IVF's trained coarse quantiser (and the codes' ranges)
    parts.clear()
    added = 0
    for block in iter_vectors(table, dim, ids=parts):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
        added += len(block)
    new_ids = concat_ids(parts)
    if added != len(old_ids):
        raise IndexStaleError("the table changed while re-adding the index's rows; retry")
    version = int(table.version)
    meta.update(table_version=version, history=_history(table, version), updated=_now())
    _save(folder, index, new_ids.cast(pa.string()), meta)
    return IndexReport(
        "reordered",
        meta["kind"],
        version,
        len(new_ids),
        0,
        time.perf_counter() - t0,
        "rows rewritten with the same ids and embeddings: vectors re-added in the new order",
        meta.get("params", {}),
    )


def _can_append(table, meta: dict, version: int, n: int) -> bool:
    old_count = int(meta["count"])
    if version < int(meta["table_version"]) or n < old_count:
        return False
    if meta["kind"] in IVF_KINDS and n > 4 * max(int(meta.get("tuned_count", old_count)), 1):
        return False  # the coarse quantiser was trained on far fewer rows: retrain
    return _only_appended(table, int(meta["table_version"]), version)


def _write_meta(folder: Path | RemotePath, meta: dict) -> None:
    write_atomic(_folder(folder) / META_FILE, json.dumps(meta, indent=2, sort_keys=True))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class IndexCheck:
    """What :func:`check_index` found: rows missing from the index, or stale in it."""

    table_version: int
    index_version: int | None
    table_rows: int
    index_rows: int
    missing: list[str]
    stale: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        """Whether the index matches the table exactly."""
        return not (self.missing or self.stale or self.extra) and (
            self.index_version == self.table_version
        )

    def to_dict(self) -> dict:
        """Plain dict, with the id lists cut to their first 20 entries and counted."""
        d = asdict(self)
        for key in ("missing", "stale", "extra"):
            d[f"{key}_count"] = len(d[key])
            d[key] = d[key][:20]
        d["ok"] = self.ok
        return d


def check_table_index(
    table, folder: str | Path | RemotePath, *, dim: int, atol: float = 1e-5
) -> IndexCheck:
    """Compare the index in ``folder`` with ``table`` row by row (ids and vectors), reading
    the table block by block (the matrix is never held whole)."""
    try:
        loaded = load_index(folder)
    except IndexStaleError:
        all_ids = read_ids(table).to_pylist()
        return IndexCheck(int(table.version), None, len(all_ids), 0, all_ids, [], [])
    index_ids = loaded.ids.to_pylist()
    pos = {cid: i for i, cid in enumerate(index_ids)}
    table_ids: list[str] = []
    missing: list[str] = []
    stale: list[str] = []
    parts: list[pa.Array] = []
    for block in iter_vectors(table, dim, ids=parts):
        block_ids = parts.pop().to_pylist()
        table_ids.extend(block_ids)
        missing.extend(c for c in block_ids if c not in pos)
        here = [k for k, c in enumerate(block_ids) if c in pos]
        if here:
            stored = _reconstruct(loaded, np.array([pos[block_ids[k]] for k in here], np.int64))
            want = stored_form(loaded.index, loaded.kind, block[here])
            bad = np.abs(stored - want).max(axis=1) > atol
            stale.extend(block_ids[here[k]] for k in np.flatnonzero(bad))
    table_set = set(table_ids)
    extra = [c for c in index_ids if c not in table_set]
    covered = covers_version(table, loaded.meta, int(table.version))
    return IndexCheck(
        int(table.version),
        int(table.version) if covered else loaded.table_version,
        len(table_ids),
        len(index_ids),
        missing,
        stale,
        extra,
    )


def _reconstruct(loaded: LoadedIndex, rows: np.ndarray) -> np.ndarray:
    """The index's vectors of ``rows`` (IVF kinds: through a direct map, made once)."""
    index = loaded.index
    if loaded.kind in IVF_KINDS:
        ivf = faiss.extract_index_ivf(index)
        if ivf.direct_map.no():
            ivf.make_direct_map()
    if len(rows) == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
