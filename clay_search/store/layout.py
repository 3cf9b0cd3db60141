"""The store directory: ``store.json``, the LanceDB database, the index folder, run manifests.

Writers call :func:`open_or_create_store` before their first write; it creates the folders and
``store.json`` and refuses embeddings of another model (or dimension) than the store holds.
``store.json`` also keeps the normalisation policy the store's vectors were made with
(``normalisation``; see :func:`clay_search.model.normalise.normalisation_policy`): ingest
refuses to add vectors made under another one (:func:`check_normalisation`), since one model
id over differently normalised pixels gives vectors that do not compare.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clay_search.errors import StoreMismatchError, StoreNotFoundError
from clay_search.location import RemotePath, connect_lancedb, store_location, write_atomic
from clay_search.schema import TABLE_NAME, chips_schema

STORE_JSON = "store.json"
LANCEDB_DIR = "lancedb"
INDEX_DIR = "index"
RUNS_DIR = "runs"
STORE_FORMAT = "clay-search-store"
STORE_FORMAT_VERSION = 1
#: Environment variable naming the store the app (and ``clay-search app``) opens.
STORE_ENV_VAR = "CLAY_SEARCH_STORE"
#: Environment variable naming the weights used to embed query images in the app.
WEIGHTS_ENV_VAR = "CLAY_SEARCH_WEIGHTS"


@dataclass(frozen=True)
class StoreInfo:
    """What ``store.json`` says about a store, plus where its parts live."""

    path: Path | RemotePath  # a local folder, or an object-store prefix (s3://, gs://, az://)
    model_id: str
    dim: int
    patch_dim: int | None
    created: str
    imported: dict | None = None  # provenance of imported embeddings (see record_import)
    #: the normalisation policy of the store's vectors (None: a store made before stores
    #: recorded it, or one of imported embeddings only)
    normalisation: dict | None = None

    @property
    def lancedb_path(self) -> Path | RemotePath:
        """The LanceDB database folder."""
        return self.path / LANCEDB_DIR

    @property
    def index_path(self) -> Path | RemotePath:
        """The FAISS index folder."""
        return self.path / INDEX_DIR

    @property
    def runs_path(self) -> Path | RemotePath:
        """The ingest run manifests folder."""
        return self.path / RUNS_DIR


def _write_json_atomic(path: Path | RemotePath, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def update_store_json(info: StoreInfo, change: Callable[[dict[str, Any]], bool]) -> bool:
    """Read-modify-write ``store.json``: ``change(meta)`` edits the parsed file in place and
    says whether it changed anything; only then is it written back (atomically, a whole file or
    the old one). Returns what ``change`` said.

    Runs under the store's write lock (re-entrant: writers already hold it), so two writers of
    a local store never lose each other's edits. An object store has no lock: there the write
    is atomic, but two writers editing at the same moment keep only the later edit.
    """
    from clay_search.store.lock import store_lock

    path = info.path / STORE_JSON
    with store_lock(info.path, f"updating {STORE_JSON}"):
        meta = json.loads(path.read_text())
        changed = change(meta)
        if changed:
            _write_json_atomic(path, meta)
    return changed


def read_store_info(path: str | Path | RemotePath) -> StoreInfo:
    """Read ``<path>/store.json``; :class:`StoreNotFoundError` if there is no store there.

    ``path`` is a folder or an object-store URI (``s3://bucket/prefix``; see
    :mod:`clay_search.location`)."""
    root = store_location(path)
    meta_path = root / STORE_JSON
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        text = None
    except OSError as e:
        raise StoreNotFoundError(f"cannot read {meta_path}: {e}") from e
    if text is None:
        raise StoreNotFoundError(
            f"no clay-search store at {root} ({STORE_JSON} missing); create one with "
            "`clay-search ingest ... --store PATH` or `clay-search import FILE --store PATH`"
        )
    repair = (
        "the chips table in lancedb/ is not affected: restore the file from a backup or "
        "rewrite it (see docs/reliability.md, 'Repairing a store')"
    )
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreNotFoundError(
            f"{meta_path} is not valid JSON ({e}); the store description is damaged: {repair}"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise StoreNotFoundError(f"{meta_path} is not a clay-search store description")
    try:
        return StoreInfo(
            path=root,
            model_id=str(meta["model_id"]),
            dim=int(meta["dim"]),
            patch_dim=int(meta["patch_dim"]) if meta.get("patch_dim") else None,
            created=str(meta.get("created", "")),
            imported=meta.get("imported"),
            normalisation=meta.get("normalisation"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreNotFoundError(
            f"{meta_path} lacks a valid {e} (model_id, dim): the store description is "
            f"damaged: {repair}"
        ) from e


def open_or_create_store(
    path: str | Path | RemotePath,
    model_id: str,
    dim: int,
    patch_dim: int | None = None,
    *,
    normalisation: dict | None = None,
) -> StoreInfo:
    """Open the store at ``path`` for writing, creating it (and ``store.json``) if needed.

    Raises :class:`StoreMismatchError` when the store holds another model id or dimension.
    ``normalisation``: the policy of the vectors to be written, kept in a new store's
    ``store.json`` (an existing store's is checked by :func:`check_normalisation`).
    ``patch_dim`` may be added to a store that had none; a different one is refused.
    Two writers creating one store at once both write the same ``store.json`` when they agree
    on the model; the loser of a disagreement is refused by the check after writing.
    """
    root = store_location(path)
    if (root / STORE_JSON).exists():
        info = read_store_info(root)
        if info.model_id != model_id:
            raise StoreMismatchError(
                f"store {root} holds embeddings of model {info.model_id!r}, not {model_id!r}; "
                "write to a new store (--store OTHER_PATH) or use the store's weights"
            )
        if info.dim != dim:
            raise StoreMismatchError(
                f"store {root} holds {info.dim}-dimensional embeddings, not {dim}; "
                "write to a new store"
            )
        if patch_dim and info.patch_dim and patch_dim != info.patch_dim:
            raise StoreMismatchError(
                f"store {root} holds patch embeddings of size {info.patch_dim}, not {patch_dim}"
            )
        return info
    if root.is_file():
        raise StoreNotFoundError(f"{root} is a file; give a folder for the store")
    root.mkdir(parents=True, exist_ok=True)
    for sub in (LANCEDB_DIR, INDEX_DIR, RUNS_DIR):
        (root / sub).mkdir(exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    _write_json_atomic(
        root / STORE_JSON,
        {
            "format": STORE_FORMAT,
            "version": STORE_FORMAT_VERSION,
            "model_id": model_id,
            "dim": int(dim),
            "patch_dim": int(patch_dim) if patch_dim else None,
            "created": created,
            **({"normalisation": dict(normalisation)} if normalisation else {}),
        },
    )
    info = read_store_info(root)  # another writer may have created it meanwhile: check again
    if (info.model_id, info.dim) != (model_id, int(dim)):
        return open_or_create_store(root, model_id, dim, patch_dim)  # raises the mismatch
    return info


#: the fields of a normalisation policy that decide how pixels become vectors
POLICY_KEYS = ("stats", "stats_file_sha256", "record", "decision")


def _policy_fix(have: dict, want: dict) -> str:
    """How to fix an ingest refused for another normalisation policy than the store's."""
    new = "ingest into a new store (--store OTHER_PATH)"
    if have.get("decision") != want.get("decision"):
        return (
            f"the store's vectors were made under older normalisation rules "
            f"(v{have.get('decision')}, now v{want.get('decision')}): {new}, re-ingesting the "
            "store's sources there"
        )
    if have.get("stats") != want.get("stats") or have.get("stats_file_sha256") != want.get(
        "stats_file_sha256"
    ):
        flag = (
            f"--stats {have.get('stats')}"
            if have.get("stats") != "file"
            else f"--stats with the statistics file {have.get('stats_file')} the store was made "
            f"with (SHA-256 {str(have.get('stats_file_sha256'))[:12]}...)"
        )
        return f"pass {flag} to add to this store, or {new}"
    return (
        "the weights have the store's model id but another normalisation record: ingest with "
        f"the weights the store was made with, or {new}"
    )


def check_normalisation(
    info: StoreInfo, policy: dict | None, *, has_rows: bool = True
) -> str | None:
    """Check that vectors made under the normalisation ``policy`` may join the store's.

    Call with the store's write lock held. Raises :class:`StoreMismatchError` (saying how to
    fix it: a new store, or the ``--stats`` that matches) when the store's ``store.json`` records
    another policy. A store without a record (made before stores kept it) is taken as unknown:
    the policy is recorded from now on and, when it holds rows (``has_rows``), a warning is
    returned, once (later writes are checked against the record). ``None`` (imported vectors)
    checks nothing.
    """
    from clay_search.model.normalise import describe_policy

    if policy is None:
        return None

    def record(meta: dict[str, Any]) -> bool:
        have = meta.get("normalisation")
        if have:
            if any(have.get(k) != policy.get(k) for k in POLICY_KEYS):
                raise StoreMismatchError(
                    f"store {info.path} holds vectors normalised with {describe_policy(have)}; "
                    f"this ingest normalises with {describe_policy(policy)}, and one store must "
                    f"not mix the two (same model id, vectors that do not compare): "
                    f"{_policy_fix(have, policy)}"
                )
            return False
        when = datetime.now(UTC).isoformat(timespec="seconds")
        earlier = {"earlier_rows": "unknown"} if has_rows else {}
        meta["normalisation"] = {**policy, "recorded": when, **earlier}
        return True

    if not update_store_json(info, record) or not has_rows:
        return None
    return (
        f"store {info.path} was made before stores recorded how their vectors were normalised: "
        "the rows already there may have been normalised otherwise than this run's "
        f"({describe_policy(policy)}, recorded in store.json from now on; later ingests are "
        "checked against it). If searches mix up sources, re-ingest into a new store"
    )


def record_import(info: StoreInfo, provenance: dict[str, Any]) -> None:
    """Keep where imported embeddings came from in ``store.json`` under ``imported``.

    ``provenance``: the model (id, name, version, source), licence, providers, time range and
    source datasets a file declared; the first import's values are kept, later files add
    their datasets and providers.
    """

    def merge(meta: dict[str, Any]) -> bool:
        have = meta.get("imported") or {}
        merged = {**provenance, **have}
        for key in ("datasets", "providers"):
            seen = list(have.get(key, []))
            seen += [d for d in provenance.get(key, []) if d not in seen]
            if seen:
                merged[key] = seen
        if merged == have:
            return False
        meta["imported"] = merged
        return True

    update_store_json(info, merge)


def open_chips_table(info: StoreInfo, *, create: bool = True):
    """The LanceDB ``chips`` table of a store (created empty with the chips schema if asked).

    Two writers may create the table of a new object-store store at the same moment (there is
    no file lock there). Lance then commits the later create on top of the earlier table as an
    *overwrite*, which empties it: that writer puts back the rows of the versions before its
    create (:func:`_restore_overwritten`), and the other writer's next append, refused as
    incompatible with the overwrite, is retried on the new version (:func:`append_rows`).
    """
    db = connect_lancedb(info.lancedb_path)
    if TABLE_NAME in _table_names(db):
        return db.open_table(TABLE_NAME)
    if not create:
        raise StoreNotFoundError(f"store {info.path} has no chips yet; ingest or import some first")
    try:
        table = db.create_table(TABLE_NAME, schema=chips_schema(info.dim, patch_dim=info.patch_dim))
    except ValueError:  # another writer created it since the listing: use theirs
        if TABLE_NAME not in _table_names(db):
            raise
        return db.open_table(TABLE_NAME)
    if int(table.version) > 1:  # our create landed on another writer's table
        _restore_overwritten(info, db, table)
    return table


def _restore_overwritten(info: StoreInfo, db, table) -> int:
    """Append back the rows that versions before ``table``'s create held and it lacks.

    The versions before a racing create are the few commits of another writer that started in
    the same instant, so this reads little. Returns how many rows were put back.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from clay_search.index.vectors import read_ids

    mine = int(table.version)
    have = set(read_ids(table).to_pylist())
    old = db.open_table(TABLE_NAME)
    parts = []
    for version in range(mine - 1, 0, -1):
        old.checkout(version)
        if old.count_rows() == 0:
            continue
        data = old.to_arrow()
        keep = pc.invert(pc.is_in(data.column("chip_id"), pa.array(sorted(have), pa.string())))
        data = data.filter(keep)
        if data.num_rows:
            parts.append(data.select(table.schema.names).cast(table.schema))
            have.update(data.column("chip_id").to_pylist())
    if not parts:
        return 0
    lost = pa.concat_tables(parts)
    append_rows(info, table, lost, what="putting back rows of a concurrent create")
    return lost.num_rows


#: Lance's words when a commit met a concurrent overwrite (a racing create, see above).
_OVERWRITTEN = "incompatible with concurrent transaction overwrite"


def append_rows(info: StoreInfo, table, data, *, what: str, tries: int = 5) -> None:
    """Append ``data`` (Arrow) to the chips ``table`` in one commit (the one write of chip rows).

    A failed write of the filesystem becomes one clear :class:`StoreWriteError`
    (:func:`clay_search.store.lock.guarded_write`). A commit refused because another writer's
    create overwrote the table meanwhile is retried on the latest version; the rows this
    writer committed before were put back by that writer (:func:`open_chips_table`).
    """
    from clay_search.store.lock import guarded_write

    for attempt in range(tries):
        try:
            with guarded_write(info.path, what, version=int(table.version)):
                table.add(data)
            return
        except RuntimeError as e:
            if _OVERWRITTEN not in str(e).lower() or attempt == tries - 1:
                raise
            table.checkout_latest()


def _table_names(db) -> list[str]:
    listing = db.list_tables()
    names = getattr(listing, "tables", listing)
    return list(names)
