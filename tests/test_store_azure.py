"""Stores on Azure Blob Storage (``az://``): Microsoft's Azurite emulator on loopback.

The tests start ``azurite-blob`` (``npm install azurite``; found on PATH, in the repository's
``node_modules/.bin``, or where ``$CLAY_SEARCH_AZURITE`` points) on 127.0.0.1 and a free port,
point the Azure settings of the environment at it (``AZURE_STORAGE_USE_EMULATOR``,
``AZURITE_BLOB_STORAGE_URL``, the emulator's well-known account), and ingest, search, resume
and write concurrently into ``az://CONTAINER/PREFIX`` stores (the cases of
``tests/object_store_cases.py``, which moto's S3 runs too). They skip with a reason where
Azurite is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from gated_embedder import wait_for
from object_store_cases import (
    ObjectStoreCases,
    assert_overwrites_read_whole,
    running_server,
    server_environment,
)

from clay_search.location import RemotePath, store_location

REPO = Path(__file__).resolve().parents[1]
CONTAINER = "clay-test"
# Azurite's documented development account (public, the same in every installation)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azurite() -> str | None:
    for cand in (
        os.environ.get("CLAY_SEARCH_AZURITE"),
        shutil.which("azurite-blob"),
        str(REPO / "node_modules" / ".bin" / "azurite-blob"),
    ):
        if cand and Path(cand).is_file():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """An Azurite blob server on loopback with one container; the environment points at it."""
    exe = _azurite()
    if exe is None:
        pytest.skip("Azurite not installed (npm install azurite, or set CLAY_SEARCH_AZURITE)")
    port = _free_port()
    data = tmp_path_factory.mktemp("azurite")
    url = f"http://127.0.0.1:{port}"
    env = {
        "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
        "AZURE_STORAGE_ACCOUNT_KEY": KEY,
        "AZURE_STORAGE_USE_EMULATOR": "true",
        "AZURITE_BLOB_STORAGE_URL": url,
    }
    with (
        running_server(
            [
                exe,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(data),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
            ]
        ) as proc,
        server_environment(env),
    ):

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, "Azurite to listen", proc=proc)
        import pyarrow.fs as pfs

        pfs.AzureFileSystem(
            ACCOUNT,
            account_key=KEY,
            blob_storage_authority=f"127.0.0.1:{port}",
            blob_storage_scheme="http",
        ).create_dir(CONTAINER)
        yield url


@pytest.fixture
def object_store(azurite) -> str:
    """A fresh store URI in the container."""
    return f"az://{CONTAINER}/stores/{uuid.uuid4().hex[:8]}"


def test_location_parsing():
    loc = store_location("az://container/a/b")
    assert (
        isinstance(loc, RemotePath) and str(loc / "store.json") == "az://container/a/b/store.json"
    )
    assert str(store_location("abfs://c/p")) == "az://c/p"


def test_unknown_account_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    from clay_search.errors import StoreNotFoundError
    from clay_search.location import _filesystem

    _filesystem.cache_clear()
    with pytest.raises(StoreNotFoundError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        store_location(f"az://c/{time.time_ns()}").exists()


class TestAzure(ObjectStoreCases):
    """The object-store cases on Azurite's blob server."""

    scheme = "az"


def test_a_read_during_an_overwrite_sees_old_or_new_content(object_store):
    """pyarrow's Azure writer creates the blob empty when it opens it and fills it when it
    closes it: a reader in that window read an empty ``store.json`` (two writers creating one
    store). Every read must return a whole content, the old or the new."""
    assert_overwrites_read_whole(store_location(object_store) / "store.json")
