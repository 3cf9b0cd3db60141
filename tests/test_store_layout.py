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
