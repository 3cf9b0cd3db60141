"""Upload validation of query chips (app/upload.py): formats, sizes, corrupt files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from clay_search.app.upload import (
    MAX_SIDE_PX,
    MAX_UPLOAD_BYTES,
    UploadError,
    validate_upload,
)


def _png(w: int = 64, h: int = 64, mode: str = "RGB") -> bytes:
    arr = (np.arange(w * h * 3, dtype=np.uint32) % 251).astype(np.uint8).reshape(h, w, 3)
    im = Image.fromarray(arr, "RGB").convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _geotiff(w: int = 64, h: int = 64, bands: int = 4, crs: str | None = "EPSG:32631") -> bytes:
    data = (np.arange(bands * w * h, dtype=np.uint32) % 4000).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": bands,
        "dtype": "uint16",
    }
    if crs:
        profile.update(crs=crs, transform=Affine(10, 0, 500000, 0, -10, 5000000))
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data.reshape(bands, h, w))
        return mem.read()


def test_png_ok() -> None:
    chip = validate_upload("chip.png", _png())
    assert (chip.kind, chip.width, chip.height, chip.bands) == ("png", 64, 64, 3)
    assert chip.suffix == ".png" and "64x64" in chip.describe()


def test_geotiff_ok_and_written_to_temp(tmp_path) -> None:
    chip = validate_upload("dir/chip.TIF", _geotiff(bands=13))
    assert (chip.kind, chip.bands, chip.dtype, chip.georeferenced) == (
        "geotiff",
        13,
        "uint16",
        True,
    )
    assert chip.name == "chip.TIF"
    path = chip.write_temp(tmp_path)
    with rasterio.open(path) as ds:
        assert ds.count == 13 and ds.width == 64


def test_real_eurosat_ms_chip(shared_data) -> None:
    path = next((shared_data / "eurosat_ms" / "Industrial").glob("*.tif"))
    chip = validate_upload(path.name, path.read_bytes())
    assert chip.kind == "geotiff" and chip.bands == 13 and chip.georeferenced


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("chip.jpg", b"\xff\xd8\xff\xe0 jpeg", "not accepted"),
        ("chip", b"whatever", "no extension"),
        ("chip.png", b"", "empty"),
        ("chip.png", b"GIF89a not a png at all", "does not look like"),
        ("chip.tif", _png(), "holds a PNG"),
        ("chip.png", _png()[:200], "not a readable PNG"),
        ("chip.tif", _geotiff()[:300], "not a readable GeoTIFF"),
        ("big.png", _png(MAX_SIDE_PX + 1, 16), "at most"),
        ("tiny.png", _png(4, 4), "at least"),
        ("big.tif", _geotiff(MAX_SIDE_PX + 8, 16, bands=1), "at most"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_BYTES + 1), "limit is"),
    ],
)
def test_bad_uploads_have_clear_errors(name: str, data: bytes, words: str) -> None:
    with pytest.raises(UploadError, match=words):
        validate_upload(name, data)


def test_upload_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="are not accepted"):
        validate_upload("x.exe", b"MZ")
