"""The app as a public surface: hostile uploads and labels files are refused with clear words,
bounded before decoding; a real `clay-search app` server (loopback, driven by Chromium) shows no
traceback or server path for them; `--host 0.0.0.0` warns."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import rasterio
from corpus.make_corpus import tiff_header
from rasterio.transform import from_origin

from clay_search.app.upload import UploadError, validate_labels_file, validate_upload


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` px (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 4096)) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiff(dtype: str = "uint8", count: int = 3, size: int = 64, **kw) -> bytes:
    buf = io.BytesIO()
    data = np.ones((count, size, size), dtype=np.float32).astype(dtype)
    with rasterio.MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=size,
            height=size,
            count=count,
            dtype=dtype,
            crs="EPSG:32614",
            transform=from_origin(500_000, 5_200_000, 10, 10),
            **kw,
        ) as dst:
            dst.write(data)
        buf.write(mem.read())
    return buf.getvalue()


HOSTILE = [
    ("bomb.png", _png_header(100_000, 100_000), "at most 1024x1024"),
    ("huge.tif", tiff_header(2048, 1_073_741_824, 1_073_741_824), "at most 1024x1024"),
    ("slc.tif", _tiff("complex64", count=1), "complex-valued"),
    ("many_bands.tif", _tiff(count=40, size=16), "40 bands"),
    (
        "big_values.tif",
        _tiff("float64", count=16, size=1024, tiled=True, compress="deflate"),
        "decodes to 128 MiB",
    ),
    (
        "fake.tif",
        b"<VRTDataset><VRTRasterBand subClass='VRTRawRasterBand'/></VRTDataset>",
        "first bytes match neither",
    ),
    ("notes.png", b"just text", "first bytes match neither"),
    ("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (6 * 1024 * 1024), "the limit is 5 MB"),
    ("../../etc/passwd.tif", b"II*\x00" + b"\0" * 100, "passwd.tif is not a readable GeoTIFF"),
]


@pytest.mark.parametrize(("name", "data", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_uploads_are_refused_before_decoding(name, data, words):
    with pytest.raises(UploadError) as e:
        validate_upload(name, data)
    msg = str(e.value)
    assert words in msg, msg
    assert "/etc/" not in msg and "Traceback" not in msg


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"x" * (3 * 1024 * 1024), "at most 2 MB"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b"{not json", "not valid JSON"),
        (json.dumps({"positives": [{"$gt": ""}]}).encode(), "list of chip-id strings"),
        (json.dumps({"positives": ["a" * 500]}).encode(), "over-long chip id"),
        (json.dumps({"rows": []}).encode(), "no 'positives' or 'negatives'"),
        (json.dumps({"positives": ["abc", "zzz"]}).encode(), "not in this store"),
    ],
)
def test_hostile_labels_files_are_refused(data, words):
    with pytest.raises(UploadError, match=words):
        validate_labels_file(data, known_ids={"abc"})


def test_good_labels_file_restores():
    doc = {"positives": ["a", "b"], "negatives": ["c"], "store": "/srv/x", "rounds": []}
    assert validate_labels_file(json.dumps(doc).encode(), {"a", "b", "c"}) == {
        "a": 1,
        "b": 1,
        "c": -1,
    }


def test_server_flags_bound_uploads_and_hide_error_details(tmp_path):
    from clay_search.cli.app import streamlit_command

    cmd = " ".join(streamlit_command(tmp_path, "127.0.0.1", 8501))
    assert "--server.maxUploadSize 5" in cmd and "--client.showErrorDetails false" in cmd
    assert "--server.enableXsrfProtection true" in cmd


def test_public_host_warns(tmp_path):
    """`--host 0.0.0.0` says the app has no login. The test holds the port (bound, never
    listening), so the real server fails to bind right after the warning: nothing is served."""
    import socket

    store = tmp_path / "s"
    store.mkdir()
    (store / "store.json").write_text(
        json.dumps(
            {
                "format": "clay-search-store",
                "version": 1,
                "model_id": "m",
                "dim": 8,
                "patch_dim": None,
                "created": "",
            }
        )
    )
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        port = held.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "clay_search.cli.main",
                "app",
                "--store",
                str(store),
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode != 0
    assert "Warning: --host 0.0.0.0" in r.stderr and "no login" in r.stderr, r.stderr[-2000:]
