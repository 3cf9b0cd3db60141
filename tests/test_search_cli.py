"""`clay-search search`, `chips` and `index` end to end (on the sample store), and the CLI's
one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import clay_search
from clay_search.cli.main import app


@pytest.fixture(scope="module")
def store_path(sample_store):
    return sample_store


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


def test_index_sync_option(store_path, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(store_path, copy)
    r = CliRunner().invoke(app, ["index", "--store", str(copy), "--sync"])
    assert r.exit_code == 0 and json.loads(r.output)["action"] == "unchanged"


def test_chips_lists_full_ids_with_filters(store_path, tmp_path):
    store = clay_search.connect(store_path)
    want = store.chips(label="River").chip_ids
    out = tmp_path / "rivers.csv"
    r = CliRunner().invoke(
        app, ["chips", "--store", str(store_path), "--label", "River", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert all(c in r.output for c in want)  # full ids, never cut
    assert f"{len(want)} of {len(store)} chips match" in r.output
    assert "removed by label: 27" in r.output  # what the filter removed
    import pandas as pd

    assert list(pd.read_csv(out)["chip_id"]) == want
    r = CliRunner().invoke(app, ["chips", "--store", str(store_path), "--limit", "4"])
    assert r.exit_code == 0 and "first 4" in r.output
    assert all(c in r.output for c in store.chips(limit=4).chip_ids)


def test_prefixes_and_the_hint(store_path, tmp_path):
    store = clay_search.connect(store_path)
    ids = store.chips().chip_ids
    out = tmp_path / "r.geojson"
    r = CliRunner().invoke(
        app, ["search", "--store", str(store_path), "-p", ids[0][:8], "-k", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    got = [f["properties"]["chip_id"] for f in json.loads(out.read_text())["features"]]
    assert got == store.search([ids[0]], k=3).chip_ids
    r = CliRunner().invoke(app, ["search", "--store", str(store_path), "-p", "zzzzzzzz"])
    assert r.exit_code == 2 and "clay-search chips --store" in r.output
    assert "clay-search info" not in r.output


def test_out_format_is_checked_before_searching(tmp_path):
    # the store does not even exist: the bad --out is what gets reported
    r = CliRunner().invoke(
        app, ["search", "--store", str(tmp_path / "none"), "-p", "x", "--out", "x.txt"]
    )
    assert r.exit_code == 2 and "unknown output type '.txt'" in r.output
    r = CliRunner().invoke(app, ["chips", "--store", str(tmp_path / "none"), "--out", "a.xlsx"])
    assert r.exit_code == 2 and "unknown output type" in r.output


def test_image_sensor_is_not_the_filter(store_path, sample_dir, nano_weights):
    from store_fixtures import EUROSAT_BANDS, eurosat_files

    tif = eurosat_files(sample_dir)[3]
    args = ["search", "--store", str(store_path), "--image", str(tif), "--weights",
            str(nano_weights), "--bands", ",".join(EUROSAT_BANDS), "--image-sensor",
            "sentinel-2-l2a", "-k", "3"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "3 results" in r.output, r.output
    r = CliRunner().invoke(app, [*args, "--sensor", "naip"])  # the filter: nothing matches
    assert r.exit_code == 0 and "0 results" in r.output, r.output
    assert "removed by sensor: 30" in r.output


def test_missing_labels_print_as_empty_cells(store_path, tmp_path):
    import pyarrow as pa

    from clay_search.store import open_chips_table, read_store_info, sync_index

    copy = tmp_path / "s"
    shutil.copytree(store_path, copy)
    table = open_chips_table(read_store_info(copy))
    row = table.search().limit(1).to_arrow()
    twin = row.column("chip_id")[0].as_py()
    row = row.set_column(0, "chip_id", pa.array(["unlabelled-1"]))
    i = row.schema.get_field_index("label")
    row = row.set_column(i, "label", pa.nulls(1, pa.string()))
    table.add(row)
    sync_index(copy)
    # the same embedding as its twin: the first hit of a search for the twin
    r = CliRunner().invoke(app, ["search", "--store", str(copy), "-p", twin, "-k", "3"])
    assert r.exit_code == 0 and "unlabelled-1" in r.output
    assert "nan" not in r.output and "None" not in r.output
    overview = clay_search.connect(copy).overview()
    assert len(overview["labels"]) == 10 and overview["unlabelled"] == 1


def test_user_errors_are_one_line_and_verbose_shows_tracebacks(store_path, tmp_path):
    runner = CliRunner()
    bad = ["ingest", "sample/naip", "--store", str(tmp_path / "s"), "--precision", "bad"]
    r = runner.invoke(app, bad)
    assert r.exit_code == 2 and "precision" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, [*bad, "--verbose"])
    assert r.exit_code == 2 and "Traceback" in r.output
    r = runner.invoke(app, ["--verbose", "search", "--store", str(store_path), "-p", "nope"])
    assert r.exit_code == 2 and "Traceback" in r.output and "UnknownChipError" in r.output
    some = clay_search.connect(store_path).chips().chip_ids[0]
    r = runner.invoke(app, ["search", "--store", str(store_path), "-p", some, "--min-pred-score",
                            "0.5"])  # fmt: skip
    assert r.exit_code == 2 and "pred_score" in r.output and "Traceback" not in r.output


def test_info_takes_the_sensor_name_as_argument():
    r = CliRunner().invoke(app, ["info", "landsat-c2l1"])
    assert r.exit_code == 0 and "landsat-c2l1" in r.output and "B1" in r.output


def test_usage_errors_are_one_line_from_the_real_command(tmp_path):
    """The installed entry point (``main``) prints parse errors in one line too, exit 2."""
    import subprocess
    import sys

    def run(*args):
        cmd = [sys.executable, "-m", "clay_search.cli.main", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    r = run("search", "--store", str(tmp_path), "-p", "x", "-k", "abc")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "'-k'" in r.stderr and "--help" in r.stderr
    r = run("search", "--store", str(tmp_path / "none"), "-p", "x")
    assert (
        r.returncode == 2
        and r.stderr.strip().count("\n") == 0
        and "no clay-search store" in (r.stderr)
    )
    assert run("--help").returncode == 0
