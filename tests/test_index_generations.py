"""Index files as generations: readers always find a whole index, old generations are dropped,
indexes written before generations still load, and a sync never moves index.json backwards."""

from __future__ import annotations

import json
import shutil

from clay_search.index import sync as isync
from clay_search.store import connect, load_index, sync_index


def _data_files(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "index.json"}


def test_generations_kept_and_dropped(sample_store, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(sample_store, store)
    folder = store / "index"
    first = json.loads((folder / "index.json").read_text())["files"]
    sync_index(store, rebuild=True)
    second = json.loads((folder / "index.json").read_text())["files"]
    assert second != first
    assert _data_files(folder) == set(first.values()) | set(second.values())  # previous kept
    sync_index(store, rebuild=True)
    third = json.loads((folder / "index.json").read_text())["files"]
    assert _data_files(folder) == set(second.values()) | set(third.values())  # oldest dropped
    assert load_index(store).index.ntotal == len(connect(store))


def test_legacy_index_files_load(sample_store, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(sample_store, store)
    folder = store / "index"
    meta = json.loads((folder / "index.json").read_text())
    files = meta.pop("files")
    (folder / files["index"]).rename(folder / isync.INDEX_FILE)
    (folder / files["ids"]).rename(folder / isync.IDS_FILE)
    (folder / "index.json").write_text(json.dumps(meta))
    loaded = load_index(store)
    assert loaded.index.ntotal == meta["count"]
    res = connect(store).search(loaded.ids[0].as_py(), k=3)
    assert res.meta["index"] != "exact"
    sync_index(store, rebuild=True)  # the legacy files stay one sync, as the previous index
    assert isync.INDEX_FILE in _data_files(folder)
    sync_index(store, rebuild=True)
    assert isync.INDEX_FILE not in _data_files(folder)


def test_sync_does_not_move_index_back(sample_store, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(sample_store, store)
    folder = store / "index"
    meta = json.loads((folder / "index.json").read_text())
    ahead = {**meta, "table_version": meta["table_version"] + 100}
    (folder / "index.json").write_text(json.dumps(ahead))  # as if another writer got further
    loaded = load_index(store)
    isync._save(folder, loaded.index, loaded.ids, {**meta})
    assert (
        json.loads((folder / "index.json").read_text())["table_version"] == (ahead["table_version"])
    )
    assert _data_files(folder) == set(meta["files"].values())  # the loser's files are gone
