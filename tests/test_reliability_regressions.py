"""Regressions of issue 15's four failures, fast (the corpus in test_corpus.py runs them and more
under memory limits): complex rasters, headers declaring absurd sizes, STAC link loops and raw
internals in messages. Footprint regressions are in test_footprints.py."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
import rasterio
from corpus.make_corpus import tiff_header
from rasterio.transform import from_origin

from clay_search.errors import QueryError, SourceReadError
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.sources import Source, discover
from clay_search.ingest.stac import stac_sources


def _src(path) -> Source:
    return Source(kind="raster", paths=[str(path)], identity=str(path), display=str(path))


@pytest.mark.parametrize("dtype", ["complex64", "complex_int16", "complex128"])
def test_complex_rasters_are_refused_by_name(tmp_path, dtype):
    p = tmp_path / f"slc_{dtype}.tif"
    data = (np.arange(64, dtype=np.float32).reshape(1, 8, 8) * (1 + 1j)).astype(np.complex64)
    with rasterio.open(
        p,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype=dtype,
        crs="EPSG:32631",
        transform=from_origin(500_000, 0, 10, 10),
    ) as dst:
        dst.write(data)
    with pytest.raises(
        SourceReadError,
        match=rf"slc_{dtype}\.tif holds complex-valued samples "
        rf"\({dtype}\).*amplitude",
    ):
        SourceReader(_src(p)).open()


def test_query_image_array_must_be_real():
    from clay_search.store.query_image import embed_image

    with pytest.raises(QueryError, match="complex"):
        embed_image(None, np.zeros((3, 32, 32), np.complex64))


def test_header_declaring_two_tebibytes_is_refused_before_reading(tmp_path):
    """The 142-byte TIFF of issue 15 (2,048 x 1,073,741,824 px, one strip) drove ingest past
    6 GB; it is refused from its header, in a process limited to 1 GiB more address space."""
    p = tmp_path / "huge.tif"
    p.write_bytes(tiff_header(2048, 1_073_741_824, 1_073_741_824))
    assert p.stat().st_size < 300
    code = f"""
import resource, sys
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.sources import Source
vm = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))
try:
    SourceReader(Source(kind='raster', paths=[{str(p)!r}], identity='x', display='x')).open()
except Exception as e:
    print(type(e).__name__, e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SourceReadError" in out.stdout and "declares 2,048 x 1,073,741,824 px" in out.stdout
    assert "Traceback" not in out.stderr


def test_huge_tile_and_chip_count_are_bounded(tmp_path, sample_dir):
    from clay_search.ingest import run

    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(
        tiff_header(32768, 32768, 0, compression=8, data=zlib.compress(b"\0" * 2**16), tile=32768)
    )
    with pytest.raises(SourceReadError, match="blocks of 32768 x 32768 px"):
        SourceReader(_src(bomb)).open()
    many = tmp_path / "many.tif"
    many.write_bytes(
        tiff_header(200_000, 200_000, 1, compression=8, data=zlib.compress(b"\0" * 4096))
    )
    report = run(
        [many],
        tmp_path / "store",
        weights=None,
        sensor="naip",
        bands=["red"],
        chip_size=64,
        embedder=_NoModel(),
    )
    (failed,) = report.failed
    assert "9,765,625 chips" in failed.error and "split the scene" in failed.error


class _NoModel:
    """Planning refuses the source before any model call (a model call fails this test)."""

    model_id, dim, patch_size, token_dim, device = "none", 8, 8, 8, "cpu"
    normalisation = None  # no training record: ingest falls back to the sensor table

    def embed_raw(self, *a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("the model was called for a refused source")


def _catalog(cid, links):
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": cid,
        "description": cid,
        "links": links,
    }


def test_stac_link_cycle_is_reported_not_recursed(tmp_path, sample_dir):
    """Catalogs whose child links loop ended in RecursionError; now each document is read once,
    the cycle is reported with the file holding the link, and the item is still found."""
    good = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    (tmp_path / "sub").mkdir()
    (tmp_path / "catalog.json").write_text(
        json.dumps(_catalog("root", [{"rel": "child", "href": "./sub/catalog.json"}]))
    )
    (tmp_path / "sub" / "catalog.json").write_text(
        json.dumps(
            _catalog(
                "sub",
                [
                    {"rel": "child", "href": "../catalog.json"},
                    {"rel": "child", "href": "./../sub/./catalog.json"},
                    {"rel": "item", "href": "./item.json"},
                ],
            )
        )
    )
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "it",
        "geometry": None,
        "properties": {"datetime": "2020-08-31T00:00:00Z"},
        "links": [],
        "assets": {"image": {"href": str(good), "type": "image/tiff", "roles": ["data"]}},
    }
    (tmp_path / "sub" / "item.json").write_text(json.dumps(item))
    out = stac_sources(str(tmp_path / "catalog.json"))
    sources = [s for s in out if isinstance(s, Source)]
    failures = [s for s in out if not isinstance(s, Source)]
    assert [s.item_id for s in sources] == ["it"]
    assert len(failures) == 2
    for f in failures:
        assert "link cycle" in str(f.error) and "sub/catalog.json" in str(f.error)


def test_symlink_loop_in_a_folder_is_walked_once(tmp_path, sample_dir):
    good = sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif"
    d = tmp_path / "scenes" / "a"
    d.mkdir(parents=True)
    (d / good.name).write_bytes(good.read_bytes())
    (d / "up").symlink_to("..")
    out = discover([str(tmp_path / "scenes")])
    assert sum(isinstance(s, Source) for s in out) == 1
    assert any("symlink loop" in str(getattr(s, "error", "")) for s in out)


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Point", "coordinates": [1j, 2]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1j, 0], [1, 1], [0, 0]]]},
    ],
)
def test_complex_coordinates_get_a_clear_message(geometry):
    from clay_search.filters import Filters

    with pytest.raises(QueryError) as e:
        Filters(geometry=geometry)
    assert "float() argument" not in str(e.value) and "1j (complex), not a real number" in str(
        e.value
    )


def test_complex_point_search_is_a_query_error():
    from clay_search.geo import check_lonlat

    with pytest.raises(QueryError, match="not a real number"):
        check_lonlat(1j, 0)
