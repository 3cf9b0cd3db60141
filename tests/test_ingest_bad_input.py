"""Bad input: each bad source is reported with its reason, the others are written, exit != 0."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from test_ingest_helpers import (
    read_chips,
)
from typer.testing import CliRunner

from clay_search.errors import (
    BandMismatchError,
    MissingCRSError,
    NoDataError,
    SourceNotFoundError,
    SourceReadError,
)
from clay_search.ingest import run


@pytest.fixture
def bad_folder(sample_dir, tmp_path):
    """One good NAIP crop and one file for each kind of bad input, built from real imagery."""
    good = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    d = tmp_path / "inputs"
    d.mkdir()
    naip = "m_4709963_se_14_1_20200831_"  # NAIP product names tell the sensor
    shutil.copy(good, d / f"{naip}good.tif")
    (d / "corrupt.tif").write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))
    data = good.read_bytes()
    (d / f"{naip}truncated.tif").write_bytes(data[: len(data) // 3])
    (d / "notes.tif").write_text("these are field notes, not an image\n")
    with rasterio.open(good) as src:
        arr, profile = src.read(), src.profile
    no_crs = {k: v for k, v in profile.items() if k not in ("crs", "transform")}
    with rasterio.open(d / f"{naip}no_crs.tif", "w", **no_crs) as dst:
        dst.write(arr)
    eurosat = next((sample_dir / "eurosat_ms" / "River").glob("*.tif"))
    with rasterio.open(eurosat) as src:
        five, p5 = src.read()[:5], src.profile
    p5.update(count=5)
    with rasterio.open(d / "five_bands.tif", "w", **p5) as dst:
        dst.write(five)
    with rasterio.open(d / f"{naip}all_nodata.tif", "w", **profile) as dst:
        dst.write(np.zeros_like(arr))
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "lost-item",
        "properties": {"datetime": "2020-08-31T00:00:00Z", "constellation": "naip"},
        "geometry": None,
        "links": [],
        "assets": {
            "image": {"href": "./lost/missing.tif", "type": "image/tiff", "roles": ["data"]}
        },
    }
    (tmp_path / "item.json").write_text(json.dumps(item))
    return d


EXPECTED = {
    "corrupt.tif": SourceReadError,
    "notes.tif": SourceReadError,
    "no_crs.tif": MissingCRSError,
    "five_bands.tif": BandMismatchError,
    "all_nodata.tif": NoDataError,
    "missing.tif": SourceNotFoundError,
}


def test_each_bad_source_reported_others_written(bad_folder, nano_embedder, tmp_path):
    store = tmp_path / "store"
    report = run([bad_folder, tmp_path / "item.json"], store, embedder=nano_embedder)
    failed = {s.source.rsplit("/", 1)[-1].split("_")[-1]: s.error for s in report.failed}
    for name, err in EXPECTED.items():
        key = name.split("_")[-1]
        assert key in failed, f"{name} was not reported: {failed}"
        assert failed[key].startswith(err.__name__), failed[key]
    assert "no CRS" in failed["crs.tif"] and "--bands" in failed["bands.tif"]
    # the truncated file opens (its header is intact) and fails while reading
    assert failed["truncated.tif"].startswith("SourceReadError")
    assert "good.tif" not in failed
    df = read_chips(store)
    assert len(df) >= 16 and df["source"].str.endswith("good.tif").sum() == 16
    manifest = json.loads(open(report.manifest).read())
    assert manifest["status"] == "failed"
    assert sum(1 for s in manifest["sources"] if s["error"]) == len(EXPECTED) + 1


def test_cli_exit_code_and_fail_fast(bad_folder, nano_weights, tmp_path):
    from clay_search.cli.main import app

    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "ingest",
            str(bad_folder),
            "--store",
            str(tmp_path / "a"),
            "--weights",
            str(nano_weights),
            "--quiet",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "failed:" in res.output and "good.tif" not in res.output.split("failed:", 1)[1]
    res = runner.invoke(
        app,
        [
            "ingest",
            str(bad_folder),
            "--store",
            str(tmp_path / "b"),
            "--weights",
            str(nano_weights),
            "--quiet",
            "--fail-fast",
        ],
    )
    assert res.exit_code == 2 and res.output.count("Error:") == 1
    assert "Traceback" not in res.output


def test_cli_unknown_sensor_is_one_clear_line(sample_dir, nano_weights, tmp_path):
    from clay_search.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(sample_dir / "naip"),
            "--store",
            str(tmp_path / "s"),
            "--weights",
            str(nano_weights),
            "--sensor",
            "sentinel-7",
            "--quiet",
        ],
    )
    assert res.exit_code == 2
    assert "unknown sensor 'sentinel-7'" in res.output and "naip" in res.output
    assert "Register one" in res.output


def test_bad_chip_size_and_missing_weights(sample_dir, nano_embedder, tmp_path):
    from clay_search.errors import CheckpointNotFoundError, IngestOptionError

    with pytest.raises(IngestOptionError, match="multiple of the model's patch size 8"):
        run([sample_dir], tmp_path / "s", embedder=nano_embedder, chip_size=60)
    with pytest.raises(CheckpointNotFoundError):
        run([sample_dir], tmp_path / "s", weights=tmp_path / "no-such-weights")


def test_nodata_override_skips_a_black_collar_the_file_does_not_declare(
    sample_dir, nano_weights, tmp_path
):
    """A scene with a black collar and no nodata value: its collar chips are ingested as
    images unless ``--nodata 0`` says what the black is."""
    from clay_search.cli.main import app

    good = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    collar = tmp_path / "in" / "m_4709963_se_14_1_20200831_collar.tif"
    collar.parent.mkdir()
    with rasterio.open(good) as src:
        data, profile = src.read(), src.profile
    data[:, :, : data.shape[2] // 2] = 0  # the west half black
    profile.pop("nodata", None)
    with rasterio.open(collar, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(collar) as chk:
        assert chk.nodata is None
    runner = CliRunner()
    args = [
        "ingest",
        str(collar),
        "--weights",
        str(nano_weights),
        "--quiet",
        "--chip-size",
        "64",
        "--stride",
        "64",
    ]
    res = runner.invoke(app, [*args, "--store", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--store", str(tmp_path / "masked"), "--nodata", "0"])
    assert res.exit_code == 0, res.output
    plain, masked = read_chips(tmp_path / "plain"), read_chips(tmp_path / "masked")
    cols = data.shape[2] // 64 + (data.shape[2] % 64 > 0)
    assert len(masked) < len(plain) and len(plain) - len(masked) >= cols // 2 - 1
    assert set(masked["chip_id"]) < set(plain["chip_id"])  # the same ids for the rest
    west = json_windows(masked)
    assert all(w["col_off"] + 32 >= data.shape[2] // 2 for w in west)  # none mostly black


def json_windows(df) -> list[dict]:
    """The ``window`` column parsed."""
    return [json.loads(w) for w in df["window"]]
