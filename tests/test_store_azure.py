"""Stores on Azure Blob Storage (``az://``): Microsoft's Azurite emulator on loopback.

The tests start ``azurite-blob`` (``npm install azurite``; found on PATH, in the repository's
``node_modules/.bin``, or where ``$CLAY_SEARCH_AZURITE`` points) on 127.0.0.1 and a free port,
point the Azure settings of the environment at it (``AZURE_STORAGE_USE_EMULATOR``,
``AZURITE_BLOB_STORAGE_URL``, the emulator's well-known account), and ingest, search and resume
in ``az://CONTAINER/PREFIX`` stores. They skip with a reason where Azurite is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from gated_embedder import SCRIPT, table_rows, wait_for

from clay_search.ingest import run
from clay_search.location import RemotePath, store_location
from clay_search.store import check_index, connect, read_store_info

REPO = Path(__file__).resolve().parents[1]
CONTAINER = "clay-test"
# Azurite's documented development account (public, the same in every installation)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENV_KEYS = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURITE_BLOB_STORAGE_URL",
)


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
    proc = subprocess.Popen(
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update(
        AZURE_STORAGE_ACCOUNT_NAME=ACCOUNT,
        AZURE_STORAGE_ACCOUNT_KEY=KEY,
        AZURE_STORAGE_USE_EMULATOR="true",
        AZURITE_BLOB_STORAGE_URL=url,
    )
    try:

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
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def az_store(azurite) -> str:
    return f"az://{CONTAINER}/stores/{uuid.uuid4().hex[:8]}"


def test_location_parsing():
    loc = store_location("az://container/a/b")
    assert (
        isinstance(loc, RemotePath) and str(loc / "store.json") == "az://container/a/b/store.json"
    )
    assert str(store_location("abfs://c/p")) == "az://c/p"


def test_ingest_search_with_index(az_store, sample_dir, nano_embedder, tmp_path):
    """Table, store.json, manifests and the FAISS index live in the container; search there
    uses the index and answers as the same ingest into a local folder does."""
    report = run([sample_dir], az_store, embedder=nano_embedder, workers=1)
    assert report.ok and report.chips_written > 0
    assert report.index["count"] == report.chips_written
    root = store_location(az_store)
    names = {p.name for p in (root / "index").iterdir()}
    assert "index.json" in names and any(n.endswith(".faiss") for n in names), names
    manifest = json.loads(RemotePath(report.manifest).read_text())
    assert str(report.manifest).startswith("az://") and manifest["status"] == "done"
    assert read_store_info(az_store).model_id == nano_embedder.model_id

    store = connect(az_store)
    assert len(store) == report.chips_written
    ids = store.attrs.column("chip_id").to_pylist()
    res = store.search(ids[0], k=10)
    assert res.meta["index"] in ("flat", "ivf", "hnsw"), res.meta
    assert check_index(az_store).ok
    local = tmp_path / "local"
    run([sample_dir], local, embedder=nano_embedder, workers=1)
    lres = connect(local).search(ids[0], k=10)
    assert res.chip_ids == lres.chip_ids
    np.testing.assert_allclose(
        res.to_arrow().column("score").to_numpy(),
        lres.to_arrow().column("score").to_numpy(),
        atol=1e-5,
    )
    assert store.count(bbox=store.overview()["bbox"])["matched"] == len(store)


def test_rerun_adds_nothing(az_store, sample_dir, nano_embedder):
    src = sample_dir / "naip"
    first = run([src], az_store, embedder=nano_embedder)
    again = run([src], az_store, embedder=nano_embedder)
    assert again.chips_written == 0 and table_rows(az_store) == first.chips_written
    assert again.index["action"] == "unchanged"


AZ_KW = dict(chip_size=64, stride=16, batch_size=4, flush_rows=12, workers=1)
TESTS = Path(__file__).parent


def _ingest(src, store: str, weights, gate, free_chips: int) -> list[str]:
    args = (TESTS, src, store, weights, gate, free_chips)
    return [sys.executable, "-c", SCRIPT.format(kw=repr(AZ_KW)), *map(str, args)]


@pytest.mark.slow
def test_resume_after_kill(az_store, sample_dir, nano_weights, tmp_path):
    """A run SIGKILLed at a gate after its first commits, run again: every chip once."""
    src, gate = sample_dir / "naip", tmp_path / "gate"  # the gate is never opened
    waiting = gate.with_name(gate.name + ".waiting")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _ingest(src, az_store, nano_weights, gate, 24),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(
        lambda: waiting.exists() and table_rows(az_store) >= 12, "the first commits", proc=proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 12 <= table_rows(az_store) < 338
    subprocess.run(
        _ingest(src, az_store, nano_weights, gate, 10**9), env=env, check=True, capture_output=True
    )
    store = connect(az_store)
    ids = store.attrs.column("chip_id").to_pylist()
    assert len(ids) == 338 and len(set(ids)) == 338
    assert store.search(ids[0], k=5).meta["index"] != "exact"


def test_unknown_account_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    from clay_search.errors import StoreNotFoundError
    from clay_search.location import _filesystem

    _filesystem.cache_clear()
    with pytest.raises(StoreNotFoundError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        store_location(f"az://c/{time.time_ns()}").exists()
