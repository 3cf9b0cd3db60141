"""Sensors, bands, dates and thumbnails that used to go silently wrong (issue 10, items 3-5),
and the options defined once (issue 11)."""

from __future__ import annotations

import inspect
import json
import shutil
from datetime import UTC, datetime
from io import BytesIO

import numpy as np
import pytest
import rasterio
from PIL import Image
from test_ingest_helpers import read_chips
from typer.testing import CliRunner

from clay_search.dates import parse_period, to_utc
from clay_search.errors import (
    IngestOptionError,
    InvalidDateError,
    QueryError,
    SourceNotFoundError,
)
from clay_search.ingest import ingest, run
from clay_search.ingest.datetimes import (
    DatesFile,
    date_from_names,
    date_from_tags,
    parse_datetime,
)
from clay_search.ingest.params import IngestParams

NAIP = "m_4709963_se_14_1_20200831_crop.tif"


# -- the one date parser -------------------------------------------------------------------------
def test_one_date_parser_years_months_days_times():
    y = parse_period("1985")
    assert (y.precision, y.start, y.end.year) == ("year", datetime(1985, 1, 1, tzinfo=UTC), 1985)
    assert y.midpoint == datetime(1985, 7, 2, 12, tzinfo=UTC)
    m = parse_period("2017-10")
    assert m.precision == "month" and m.midpoint == datetime(2017, 10, 16, 12, tzinfo=UTC)
    assert parse_period("20171015").precision == "day"
    assert parse_period("2017:10:15 10:11:12").start == datetime(
        2017, 10, 15, 10, 11, 12, tzinfo=UTC
    )
    assert to_utc("2020", end=True) == datetime(2020, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert to_utc("2020-05-18T12:00:00+02:00").hour == 10
    # one error type, caught as a filter error and as an ingest option error
    with pytest.raises(InvalidDateError, match="ISO 8601") as e:
        parse_period("18/05/2020", what="--datetime")
    assert isinstance(e.value, QueryError) and isinstance(e.value, IngestOptionError)
    assert "--datetime" in str(e.value)


def test_datetime_option_accepts_a_year_and_a_month():
    assert parse_datetime("1985") == datetime(1985, 7, 2, 12, tzinfo=UTC)
    assert parse_datetime("1985-07").month == 7


@pytest.mark.parametrize(
    ("parts", "value", "precision", "origin"),
    [
        (["1985"], datetime(1985, 7, 2, 12, tzinfo=UTC), "year", "file name"),
        (["scene_2017-10-15"], datetime(2017, 10, 15, tzinfo=UTC), "day", "file name"),
        (["scene_2017_10_15_b"], datetime(2017, 10, 15, tzinfo=UTC), "day", "file name"),
        (["tile_20171015"], datetime(2017, 10, 15, tzinfo=UTC), "day", "file name"),
        (["mosaic_2017-10"], datetime(2017, 10, 16, 12, tzinfo=UTC), "month", "file name"),
        (["x", "1999"], datetime(1999, 7, 2, 12, tzinfo=UTC), "year", "folder name '1999'"),
    ],
)
def test_dates_from_file_name_patterns(parts, value, precision, origin):
    got = date_from_names(parts)
    assert (got.value, got.precision, got.origin) == (value, precision, origin)


@pytest.mark.parametrize("name", ["AnnualCrop_1227", "Forest_2001", "m_4709963_se", "20171345"])
def test_names_that_are_no_dates(name):
    assert date_from_names([name]) is None


def test_dates_from_geotiff_tags():
    got = date_from_tags(
        {"TIFFTAG_DATETIME": "2016:08:16 10:00:00", "ACQUISITIONDATE": "2016-08-15"}
    )
    assert got.value == datetime(2016, 8, 15, tzinfo=UTC) and got.origin.endswith("ACQUISITIONDATE")
    assert date_from_tags({"DATE": "not a date"}) is None


def _series(sample_dir, tmp_path, names):
    """The sample NAIP crop under other names (a series without product ids)."""
    d = tmp_path / "series"
    d.mkdir()
    src = sample_dir / "naip" / NAIP
    for n in names:
        shutil.copy(src, d / n)
    return d


def test_series_dates_from_names_tags_and_a_dates_file(sample_dir, nano_embedder, tmp_path):
    d = _series(
        sample_dir, tmp_path, ["1985.tif", "field_2017-10-15.tif", "tagged.tif", "listed.tif"]
    )
    with rasterio.open(d / "tagged.tif", "r+") as ds:
        ds.update_tags(ACQUISITIONDATE="2012-07-31")
    (tmp_path / "dates.csv").write_text("file,date\nlisted.tif,2014-07\nghost.tif,2001\n")
    report = run(
        [d], tmp_path / "s", embedder=nano_embedder, sensor="naip", dates=tmp_path / "dates.csv"
    )
    assert report.ok, [s.error for s in report.failed]
    by = {s.source.rsplit("/", 1)[-1]: s for s in report.sources_detail}
    assert (by["1985.tif"].datetime_precision, by["1985.tif"].datetime_from) == (
        "year",
        "file name",
    )
    assert by["field_2017-10-15.tif"].datetime.startswith("2017-10-15")
    assert by["tagged.tif"].datetime_from == "GeoTIFF tag ACQUISITIONDATE"
    assert by["listed.tif"].datetime_from == "--dates dates.csv"
    assert by["listed.tif"].datetime_precision == "month"
    assert any("ghost.tif" in n for n in report.notes)  # an entry that matched nothing
    df = read_chips(tmp_path / "s")
    years = {d.year for d in df["datetime"]}
    assert years == {1985, 2017, 2012, 2014}
    manifest = json.loads(open(report.manifest).read())
    srcs = {s["source"].rsplit("/", 1)[-1]: s for s in manifest["sources"]}
    assert srcs["1985.tif"]["datetime_from"] == "file name"
    assert srcs["1985.tif"]["datetime"].startswith("1985-07-02T12:00")
    # one series (one sensor, band set, data type): one set of statistics for all four files
    (norm,) = report.normalisers.values()
    assert norm["scope"] == "series" and len(norm["sources"]) == 4
    # per file, as before, when asked
    r2 = run(
        [d],
        tmp_path / "s2",
        embedder=nano_embedder,
        sensor="naip",
        stats="source",
        stats_scope="source",
    )
    assert len(r2.normalisers) == 4


def test_cli_says_per_source_which_date(sample_dir, nano_weights, tmp_path):
    from clay_search.cli.main import app

    d = _series(sample_dir, tmp_path, ["1985.tif", "2001.tif"])
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(d),
            "--store",
            str(tmp_path / "s"),
            "--weights",
            str(nano_weights),
            "--quiet",
            "--sensor",
            "naip",
        ],
    )
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "1985 (year, from file name)" in out and "2001 (year, from file name)" in out
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(d),
            "--store",
            str(tmp_path / "t"),
            "--weights",
            str(nano_weights),
            "--quiet",
            "--sensor",
            "naip",
            "--datetime",
            "1990",
        ],
    )
    assert res.exit_code == 0 and "1990 (year, from --datetime)" in " ".join(res.output.split())


def test_dates_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps({"a.tif": "yesterday"}))
    with pytest.raises(InvalidDateError, match="a.tif"):
        DatesFile(bad)
    with pytest.raises(IngestOptionError, match="does not exist"):
        DatesFile(tmp_path / "none.csv")


# -- sensors and bands ---------------------------------------------------------------------------
def _landsat7(shared_data, tmp_path):
    src = shared_data / "grass_nc_landsat7_lc" / "ne_image.tif"
    dst = tmp_path / "ne_image.tif"
    shutil.copy(src, dst)
    return dst


def test_landsat7_file_with_landsat8_sensor_is_refused(shared_data, nano_embedder, tmp_path):
    f = _landsat7(shared_data, tmp_path)
    report = run(
        [f],
        tmp_path / "s",
        embedder=nano_embedder,
        sensor="landsat-c2l1",
        bands="B1,B2,B3,B4,B5,B7",
    )
    (fail,) = report.failed
    assert "landsat-etm-c2l1" in fail.error and "B1 is coastal on landsat-c2l1" in fail.error


def test_landsat7_bands_with_its_own_sensor(shared_data, nano_embedder, tmp_path):
    f = _landsat7(shared_data, tmp_path)
    report = run(
        [f],
        tmp_path / "s",
        embedder=nano_embedder,
        sensor="landsat-etm-c2l1",
        bands="B1,B2,B3,B4,B5,B7",
    )
    assert report.ok, [s.error for s in report.failed]
    assert report.sources_detail[0].bands == ["blue", "green", "red", "nir08", "swir16", "swir22"]
    (norm,) = report.normalisers.values()
    assert norm["stats_source"] == "source"  # no TM/ETM+ statistics in Clay's table
    # without options: the GeoTIFF's SENSOR tag and band descriptions (B1_blue...) tell
    r2 = run([f], tmp_path / "s2", embedder=nano_embedder)
    assert r2.ok and r2.sources_detail[0].sensor == "landsat-etm-c2l1"
    assert r2.sources_detail[0].bands[0] == "blue"


def test_landsat_sensors_from_product_ids():
    from clay_search.model import SensorRegistry

    reg = SensorRegistry.default()
    for name, sensor in [
        ("LE07_L1TP_016035_20000523_20200918_02_T1", "landsat-etm-c2l1"),
        ("LT05_L2SP_016035_19900523_20200918_02_T1", "landsat-tm-c2l2-sr"),
        ("LC08_L1TP_224077_20200518_20200518_01_RT", "landsat-c2l1"),
        ("LC09_L2SP_224077_20220518_20220518_02_T1", "landsat-c2l2-sr"),
    ]:
        assert reg.from_hints("product", [name])[0].name == sensor
    assert (
        reg.from_hints("stac", ["landsat-7 landsat landsat-c2-l2"])[0].name == "landsat-etm-c2l2-sr"
    )
    assert reg.get("landsat-tm-c2l1").band("B1").name == "blue"
    assert reg.get("landsat-c2l1").band("B1").name == "coastal"


def test_duplicate_bands_are_an_error(sample_dir, nano_embedder, tmp_path):
    with pytest.raises(IngestOptionError, match="more than once"):
        run([sample_dir / "naip"], tmp_path / "s", embedder=nano_embedder, bands="red,red,red,red")
    # the same band by name and by id
    report = run(
        [sample_dir / "naip" / NAIP],
        tmp_path / "s",
        embedder=nano_embedder,
        sensor="naip",
        bands="red,B1,green,blue",
    )
    assert "more than once" in report.failed[0].error


def test_dropped_band_is_said_on_screen(sample_dir, nano_weights, tmp_path):
    from clay_search.cli.main import app

    src = next((sample_dir / "eurosat_ms" / "River").glob("*.tif"))
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(src),
            "--store",
            str(tmp_path / "s"),
            "--weights",
            str(nano_weights),
            "--quiet",
            "--chip-size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "dropped B01, B09, B10" in " ".join(res.output.split())  # rich wraps lines


# -- thumbnails, chip size, missing files ---------------------------------------------------------
def _colourful(png: bytes) -> bool:
    a = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return bool(
        np.abs(a[..., 0] - a[..., 1]).mean() > 1 or np.abs(a[..., 1] - a[..., 2]).mean() > 1
    )


def test_store_without_blue_gets_a_false_colour_thumbnail(sample_dir, nano_embedder, tmp_path):
    src = sample_dir / "naip" / NAIP
    with rasterio.open(src) as ds:
        data, profile = ds.read(), ds.profile
    profile.update(count=2)
    two = tmp_path / "in" / "m_4709963_se_14_1_20200831_rn.tif"
    two.parent.mkdir()
    with rasterio.open(two, "w", **profile) as dst:
        dst.write(data[[0, 3]])  # red, nir
    rgbn = tmp_path / "in2" / "m_4709963_se_14_1_20200831_gnr.tif"
    rgbn.parent.mkdir()
    profile.update(count=3)
    with rasterio.open(rgbn, "w", **profile) as dst:
        dst.write(data[[3, 0, 1]])  # nir, red, green: no blue
    report = run(
        [rgbn], tmp_path / "s", embedder=nano_embedder, sensor="naip", bands="nir,red,green"
    )
    assert report.ok and any(
        "false colour nir,red,green" in n for n in report.sources_detail[0].notes
    )
    df = read_chips(tmp_path / "s")
    assert all(_colourful(t) for t in df["thumbnail"])
    r2 = run(
        [rgbn],
        tmp_path / "s2",
        embedder=nano_embedder,
        sensor="naip",
        bands="nir,red,green",
        thumbnail_bands="red",
    )
    assert any("--thumbnail-bands red" in n for n in r2.sources_detail[0].notes)
    assert not any(_colourful(t) for t in read_chips(tmp_path / "s2")["thumbnail"])
    with pytest.raises(IngestOptionError, match="3 bands"):
        IngestParams.from_options(thumbnail_bands="red,green")


def test_chip_larger_than_the_image_says_so(sample_dir, nano_embedder, tmp_path):
    report = run(
        [sample_dir / "naip" / NAIP], tmp_path / "s", embedder=nano_embedder, chip_size=1024
    )
    (fail,) = report.failed
    assert (
        "larger than the image (256x256 px)" in fail.error
        and "nodata" not in fail.error.split(":")[0]
    )
    assert "--chip-size 256" in fail.error


def test_missing_file_creates_no_store(sample_dir, nano_weights, tmp_path):
    from clay_search.cli.main import app

    store = tmp_path / "store"
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(sample_dir / "naip"),
            str(tmp_path / "nope.tif"),
            "--store",
            str(store),
            "--weights",
            str(nano_weights),
            "--quiet",
        ],
    )
    assert res.exit_code == 2 and "nope.tif does not exist" in res.output
    assert "Traceback" not in res.output
    assert not store.exists()
    with pytest.raises(SourceNotFoundError):
        ingest([tmp_path / "nope.tif"], store, weights=nano_weights)
    assert not store.exists()


# -- options defined once ------------------------------------------------------------------------
def test_options_are_defined_once_for_the_cli_and_python():
    from clay_search.cli.ingest import ingest as cli_ingest

    fields = {f.name: f for f in IngestParams.option_fields()}
    py = inspect.signature(ingest).parameters
    cli = inspect.signature(cli_ingest).parameters
    for name, f in fields.items():
        assert py[name].default == f.default and py[name].kind is inspect.Parameter.KEYWORD_ONLY
        if f.metadata.get("cli", True):
            assert cli[name].default == f.default
    assert run is ingest
    with pytest.raises(TypeError, match="chip_sise"):
        IngestParams.from_options(chip_sise=64)
    with pytest.raises(IngestOptionError, match="--max-nodata"):
        IngestParams.from_options(max_nodata=2)
    with pytest.raises(IngestOptionError, match="--stats-scope"):
        IngestParams.from_options(stats_scope="planet")


def test_unknown_option_names_on_the_command_line_use_the_same_checks(
    nano_weights, tmp_path, sample_dir
):
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
            "--bands",
            "red,red,red,red",
        ],
    )
    assert res.exit_code == 2 and "more than once" in res.output
    assert not (tmp_path / "s").exists()


def test_naip_ten_dates_share_one_normaliser(shared_data, nano_embedder, tmp_path):
    files = sorted((shared_data / "opengeos" / "naip").glob("*.tif"))
    assert len(files) == 10
    report = run(files, tmp_path / "s", embedder=nano_embedder, chip_size=256, stats="source")
    assert report.ok, [s.error for s in report.failed]
    (norm,) = report.normalisers.values()  # one set of statistics over the ten dates
    assert norm["scope"] == "series" and len(norm["sources"]) == 10
    assert "shared by the 10 sources" in norm["shared"]
    assert {s.datetime_from for s in report.sources_detail} == {"file name (product id)"}
    df = read_chips(tmp_path / "s")
    assert df["datetime"].dt.year.nunique() == 10
    per_file = run(
        files[:2],
        tmp_path / "t",
        embedder=nano_embedder,
        chip_size=256,
        stats="source",
        stats_scope="source",
    )
    means = [tuple(n["mean"]) for n in per_file.normalisers.values()]
    assert len(means) == 2 and means[0] != means[1]  # each date its own: change hidden


def test_series_stretch_keeps_flat_water_dark(sample_dir, nano_embedder, tmp_path):
    """A near-uniform dark chip (water) next to textured land: with the series' stretch its
    thumbnail stays dark and flat; a per-chip stretch would spread its noise over 0-255."""
    rng = np.random.default_rng(0)
    with rasterio.open(sample_dir / "naip" / NAIP) as ds:
        profile = ds.profile
        land = ds.read()
    img = land.copy()
    img[:, :, 128:] = 20 + rng.integers(0, 3, size=img[:, :, 128:].shape, dtype=np.uint8)
    f = tmp_path / "in" / "m_4709963_se_14_1_20200831_lake.tif"
    f.parent.mkdir()
    with rasterio.open(f, "w", **profile) as dst:
        dst.write(img)
    run([f], tmp_path / "s", embedder=nano_embedder, chip_size=64)
    df = read_chips(tmp_path / "s")
    cols = [json.loads(w)["col_off"] for w in df["window"]]
    water = [t for t, c in zip(df["thumbnail"], cols, strict=True) if c >= 128]
    pix = np.stack([np.asarray(Image.open(BytesIO(t)).convert("RGB")) for t in water])
    assert pix.mean() < 60 and pix.std() < 20, (pix.mean(), pix.std())
