"""`clay-search search` and `clay-search index` end to end."""

from __future__ import annotations

import json
import shutil

import pytest
from store_fixtures import cached_store
from typer.testing import CliRunner

import clay_search
from clay_search.cli.main import app

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def store_path(shared_data, tmp_path_factory):
    return cached_store(tmp_path_factory, shared_data)


def test_search_writes_geojson(store_path, tmp_path):
    store = clay_search.connect(store_path)
    ids = store.chips().chip_ids
    out = tmp_path / "r.geojson"
    result = CliRunner().invoke(
        app,
        [
            "search",
            "--store",
            str(store_path),
            "--positive",
            ids[0],
            "--positive",
            ids[1],
            "--negative",
            ids[2],
            "--bbox",
            "-10,30,40,65",
            "--start",
            "2018-01-01",
            "--end",
            "2021-12-31",
            "-k",
            "7",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    got = [f["properties"]["chip_id"] for f in doc["features"]]
    expect = store.search(
        ids[:2], [ids[2]], k=7, bbox=(-10, 30, 40, 65), start="2018-01-01", end="2021-12-31"
    ).chip_ids
    assert got == expect


def test_search_errors_are_one_line(store_path):
    r = CliRunner().invoke(app, ["search", "--store", str(store_path), "--positive", "nope"])
    assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        app, ["search", "--store", str(store_path), "--positive", "x", "--bbox", "1,2,3"]
    )
    assert r.exit_code == 2 and "bbox" in r.output


def test_index_check_and_rebuild(store_path, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(store_path, copy)
    runner = CliRunner()
    ok = runner.invoke(app, ["index", "--store", str(copy), "--check"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    from clay_search.store import open_chips_table, read_store_info

    table = open_chips_table(read_store_info(copy))
    victim = clay_search.connect(copy).chips().chip_ids[0]
    table.delete(f"chip_id = '{victim}'")
    bad = runner.invoke(app, ["index", "--store", str(copy), "--check"])
    assert bad.exit_code == 1 and victim in bad.output
    fixed = runner.invoke(app, ["index", "--store", str(copy), "--rebuild"])
    assert fixed.exit_code == 0 and '"rebuilt"' in fixed.output
    assert runner.invoke(app, ["index", "--store", str(copy), "--check"]).exit_code == 0
