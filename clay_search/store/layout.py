"""The store directory: ``store.json``, the LanceDB database, the index folder, run manifests.

Writers call :func:`open_or_create_store` before their first write; it creates the folders and
``store.json`` and refuses embeddings of another model (or dimension) than the store holds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clay_search.errors import StoreMismatchError, StoreNotFoundError
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

    path: Path
    model_id: str
    dim: int
    patch_dim: int | None
    created: str
    imported: dict | None = None  # provenance of imported embeddings (see record_import)

    @property
    def lancedb_path(self) -> Path:
        """The LanceDB database folder."""
        return self.path / LANCEDB_DIR

    @property
    def index_path(self) -> Path:
        """The FAISS index folder."""
        return self.path / INDEX_DIR

    @property
    def runs_path(self) -> Path:
        """The ingest run manifests folder."""
        return self.path / RUNS_DIR


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_store_info(path: str | Path) -> StoreInfo:
    """Read ``<path>/store.json``; :class:`StoreNotFoundError` if there is no store there."""
    root = Path(path)
    meta_path = root / STORE_JSON
    if not meta_path.exists():
        raise StoreNotFoundError(
            f"no clay-search store at {root} ({STORE_JSON} missing); create one with "
            "`clay-search ingest ... --store PATH` or `clay-search import FILE --store PATH`"
        )
    repair = ("the chips table in lancedb/ is not affected: restore the file from a backup or "
              "rewrite it (see docs/reliability.md, 'Repairing a store')")
    try:
        meta = json.loads(meta_path.read_text())
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
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreNotFoundError(
            f"{meta_path} lacks a valid {e} (model_id, dim): the store description is "
            f"damaged: {repair}"
        ) from e


def open_or_create_store(
    path: str | Path, model_id: str, dim: int, patch_dim: int | None = None
) -> StoreInfo:
    """Open the store at ``path`` for writing, creating it (and ``store.json``) if needed.

    Raises :class:`StoreMismatchError` when the store holds another model id or dimension.
    ``patch_dim`` may be added to a store that had none; a different one is refused.
    """
    root = Path(path)
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
    if root.exists() and root.is_file():
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
        },
    )
    return StoreInfo(root, model_id, int(dim), int(patch_dim) if patch_dim else None, created)


def record_import(info: StoreInfo, provenance: dict[str, Any]) -> None:
    """Keep where imported embeddings came from in ``store.json`` under ``imported``.

    ``provenance``: the model (id, name, version, source), licence, providers, time range and
    source datasets a file declared; the first import's values are kept, later files add
    their datasets and providers.
    """
    path = info.path / STORE_JSON
    meta = json.loads(path.read_text())
    have = meta.get("imported") or {}
    merged = {**provenance, **have}
    for key in ("datasets", "providers"):
        seen = list(have.get(key, []))
        seen += [d for d in provenance.get(key, []) if d not in seen]
        if seen:
            merged[key] = seen
    if merged != have:
        meta["imported"] = merged
        _write_json_atomic(path, meta)


def open_chips_table(info: StoreInfo, *, create: bool = True):
    """The LanceDB ``chips`` table of a store (created empty with the chips schema if asked)."""
    import lancedb

    db = lancedb.connect(str(info.lancedb_path))
    if TABLE_NAME in _table_names(db):
        return db.open_table(TABLE_NAME)
    if not create:
        raise StoreNotFoundError(f"store {info.path} has no chips yet; ingest or import some first")
    return db.create_table(TABLE_NAME, schema=chips_schema(info.dim, patch_dim=info.patch_dim))


def _table_names(db) -> list[str]:
    listing = db.list_tables()
    names = getattr(listing, "tables", listing)
    return list(names)
