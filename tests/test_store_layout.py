"""Store folder creation and the model-id guard."""

from __future__ import annotations

import json

import pytest

from clay_search.errors import StoreMismatchError, StoreNotFoundError
from clay_search.schema import TABLE_NAME
from clay_search.store import open_chips_table, open_or_create_store, read_store_info


def test_create_then_reopen(tmp_path):
    info = open_or_create_store(tmp_path / "s", "model-a", 16)
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["model_id"] == "model-a" and meta["dim"] == 16 and meta["patch_dim"] is None
    assert (tmp_path / "s" / "lancedb").is_dir() and (tmp_path / "s" / "index").is_dir()
    again = open_or_create_store(tmp_path / "s", "model-a", 16)
    assert again.created == info.created
    table = open_chips_table(info)
    assert table.name == TABLE_NAME
    assert table.schema.field("embedding").type.list_size == 16


def test_other_model_or_dim_refused(tmp_path):
    open_or_create_store(tmp_path / "s", "model-a", 16)
    with pytest.raises(StoreMismatchError, match="model-a"):
        open_or_create_store(tmp_path / "s", "model-b", 16)
    with pytest.raises(StoreMismatchError, match="16-dimensional"):
        open_or_create_store(tmp_path / "s", "model-a", 32)


def test_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="store.json"):
        read_store_info(tmp_path / "nothing")
    info = open_or_create_store(tmp_path / "s", "m", 4)
    with pytest.raises(StoreNotFoundError, match="no chips yet"):
        open_chips_table(info, create=False)


def _rows(prefix: str, n: int, dim: int):
    import numpy as np
    import pyarrow as pa

    from clay_search.schema import chips_schema

    schema = chips_schema(dim, patch_dim=None)
    vecs = np.random.default_rng(0).random(n * dim, dtype=np.float32)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols["chip_id"] = pa.array([f"{prefix}-{k}" for k in range(n)])
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vecs), dim)
    return pa.table(cols, schema=schema)


def test_racing_create_loses_nothing(tmp_path, monkeypatch):
    """Two writers creating a new object-store store's table in the same instant: Lance commits
    the later create as an overwrite of the earlier table (seen against a real S3 server, where
    no file lock orders the writers). Played here in its worst order: writer A creates and
    commits rows, then B's create lands on top and empties the table. B puts A's rows back, A's
    next append (refused as incompatible with the overwrite) is retried on the new version, and
    the table ends with every row once."""
    import lancedb

    from clay_search.store import layout
    from clay_search.store.layout import append_rows

    info = open_or_create_store(tmp_path / "s", "m", 4)
    a = open_chips_table(info)
    assert int(a.version) == 1
    append_rows(info, a, _rows("a1", 3, 4), what="A's first commit")

    # B listed no table before A created it; its create then lands as an overwrite
    real = lancedb.connect(info.lancedb_path)
    monkeypatch.setattr(layout, "_table_names", lambda db: [])
    created = []

    class RacingDB:
        def create_table(self, name, schema):
            created.append(name)
            return real.create_table(name, schema=schema, mode="overwrite")

        def open_table(self, name):
            return real.open_table(name)

    monkeypatch.setattr(layout, "connect_lancedb", lambda path: RacingDB())
    b = open_chips_table(info)
    monkeypatch.undo()
    assert created == [TABLE_NAME] and int(b.version) > 2
    assert sorted(b.to_arrow().column("chip_id").to_pylist()) == ["a1-0", "a1-1", "a1-2"]

    append_rows(info, a, _rows("a2", 2, 4), what="A's second commit")  # A's stale handle
    append_rows(info, b, _rows("b1", 2, 4), what="B's first commit")
    ids = open_chips_table(info).to_arrow().column("chip_id").to_pylist()
    assert sorted(ids) == ["a1-0", "a1-1", "a1-2", "a2-0", "a2-1", "b1-0", "b1-1"]
